"""search_runs: the filter grammar, order_by and paging, checked against an oracle in Python.

A module fixture logs a small, varied set of runs; each filter below comes with a Python
predicate that states what it means (MLflow's semantics: a clause on a key the run lacks is
false, `!=` included; LIKE is case-sensitive, ILIKE is not; `%`/`_` are wildcards), and the
server's answer must equal the runs the predicate selects, in MLflow's default order.
"""

from __future__ import annotations

import functools
import math
import re
import uuid
from dataclasses import dataclass, field

import mlflow
import pytest
from helpers import all_pages, mlflow_error
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.tracking import MlflowClient

BASE_T = 1_650_000_000_000  # start times BASE_T + i * 1000 make the default order deterministic


@dataclass
class R:
    name: str
    status: str
    metrics: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    start_time: int = 0
    run_id: str = ""


# name, status, metrics, params, tags
SPEC = [
    ("alpha", "FINISHED", {"acc": 0.9, "loss": 0.3}, {"lr": "0.1", "model": "rf"}, {"team": "vision"}),
    ("Alpha-2", "FINISHED", {"acc": 0.5, "loss": 0.7}, {"lr": "0.01", "model": "RF"}, {"team": "nlp"}),
    ("beta", "FAILED", {"acc": 0.2, "loss": 1.5}, {"model": "svm"}, {"team": "vision"}),
    ("gamma", "RUNNING", {"loss": 0.9}, {"lr": "0.1", "model": "rf"}, {}),
    ("delta", "KILLED", {"acc": 0.7, "loss": 0.1}, {"lr": "0.001"}, {"team": "Vision"}),
    ("run-5", "FINISHED", {"acc": 0.95}, {"model": "rf-large"}, {"team": "nlp", "note": "50% off"}),
    ("run-6", "FINISHED", {"acc": 0.5, "loss": 0.5}, {"lr": "0.01", "model": "svm"}, {"team": "vision"}),
    ("run_7", "FINISHED", {"acc": -1.0, "loss": 2.0}, {"lr": "0.1", "model": "lin_reg"}, {}),
    ("eps", "SCHEDULED", {"acc": 0.0, "loss": 0.0}, {"lr": "1e-3", "model": "linXreg"}, {"team": "ops"}),
]


class Data:
    def __init__(self, client: MlflowClient, experiment_id: str, runs: list[R]):
        self.client = client
        self.experiment_id = experiment_id
        self.runs = runs

    def by_name(self, name) -> R:
        return next(r for r in self.runs if r.name == name)

    def default_order(self, runs):
        return sorted(runs, key=lambda r: -r.start_time)


@pytest.fixture(scope="module")
def data(server) -> Data:
    client = MlflowClient(server.url)
    exp_id = client.create_experiment(f"search-{uuid.uuid4().hex}")
    runs = []
    for i, (name, status, metrics, params, tags) in enumerate(SPEC):
        start = BASE_T + i * 1000
        run = client.create_run(exp_id, start_time=start, run_name=name)
        run_id = run.info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, start + 10, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        if status in ("FINISHED", "FAILED", "KILLED"):
            client.set_terminated(run_id, status=status, end_time=start + 500)
        elif status != "RUNNING":
            client.update_run(run_id, status=status)
        runs.append(R(name, status, dict(metrics), dict(params),
                      {**tags, "mlflow.runName": name}, start, run_id))
    return Data(client, exp_id, runs)


def like(pattern: str, value: str | None, ci: bool = False) -> bool:
    """SQL LIKE: % any run, _ one character; ILIKE when ci."""
    if value is None:
        return False
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.DOTALL | (re.IGNORECASE if ci else 0)) is not None


def metric(r, k):
    return r.metrics.get(k)


def has(v):
    return v is not None


