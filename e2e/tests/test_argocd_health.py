"""Argo CD health checks of ferroflow's custom resources (config/argocd/), run in a real Lua.

Every config/argocd/health/<group>/<Kind>/health.lua is run against every case of the
health_test.yaml beside it, in Argo CD's own test format (resource_customizations/ upstream):

    tests:
    - healthStatus: {status: Healthy, message: ...}
      inputPath: testdata/healthy_ready.yaml

The interpreter is Lua 5.1 from lupa, the dialect of the gopher-lua that Argo CD embeds, set up
the way Argo CD runs a script supplied through argocd-cm: the manifest in the global `obj`, only
the base and table libraries (no string library, not even as string methods, unless
resource.customizations.useOpenLibs is set), and the returned table read as {status, message}.

The scripts are generated (`make generate`) from config/argocd/lua/ and the condition reasons of
src/crd/condition.rs, which config/argocd/reasons.json publishes: the tests read the reasons
from there, and check every script against every reason.

These tests need no tracking server: they use none of conftest's fixtures, so they run once,
not once per backend store.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from lupa import lua51

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "config" / "argocd"
HEALTH = ARGOCD / "health"
SNIPPET = ARGOCD / "argocd-cm-health.yaml"
GROUP = "ferroflow.dev"
# The generator writes one folder per kind; src/crd/argocd.rs checks there is no other.
KINDS = tuple(sorted(p.name for p in (HEALTH / GROUP).iterdir() if p.is_dir()))
with open(ARGOCD / "reasons.json", encoding="utf-8") as _f:
    REASONS = {entry["name"]: entry["terminal"] for entry in json.load(_f)["reasons"]}
TERMINAL_REASONS = {name for name, terminal in REASONS.items() if terminal}
# Reasons the test data uses although no ferroflow kind reports them: a check must take a reason
# it does not know (from a newer operator) for a transient one.
UNLISTED_REASONS = {"WaitingForVersion", "Evicted"}
# What Argo CD accepts from a health script (anything else becomes Unknown with an error).
VALID_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


class _Loader(yaml.SafeLoader):
    """YAML as sigs.k8s.io/yaml reads a manifest: timestamps stay strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load_yaml(path: Path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def _script(kind: str) -> Path:
    return HEALTH / GROUP / kind / "health.lua"


def _cases() -> list[tuple[str, dict]]:
    cases = []
    for kind in KINDS:
        spec = _load_yaml(HEALTH / GROUP / kind / "health_test.yaml")
        for test in spec["tests"]:
            cases.append((kind, test))
    return cases


def _case_id(case) -> str:
    kind, test = case
    return f"{kind}/{Path(test['inputPath']).stem}"


# --- running a script the way Argo CD does -----------------------------------------------------

# Argo CD (util/lua/lua.go) opens only package, base, table and a restricted os library for
# scripts from argocd-cm. lupa opens them all: take away the rest, and the string methods.
_SANDBOX = """
getmetatable("").__index = nil
string, math, io, os, debug, coroutine = nil, nil, nil, nil, nil, nil
"""


def _new_lua():
    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    lua.execute(_SANDBOX)
    return lua


def _to_lua(lua, value):
    """Python data from a manifest as Lua values, like Argo CD's decodeValue."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if item is not None:
                table[key] = _to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = _to_lua(lua, item)
        return table
    if isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"unexpected {type(value).__name__} in manifest: {value!r}")


def run_health(script: str, manifest: dict) -> dict:
    """{status, message} as Argo CD would read them from the script's returned table."""
    lua = _new_lua()
    lua.globals().obj = _to_lua(lua, manifest)
    result = lua.execute(script)
    assert lua51.lua_type(result) == "table", f"health.lua returned {result!r}, not a table"
    keys = set(result.keys())
    assert keys <= {"status", "message"}, f"unexpected keys in the health table: {keys}"
    status = result["status"] or ""
    assert status in VALID_STATUSES, f"Argo CD rejects health status {status!r}"
    return {"status": status, "message": result["message"] or ""}


# --- every case of every health_test.yaml ------------------------------------------------------

@pytest.mark.parametrize("case", _cases(), ids=_case_id)
def test_health_case(case):
    kind, test = case
    manifest = _load_yaml(_script(kind).parent / test["inputPath"])
    got = run_health(_script(kind).read_text(encoding="utf-8"), manifest)
    expected = test["healthStatus"]
    assert got == {"status": expected["status"], "message": expected.get("message", "")}


# --- the test data itself ----------------------------------------------------------------------

def test_every_kind_has_a_script_and_tests():
    assert len(KINDS) == 6, KINDS
    assert sorted(p.name for p in HEALTH.iterdir()) == [GROUP]
    for kind in KINDS:
        folder = HEALTH / GROUP / kind
        assert sorted(p.name for p in folder.iterdir()) == ["health.lua", "health_test.yaml", "testdata"]
        tests = _load_yaml(folder / "health_test.yaml")["tests"]
        assert len(tests) >= 3, kind
        referenced = [t["inputPath"] for t in tests]
        assert len(referenced) == len(set(referenced)), f"{kind}: a test data file is used twice"
        present = sorted(f"testdata/{p.name}" for p in (folder / "testdata").iterdir())
        assert sorted(referenced) == present, f"{kind}: unreferenced or missing test data"
        for path in referenced:
            manifest = _load_yaml(folder / path)
            assert manifest["apiVersion"].split("/")[0] == GROUP, path
            assert manifest["kind"] == kind, path
            assert set(tests[referenced.index(path)]["healthStatus"]) == {"status", "message"}


def _situations(manifest: dict) -> set[str]:
    meta, status = manifest["metadata"], manifest.get("status")
    if meta.get("deletionTimestamp"):
        return {"deletion"}
    conditions = {c["type"]: c for c in (status or {}).get("conditions", [])}
    ready = conditions.get("Ready")
    if ready is None:
        return {"not yet reconciled"}
    observed = min(status.get("observedGeneration", meta["generation"]),
                   ready.get("observedGeneration", meta["generation"]))
    if observed < meta["generation"]:
        return {"generation lag"}
    if ready["status"] == "False":
        return {"terminal reason" if ready["reason"] in TERMINAL_REASONS else "non-terminal reason"}
    return set()


@pytest.mark.parametrize("kind", KINDS)
def test_cases_cover_the_shared_rules(kind):
    folder = HEALTH / GROUP / kind
    seen: set[str] = set()
    for test in _load_yaml(folder / "health_test.yaml")["tests"]:
        seen |= _situations(_load_yaml(folder / test["inputPath"]))
    assert seen >= {"deletion", "not yet reconciled", "generation lag", "terminal reason",
                    "non-terminal reason"}


def test_test_data_uses_the_published_reasons():
    """Every reason in the cases is one the operator can report, except the deliberately unknown."""
    assert UNLISTED_REASONS.isdisjoint(REASONS)
    for kind in KINDS:
        folder = HEALTH / GROUP / kind
        for path in sorted((folder / "testdata").iterdir()):
            status = _load_yaml(path).get("status") or {}
            reasons = {c["reason"] for c in status.get("conditions", [])}
            if "lastFailure" in status:
                reasons.add(status["lastFailure"]["reason"])
            unknown = reasons - set(REASONS) - UNLISTED_REASONS
            assert not unknown, f"{kind}/{path.name}: not in reasons.json: {sorted(unknown)}"


def _not_ready(kind: str, reason: str) -> dict:
    """A current, not stalled resource whose Ready=False carries `reason`."""
    status = {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "False", "reason": reason,
                        "message": f"because {reason}", "observedGeneration": 1}],
    }
    if kind == "ProjectRun":
        status["phase"] = "Running"
    return {"apiVersion": f"{GROUP}/v1alpha1", "kind": kind,
            "metadata": {"name": "x", "namespace": "ns", "generation": 1}, "status": status}


