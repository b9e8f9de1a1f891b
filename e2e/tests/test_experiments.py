"""Experiments through the real mlflow client: create, get, search, rename, tags, delete/restore."""

from __future__ import annotations

import mlflow
from helpers import all_pages, mlflow_error, now_ms, tags_dict
from mlflow.entities import ViewType


def test_default_experiment_exists(client):
    exp = client.get_experiment("0")
    assert exp.experiment_id == "0"
    assert exp.name == "Default"
    assert exp.lifecycle_stage == "active"
    by_name = client.get_experiment_by_name("Default")
    assert by_name is not None and by_name.experiment_id == "0"


def test_fluent_run_without_experiment_lands_in_default(tracking_uri, client):
    with mlflow.start_run() as run:
        mlflow.log_param("where", "default")
    got = client.get_run(run.info.run_id)
    assert got.info.experiment_id == "0"
    assert got.data.params == {"where": "default"}


def test_create_and_get_experiment(client, unique_name):
    before = now_ms()
    exp_id = client.create_experiment(unique_name, tags={"team": "vision", "owner": "ada"})
    after = now_ms()
    assert isinstance(exp_id, str) and exp_id.isdigit() and exp_id != "0"

    exp = client.get_experiment(exp_id)
    assert exp.experiment_id == exp_id
    assert exp.name == unique_name
    assert exp.lifecycle_stage == "active"
    assert before - 1000 <= exp.creation_time <= after + 1000
    assert exp.last_update_time >= exp.creation_time
    assert tags_dict(exp) == {"team": "vision", "owner": "ada"}
    # proxied artifacts: the server hands out mlflow-artifacts: URIs keyed by experiment id
    assert exp.artifact_location == f"mlflow-artifacts:/{exp_id}"

    by_name = client.get_experiment_by_name(unique_name)
    assert by_name.experiment_id == exp_id
    assert by_name.name == unique_name
    assert tags_dict(by_name) == {"team": "vision", "owner": "ada"}


def test_get_experiment_by_missing_name_is_none(client, unique_name):
    assert client.get_experiment_by_name(unique_name + "-missing") is None


def test_set_experiment_creates_then_reuses(tracking_uri, client, unique_name):
    exp = mlflow.set_experiment(unique_name)
    assert client.get_experiment(exp.experiment_id).name == unique_name
    again = mlflow.set_experiment(unique_name)
    assert again.experiment_id == exp.experiment_id


def test_rename_experiment(client, unique_name):
    exp_id = client.create_experiment(unique_name)
    created = client.get_experiment(exp_id)
    new_name = unique_name + "-renamed"
    client.rename_experiment(exp_id, new_name)
    exp = client.get_experiment(exp_id)
    assert exp.name == new_name
    assert exp.last_update_time >= created.last_update_time
    assert client.get_experiment_by_name(new_name).experiment_id == exp_id
    assert client.get_experiment_by_name(unique_name) is None


def test_experiment_tags_set_overwrite_delete(client, experiment_id):
    client.set_experiment_tag(experiment_id, "stage", "dev")
    client.set_experiment_tag(experiment_id, "note", "x" * 5000)
    assert tags_dict(client.get_experiment(experiment_id)) == {"stage": "dev", "note": "x" * 5000}
    client.set_experiment_tag(experiment_id, "stage", "prod")
    assert tags_dict(client.get_experiment(experiment_id))["stage"] == "prod"
    client.delete_experiment_tag(experiment_id, "stage")
    assert tags_dict(client.get_experiment(experiment_id)) == {"note": "x" * 5000}


def test_delete_and_restore_experiment_with_runs(client, unique_name):
    exp_id = client.create_experiment(unique_name)
    runs = [client.create_run(exp_id, run_name=f"r{i}").info.run_id for i in range(3)]

    client.delete_experiment(exp_id)
    exp = client.get_experiment(exp_id)
    assert exp.lifecycle_stage == "deleted"
    # a deleted experiment is still found by name (the client relies on it)
    assert client.get_experiment_by_name(unique_name).lifecycle_stage == "deleted"
    for run_id in runs:
        assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    assert client.search_runs([exp_id]) == []
    deleted = client.search_runs([exp_id], run_view_type=ViewType.DELETED_ONLY)
    assert sorted(r.info.run_id for r in deleted) == sorted(runs)
    active_ids = {e.experiment_id for e in client.search_experiments(filter_string=f"name = '{unique_name}'")}
    assert exp_id not in active_ids

    client.restore_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "active"
    for run_id in runs:
        assert client.get_run(run_id).info.lifecycle_stage == "active"
    assert sorted(r.info.run_id for r in client.search_runs([exp_id])) == sorted(runs)