# (id, filter template, predicate). Templates may use {ids[name]} and {t0}.
FILTERS = [
    ("metric-gt", "metrics.acc > 0.5", lambda r: has(metric(r, "acc")) and metric(r, "acc") > 0.5),
    ("metric-ge-and-lt", "metrics.acc >= 0.5 AND metrics.loss < 1",
     lambda r: has(metric(r, "acc")) and metric(r, "acc") >= 0.5 and has(metric(r, "loss"))
     and metric(r, "loss") < 1),
    ("metric-eq", "metrics.loss = 0.5", lambda r: metric(r, "loss") == 0.5),
    ("metric-ne-skips-missing", "metrics.acc != 0.5",
     lambda r: has(metric(r, "acc")) and metric(r, "acc") != 0.5),
    ("metric-le-negative", "metrics.acc <= -1", lambda r: has(metric(r, "acc")) and metric(r, "acc") <= -1),
    ("metric-alias-prefix", "metric.acc > 0.8", lambda r: has(metric(r, "acc")) and metric(r, "acc") > 0.8),
    ("metric-eq-zero", "metrics.loss = 0", lambda r: metric(r, "loss") == 0.0),
    ("param-eq", "params.model = 'rf'", lambda r: r.params.get("model") == "rf"),
    ("param-ne-skips-missing", "params.model != 'rf'",
     lambda r: "model" in r.params and r.params["model"] != "rf"),
    ("param-like-case-sensitive", "params.model LIKE 'rf%'", lambda r: like("rf%", r.params.get("model"))),
    ("param-ilike", "params.model ILIKE 'rf%'", lambda r: like("rf%", r.params.get("model"), ci=True)),
    ("param-like-underscore-wildcard", "params.model LIKE 'lin_reg'",
     lambda r: like("lin_reg", r.params.get("model"))),
    ("param-is-null", "params.lr IS NULL", lambda r: "lr" not in r.params),
    ("param-is-not-null-and-ne", "params.lr IS NOT NULL AND params.lr != '0.1'",
     lambda r: "lr" in r.params and r.params["lr"] != "0.1"),
    ("param-alias-and-double-quoted-key", 'param."lr" = \'0.01\'', lambda r: r.params.get("lr") == "0.01"),
    ("param-contradiction", "params.lr = '0.1' AND params.lr = '0.01'", lambda r: False),
    ("tag-eq", "tags.team = 'vision'", lambda r: r.tags.get("team") == "vision"),
    ("tag-ilike", "tags.team ILIKE 'VISION'", lambda r: like("VISION", r.tags.get("team"), ci=True)),
    ("tag-like-prefix", "tags.note LIKE '50%'",
     lambda r: like("50%", r.tags.get("note"))),
    ("tag-is-null", "tags.team IS NULL", lambda r: "team" not in r.tags),
    ("tag-backquoted-runname", "tags.`mlflow.runName` = 'beta'",
     lambda r: r.tags["mlflow.runName"] == "beta"),
    ("tag-runname-ne", "tag.`mlflow.runName` != 'beta'", lambda r: r.tags["mlflow.runName"] != "beta"),
    ("attr-status-eq", "attributes.status = 'FAILED'", lambda r: r.status == "FAILED"),
    ("attr-status-ne", "attributes.status != 'FINISHED'", lambda r: r.status != "FINISHED"),
    ("attr-run-name-eq", "attributes.run_name = 'alpha'", lambda r: r.name == "alpha"),
    ("attr-run-name-like", "attributes.run_name LIKE 'run%'", lambda r: like("run%", r.name)),
    ("attr-run-name-like-underscore", "attributes.run_name LIKE 'run_5'", lambda r: like("run_5", r.name)),
    ("attr-run-name-ilike-no-prefix", "run_name ILIKE 'alpha%'", lambda r: like("alpha%", r.name, ci=True)),
    ("attr-run-id-in", "attributes.run_id IN ('{ids[alpha]}', '{ids[gamma]}')",
     lambda r: r.name in ("alpha", "gamma")),
    ("attr-run-id-not-in", "attributes.run_id NOT IN ('{ids[alpha]}', '{ids[gamma]}')",
     lambda r: r.name not in ("alpha", "gamma")),
    ("attr-run-id-eq", "attributes.run_id = '{ids[beta]}'", lambda r: r.name == "beta"),
    ("attr-start-time-gt", "attributes.start_time > {t4}", lambda r: r.start_time > BASE_T + 4000),
    ("attr-start-time-range", "attributes.start_time >= {t2} AND attributes.start_time < {t5}",
     lambda r: BASE_T + 2000 <= r.start_time < BASE_T + 5000),
    ("mixed-lowercase-and", "metrics.acc > 0.4 and params.model = 'rf' and tags.team = 'vision'",
     lambda r: has(metric(r, "acc")) and metric(r, "acc") > 0.4 and r.params.get("model") == "rf"
     and r.tags.get("team") == "vision"),
]


@pytest.mark.parametrize("flt,pred", [(f, p) for _, f, p in FILTERS], ids=[i for i, _, _ in FILTERS])
def test_search_runs_filter(data, client, flt, pred):
    flt = flt.format(ids={r.name: r.run_id for r in data.runs},
                     t2=BASE_T + 2000, t4=BASE_T + 4000, t5=BASE_T + 5000)
    expected = [r.name for r in data.default_order(r for r in data.runs if pred(r))]
    found = client.search_runs([data.experiment_id], filter_string=flt)
    by_id = {r.run_id: r.name for r in data.runs}
    assert [by_id[r.info.run_id] for r in found] == expected, flt


