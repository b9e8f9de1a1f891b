"""The promotion history (issue #19) through the real mlflow client and ferroflow's own REST
API and CLI: a scripted sequence of alias moves, removals and stage transitions is listed back
in order with actor and path; `promotions/at` answers what held a target between moves;
`ferroflow rollback` moves an alias back and is recorded as a rollback; rename and delete keep
the history. (That nothing can edit the table, even through SQL, is shown by the store tests on
both backends: tests/store/promotions.rs.)
"""

from __future__ import annotations

import os
import subprocess

import pytest

pytestmark = pytest.mark.registry

PROMOTIONS = "/api/2.0/ferroflow/promotions"


@pytest.fixture(autouse=True)
def _ferroflow_only(server):
    if server.impl != "ferroflow":
        pytest.skip("the promotion history is ferroflow's own API")


def _history(api, name, **params):
    entries, token = [], None
    while True:
        query = {"name": name, "max_results": 3, **params}
        if token:
            query["page_token"] = token
        answer = api.get(PROMOTIONS, params=query)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        entries.extend(body.get("promotions", []))
        token = body.get("next_page_token")
        if not token:
            return entries


def _cli(server, *args):
    binary = os.environ["FERROFLOW_BIN"]
    return subprocess.run(
        [binary, *args, "--tracking-uri", server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _register(client, name, versions):
    client.create_registered_model(name)
    for i in range(versions):
        client.create_model_version(name, f"s3://bucket/{name}/{i}")


def test_a_scripted_sequence_is_listed_in_order_with_actor_and_path(client, api, server, unique_name):
    name = unique_name
    _register(client, name, 4)
    # 20 changes: alias sets and moves, a removal, stage transitions (one archiving another).
    script = [
        ("alias", "champion", 1),
        ("alias", "challenger", 2),
        ("alias", "champion", 2),
        ("alias", "challenger", 3),
        ("stage", "Staging", 2),
        ("stage", "Production", 2),
        ("alias", "champion", 3),
        ("delete", "challenger", None),
        ("alias", "challenger", 4),
        ("stage", "Staging", 3),
        ("stage", "Production", 3),  # archive_existing_versions: 2 goes to Archived
        ("alias", "champion", 4),
        ("alias", "champion", 1),
        ("alias", "canary", 4),
        ("delete", "canary", None),
        ("alias", "champion", 2),
        ("stage", "Staging", 4),
    ]
    for kind, target, version in script:
        if kind == "alias":
            client.set_registered_model_alias(name, target, version)
        elif kind == "delete":
            client.delete_registered_model_alias(name, target)
        else:
            client.transition_model_version_stage(
                name, str(version), target, archive_existing_versions=(target == "Production" and version == 3)
            )

    entries = _history(api, name)
    expected = []
    holders: dict[str, int] = {}
    stages: dict[int, str] = {}
    for kind, target, version in script:
        if kind == "alias":
            expected.append(("alias", target, holders.get(target), version))
            holders[target] = version
        elif kind == "delete":
            expected.append(("alias", target, holders.pop(target), None))
        else:
            expected.append(("stage", target, None, version))
            if target == "Production" and version == 3:
                expected.append(("stage", "Archived", None, 2))
            stages[version] = target
    got = [(e["target_type"], e["target"], e.get("from_version"), e.get("to_version")) for e in entries]
    assert got == expected
    assert len(entries) == 18
    assert all(e["actor"] == "anonymous" and e["path"] == "api" and e["allowed"] for e in entries)
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    # One target only; a stage in any case.
    champion = _history(api, name, target="champion")
    assert [e["to_version"] for e in champion] == [1, 2, 3, 4, 1, 2]
    staging = _history(api, name, target="staging", target_type="stage")
    assert [e["to_version"] for e in staging] == [2, 3, 4]

    # What held champion at 5 instants: each entry's own time (where the last entry of that
    # instant left it), and before the first.
    at = f"{PROMOTIONS}/at"
    answer = api.get(at, params={"name": name, "target": "champion", "time": entries[0]["timestamp"] - 1})
    assert answer.status_code == 200, answer.text
    assert answer.json()["versions"] == []
    for entry in champion[1:5]:
        last = [e for e in champion if e["timestamp"] <= entry["timestamp"]][-1]
        answer = api.get(at, params={"name": name, "target": "champion", "time": entry["timestamp"]})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"versions": [last["to_version"]], "promotion_id": last["id"]}
    production = api.get(
        at, params={"name": name, "target": "Production", "target_type": "stage", "time": "2999-01-01T00:00:00Z"}
    )
    assert production.json()["versions"] == [3]

    # The CLI prints the same history.
    printed = _cli(server, "promotions", name, "--target", "champion")
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "TIME", "MODEL"]
    assert len(lines) == 1 + 6
    assert "1 -> 2" in lines[-1] and "anonymous" in lines[-1] and "api" in lines[-1]


def test_rollback_moves_the_alias_back_and_is_recorded(client, api, server, unique_name):
    name = unique_name
    _register(client, name, 3)
    for version in (1, 3):
        client.set_registered_model_alias(name, "champion", version)
    rolled = _cli(server, "rollback", name, "champion")
    assert rolled.returncode == 0, rolled.stderr
    assert "from version 3 to 1" in rolled.stdout
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    last = _history(api, name)[-1]
    assert (last["from_version"], last["to_version"], last["rollback"]) == (3, 1, True)

    # Nothing held `challenger` before its only version: a clear error, nothing moves.
    client.set_registered_model_alias(name, "challenger", 2)
    refused = _cli(server, "rollback", name, "challenger")
    assert refused.returncode != 0
    assert "BAD_REQUEST" in refused.stderr and "no version that held it before" in refused.stderr
    # An alias that is not set: MLflow's answer for an unknown alias.
    answer = api.post(f"{PROMOTIONS}/rollback", json={"name": name, "alias": "nope"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert client.get_model_version_by_alias(name, "challenger").version == "2"


def test_rename_and_delete_keep_the_history(client, api, unique_name):
    old, new = unique_name, f"{unique_name}-renamed"
    _register(client, old, 2)
    client.set_registered_model_alias(old, "champion", 1)
    client.rename_registered_model(old, new)
    client.set_registered_model_alias(new, "champion", 2)
    renamed = _history(api, new)
    assert [(e["name"], e["to_version"]) for e in renamed] == [(old, 1), (new, 2)]
    client.delete_registered_model(new)
    assert _history(api, new) == renamed


def test_bad_requests_get_mlflow_errors(api, client, unique_name):
    client.create_registered_model(unique_name)
    for params, code in [
        ({}, "INVALID_PARAMETER_VALUE"),
        ({"name": unique_name, "target_type": "branch", "target": "x"}, "INVALID_PARAMETER_VALUE"),
        ({"name": unique_name, "target_type": "stage", "target": "Prod"}, "INVALID_PARAMETER_VALUE"),
        ({"name": unique_name, "max_results": 0}, "INVALID_PARAMETER_VALUE"),
        ({"name": unique_name, "page_token": "not-a-token"}, "INVALID_PARAMETER_VALUE"),
        ({"name": f"{unique_name}-never"}, "RESOURCE_DOES_NOT_EXIST"),
    ]:
        answer = api.get(PROMOTIONS, params=params)
        assert answer.status_code in (400, 404), (params, answer.text)
        assert answer.json()["error_code"] == code, (params, answer.text)
    answer = api.get(f"{PROMOTIONS}/at", params={"name": unique_name, "target": "champion", "time": "yesterday"})
    assert answer.status_code == 400
    assert "time" in answer.json()["message"]