def _make_family(client, prefix, n=5):
    """n experiments named prefix-0..n-1, tagged by parity; returns their ids in creation order."""
    ids = []
    for i in range(n):
        ids.append(client.create_experiment(
            f"{prefix}-{i}", tags={"parity": "even" if i % 2 == 0 else "odd", "idx": str(i)}))
    return ids


def test_search_experiments_filter_and_order(client, unique_name):
    ids = _make_family(client, unique_name)
    names = [f"{unique_name}-{i}" for i in range(5)]

    found = client.search_experiments(filter_string=f"name LIKE '{unique_name}-%'",
                                      order_by=["name ASC"])
    assert [e.name for e in found] == names
    assert [e.experiment_id for e in found] == ids

    found = client.search_experiments(filter_string=f"name LIKE '{unique_name}-%'",
                                      order_by=["name DESC"])
    assert [e.name for e in found] == names[::-1]

    found = client.search_experiments(
        filter_string=f"attribute.name LIKE '{unique_name}-%' AND tags.parity = 'even'",
        order_by=["experiment_id DESC"])
    assert [e.name for e in found] == [names[4], names[2], names[0]]

    found = client.search_experiments(filter_string=f"name = '{names[3]}'")
    assert [e.experiment_id for e in found] == [ids[3]]
    assert tags_dict(found[0]) == {"parity": "odd", "idx": "3"}

    # ILIKE is case-insensitive, LIKE is not
    upper = unique_name.upper()
    assert client.search_experiments(filter_string=f"name LIKE '{upper}-%'") == []
    found = client.search_experiments(filter_string=f"name ILIKE '{upper}-%'")
    assert sorted(e.experiment_id for e in found) == sorted(ids)

    # default order: creation_time DESC, then experiment_id ASC
    found = client.search_experiments(filter_string=f"name LIKE '{unique_name}-%'")
    expected = sorted(found, key=lambda e: (-e.creation_time, int(e.experiment_id)))
    assert [e.experiment_id for e in found] == [e.experiment_id for e in expected]
    assert sorted(e.experiment_id for e in found) == sorted(ids)


def test_search_experiments_tag_filters(client, unique_name):
    ids = _make_family(client, unique_name)
    client.set_experiment_tag(ids[1], "extra", "Yes")
    base = f"name LIKE '{unique_name}-%'"

    def search(extra):
        return sorted(e.experiment_id for e in client.search_experiments(
            filter_string=f"{base} AND {extra}"))

    assert search("tags.parity != 'even'") == sorted([ids[1], ids[3]])
    assert search("tags.idx LIKE '%3'") == [ids[3]]
    assert search("tags.extra ILIKE 'yes'") == [ids[1]]
    assert search("tags.extra LIKE 'yes'") == []
    assert search("tags.extra IS NULL") == sorted(ids[:1] + ids[2:])
    assert search("tags.extra IS NOT NULL") == [ids[1]]


def test_search_experiments_paging(client, unique_name):
    ids = _make_family(client, unique_name, n=7)

    def fetch(max_results, page_token):
        return client.search_experiments(filter_string=f"name LIKE '{unique_name}-%'",
                                         order_by=["name ASC"], max_results=max_results,
                                         page_token=page_token)

    pages = all_pages(fetch, 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [e.experiment_id for p in pages for e in p] == ids
    assert pages[-1].token is None
    # exactly full last page: no token either
    pages = all_pages(fetch, 7)
    assert [len(p) for p in pages] == [7]
    pages = all_pages(fetch, 1)
    assert [e.experiment_id for p in pages for e in p] == ids


def test_search_experiments_view_type(client, unique_name):
    ids = _make_family(client, unique_name, n=3)
    client.delete_experiment(ids[1])
    flt = f"name LIKE '{unique_name}-%'"

    def search(view):
        return sorted(e.experiment_id for e in client.search_experiments(
            view_type=view, filter_string=flt))

    assert search(ViewType.ACTIVE_ONLY) == sorted([ids[0], ids[2]])
    assert search(ViewType.DELETED_ONLY) == [ids[1]]
    assert search(ViewType.ALL) == sorted(ids)
    deleted = client.search_experiments(view_type=ViewType.DELETED_ONLY, filter_string=flt)
    assert deleted[0].lifecycle_stage == "deleted"