def test_filters_select_something(data):
    """Guard against a data set that makes the filter tests vacuous."""
    selected = [sum(1 for r in data.runs if p(r)) for _, _, p in FILTERS]
    assert sum(1 for n in selected if 0 < n < len(data.runs)) >= 20


def test_search_results_carry_full_runs(data, client):
    [found] = client.search_runs([data.experiment_id], "attributes.run_name = 'alpha'")
    expected = data.by_name("alpha")
    assert found.info.run_id == expected.run_id
    assert found.info.status == "FINISHED"
    assert found.info.start_time == expected.start_time
    assert found.info.end_time == expected.start_time + 500
    assert found.data.metrics == expected.metrics
    assert found.data.params == expected.params
    tags = found.data.tags
    assert {k: tags[k] for k in expected.tags} == expected.tags


def _cmp_value(a, b, ascending):
    # MLflow: rows lacking the key sort last in both directions
    if a is None and b is None:
        return 0
    if a is None:
        return 1
    if b is None:
        return -1
    if a == b:
        return 0
    return (-1 if a < b else 1) * (1 if ascending else -1)


def _field(r: R, key: str):
    entity, _, name = key.partition(".")
    if entity == "metrics":
        return r.metrics.get(name)
    if entity == "params":
        return r.params.get(name)
    if entity == "tags":
        return r.tags.get(name)
    assert entity == "attributes", key
    return {"start_time": r.start_time, "run_name": r.name, "status": r.status}[name]


def oracle_order(runs, order_by):
    keys = []
    for clause in order_by:
        parts = clause.split()
        keys.append((parts[0], not (len(parts) > 1 and parts[1].upper() == "DESC")))

    def cmp(a, b):
        for key, ascending in keys:
            c = _cmp_value(_field(a, key), _field(b, key), ascending)
            if c:
                return c
        return _cmp_value(a.start_time, b.start_time, False)  # MLflow's tie-breaker

    return sorted(runs, key=functools.cmp_to_key(cmp))


ORDERS = [
    ["metrics.acc DESC"],
    ["metrics.acc ASC"],
    ["metrics.loss"],
    ["params.model ASC", "metrics.loss DESC"],
    ["params.lr DESC", "attributes.run_name ASC"],
    ["tags.team DESC"],
    ["tags.team ASC", "metrics.acc ASC"],
    ["attributes.start_time ASC"],
    ["attributes.run_name DESC"],
    ["attributes.status ASC", "metrics.acc DESC"],
]


@pytest.mark.parametrize("order_by", ORDERS, ids=[",".join(o) for o in ORDERS])
def test_search_runs_order_by(data, client, order_by):
    expected = [r.name for r in oracle_order(data.runs, order_by)]
    found = client.search_runs([data.experiment_id], order_by=order_by)
    by_id = {r.run_id: r.name for r in data.runs}
    assert [by_id[r.info.run_id] for r in found] == expected


def test_search_runs_default_order_is_start_time_desc(data, client):
    found = client.search_runs([data.experiment_id])
    assert [r.info.run_id for r in found] == [r.run_id for r in data.default_order(data.runs)]


def test_search_runs_filter_with_order_and_max_results(data, client):
    found = client.search_runs([data.experiment_id], "metrics.acc >= 0", order_by=["metrics.acc DESC"],
                               max_results=3)
    expected = oracle_order([r for r in data.runs if has(metric(r, "acc")) and metric(r, "acc") >= 0],
                            ["metrics.acc DESC"])
    assert [r.info.run_id for r in found] == [r.run_id for r in expected[:3]]
    assert found.token  # more rows exist


def test_fluent_search_runs_dataframe(data, tracking_uri):
    df = mlflow.search_runs(experiment_ids=[data.experiment_id], filter_string="params.model = 'rf'",
                            order_by=["attributes.start_time ASC"])
    expected = [r for r in sorted(data.runs, key=lambda r: r.start_time) if r.params.get("model") == "rf"]
    assert list(df["run_id"]) == [r.run_id for r in expected]
    assert list(df["params.model"]) == ["rf"] * len(expected)
    assert list(df["tags.mlflow.runName"]) == [r.name for r in expected]
    assert list(df["status"]) == [r.status for r in expected]


def test_search_runs_several_experiments(client, unique_name):
    a = client.create_experiment(unique_name + "-a")
    b = client.create_experiment(unique_name + "-b")
    ra = client.create_run(a, start_time=BASE_T).info.run_id
    rb = client.create_run(b, start_time=BASE_T + 1).info.run_id
    client.log_param(ra, "p", "x")
    client.log_param(rb, "p", "x")
    found = client.search_runs([a, b], "params.p = 'x'")
    assert [r.info.run_id for r in found] == [rb, ra]
    assert {r.info.experiment_id for r in found} == {a, b}