@pytest.mark.parametrize(("kind", "reason"), [(k, r) for k in KINDS for r in REASONS],
                         ids=lambda value: value)
def test_every_reason_is_judged_as_published(kind, reason):
    """A reason terminal in Rust is Degraded in every script, any other Progressing."""
    got = run_health(_script(kind).read_text(encoding="utf-8"), _not_ready(kind, reason))
    expected = "Degraded" if REASONS[reason] else "Progressing"
    assert got == {"status": expected, "message": f"because {reason}"}


def test_sandbox_has_no_string_library():
    """The harness is as strict as Argo CD: a script using string methods fails here too."""
    with pytest.raises(lua51.LuaError):
        run_health('return {status = ("healthy"):upper()}', {"metadata": {}})
    with pytest.raises(lua51.LuaError):
        run_health('return {status = string.format("%s", "Healthy")}', {"metadata": {}})
    assert run_health('return {status = "Healthy"}', {"metadata": {}}) == {
        "status": "Healthy", "message": ""}


# --- the argocd-cm snippet ---------------------------------------------------------------------

def test_argocd_cm_snippet_has_exactly_the_scripts():
    snippet = _load_yaml(SNIPPET)
    assert snippet["apiVersion"] == "v1"
    assert snippet["kind"] == "ConfigMap"
    assert snippet["metadata"]["name"] == "argocd-cm"
    expected = {
        f"resource.customizations.health.{GROUP}_{kind}": _script(kind).read_text(encoding="utf-8")
        for kind in KINDS
    }
    assert sorted(snippet["data"]) == sorted(expected)
    for key, script in expected.items():
        assert snippet["data"][key] == script, f"{key} differs from its health.lua: run generate.sh"


def test_argocd_cm_snippet_is_generated():
    result = subprocess.run(
        ["bash", str(ARGOCD / "generate.sh"), "--check"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