# --- NaN and missing values in order_by ---------------------------------------------------------

NAN_CASES = {"one": 1.0, "nan": float("nan"), "three": 3.0, "missing": None, "neg": -2.0,
             "inf": float("inf")}


def _nan_runs(client, experiment_id):
    """One run per NAN_CASES entry with metric v (absent for "missing"); {run_id: name}."""
    ids = {}
    for i, (name, v) in enumerate(NAN_CASES.items()):
        run_id = client.create_run(experiment_id, start_time=BASE_T + i, run_name=name).info.run_id
        ids[run_id] = name
        client.log_metric(run_id, "other", 0.0, timestamp=BASE_T, step=0)
        if v is not None:
            client.log_metric(run_id, "v", v, timestamp=BASE_T, step=0)
    return ids


def test_order_by_metric_nan_and_missing_last(client, experiment_id):
    ids = _nan_runs(client, experiment_id)

    def order(direction):
        found = client.search_runs([experiment_id], order_by=[f"metrics.v {direction}"])
        return [ids[r.info.run_id] for r in found]

    # NaN sorts after every number and before runs lacking the metric, in both directions
    # (MLflow orders by CASE is_nan -> 1, missing -> 2, else 0, then the value)
    assert (order("ASC"), order("DESC")) == (
        ["neg", "one", "three", "inf", "nan", "missing"],
        ["inf", "three", "one", "neg", "nan", "missing"],
    )


def test_filter_on_nan_metric(client, experiment_id):
    ids = _nan_runs(client, experiment_id)

    def names(flt):
        return sorted(ids[r.info.run_id] for r in client.search_runs([experiment_id], flt))

    # NaN compares like IEEE NaN: only != matches it; a missing metric matches nothing
    assert names("metrics.v != 1") == sorted(["nan", "three", "neg", "inf"])
    assert names("metrics.v < 100") == sorted(["one", "neg", "three"])
    assert names("metrics.v >= 0") == sorted(["one", "three", "inf"])
    assert names("metrics.v = 0") == []


# --- paging past 100 runs -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def many_runs(server):
    client = MlflowClient(server.url)
    exp_id = client.create_experiment(f"paging-{uuid.uuid4().hex}")
    run_ids = []
    for i in range(150):
        run_id = client.create_run(exp_id, start_time=BASE_T + i * 10).info.run_id
        client.log_metric(run_id, "bucket", float(i % 7), timestamp=BASE_T, step=0)
        run_ids.append(run_id)
    return exp_id, run_ids


@pytest.mark.parametrize("page_size,sizes", [(40, [40, 40, 40, 30]), (50, [50, 50, 50]),
                                             (150, [150]), (1000, [150])])
def test_paging_default_order(many_runs, client, page_size, sizes):
    exp_id, run_ids = many_runs

    def fetch(max_results, page_token):
        return client.search_runs([exp_id], max_results=max_results, page_token=page_token)

    pages = all_pages(fetch, page_size)
    assert [len(p) for p in pages] == sizes
    assert all(p.token for p in pages[:-1])
    assert not pages[-1].token
    seen = [r.info.run_id for p in pages for r in p]
    assert seen == run_ids[::-1]  # start_time DESC: newest first, none missing, no duplicates


def test_paging_with_ties_is_stable(many_runs, client):
    exp_id, run_ids = many_runs
    start = {rid: BASE_T + i * 10 for i, rid in enumerate(run_ids)}
    bucket = {rid: float(i % 7) for i, rid in enumerate(run_ids)}

    def fetch(max_results, page_token):
        return client.search_runs([exp_id], order_by=["metrics.bucket ASC"],
                                  max_results=max_results, page_token=page_token)

    pages = all_pages(fetch, 40)
    seen = [r.info.run_id for p in pages for r in p]
    assert len(seen) == len(set(seen)) == 150
    assert seen == sorted(run_ids, key=lambda rid: (bucket[rid], -start[rid]))


def test_paging_with_filter(many_runs, client):
    exp_id, run_ids = many_runs

    def fetch(max_results, page_token):
        return client.search_runs([exp_id], "metrics.bucket >= 3", max_results=max_results,
                                  page_token=page_token)

    pages = all_pages(fetch, 25)
    expected = [rid for i, rid in enumerate(run_ids) if i % 7 >= 3][::-1]
    assert [r.info.run_id for p in pages for r in p] == expected
    assert [len(p) for p in pages][:-1] == [25] * (len(pages) - 1)
