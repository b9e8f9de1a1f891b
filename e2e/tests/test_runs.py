"""Runs through the real mlflow client: params, metrics, tags, names, batches, history, lifecycle."""

from __future__ import annotations

import math
import re
import sys

import mlflow
import pandas as pd
from helpers import mlflow_error, now_ms, tags_dict, user_tags
from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType

MAX_DOUBLE = sys.float_info.max  # SQL stores keep +-inf as +-1.7976931348623157e308


def test_fluent_run_with_params_metrics_tags(tracking_uri, client, unique_name):
    exp = mlflow.set_experiment(unique_name)
    before = now_ms()
    with mlflow.start_run(run_name="first-run") as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"optimizer": "adam", "layers": 3})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.75, "f1": 0.5}, step=2)
        mlflow.set_tag("team", "vision")
        mlflow.set_tags({"purpose": "e2e", "empty": ""})
        run_id = run.info.run_id
    after = now_ms()

    got = client.get_run(run_id)
    info = got.info
    assert re.fullmatch(r"[0-9a-f]{32}", info.run_id)
    assert info.experiment_id == exp.experiment_id
    assert info.run_name == "first-run"
    assert info.status == "FINISHED"
    assert info.lifecycle_stage == "active"
    assert before - 1000 <= info.start_time <= info.end_time <= after + 1000
    assert info.artifact_uri == f"{exp.artifact_location}/{run_id}/artifacts"

    assert got.data.params == {"lr": "0.01", "optimizer": "adam", "layers": "3"}
    assert got.data.metrics == {"loss": 0.2, "acc": 0.75, "f1": 0.5}
    tags = tags_dict(got.data)
    assert user_tags(tags) == {"team": "vision", "purpose": "e2e", "empty": ""}
    assert tags["mlflow.runName"] == "first-run"
    assert tags["mlflow.source.type"] == "LOCAL"
    assert "mlflow.user" in tags and "mlflow.source.name" in tags

    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (s, 1.0 / (s + 1)) for s in range(5)]


def test_create_run_explicit_fields(client, experiment_id):
    run = client.create_run(experiment_id, start_time=1_600_000_000_123, run_name="explicit",
                            tags={"k": "v", "mlflow.user": "someone"})
    info = client.get_run(run.info.run_id).info
    assert info.start_time == 1_600_000_000_123
    assert info.end_time is None
    assert info.status == "RUNNING"
    assert info.user_id == "someone"  # the client sends user_id taken from tag mlflow.user
    tags = tags_dict(client.get_run(run.info.run_id).data)
    assert tags["k"] == "v"
    assert tags["mlflow.runName"] == "explicit"


def test_run_name_generated_and_synced_with_tag(client, experiment_id):
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    got = client.get_run(run_id)
    generated = got.info.run_name
    assert generated, "the server invents a name when none is given"
    assert tags_dict(got.data)["mlflow.runName"] == generated

    client.update_run(run_id, name="renamed")
    got = client.get_run(run_id)
    assert got.info.run_name == "renamed"
    assert tags_dict(got.data)["mlflow.runName"] == "renamed"
    assert got.info.status == "RUNNING"

    client.set_tag(run_id, "mlflow.runName", "via-tag")
    got = client.get_run(run_id)
    assert got.info.run_name == "via-tag"
    assert tags_dict(got.data)["mlflow.runName"] == "via-tag"


def test_tags_set_overwrite_delete(client, experiment_id):
    run_id = client.create_run(experiment_id).info.run_id
    client.set_tag(run_id, "a", "1")
    client.set_tag(run_id, "b", "2")
    client.set_tag(run_id, "a", "one")
    client.delete_tag(run_id, "b")
    assert user_tags(tags_dict(client.get_run(run_id).data)) == {"a": "one"}
    with mlflow_error("RESOURCE_DOES_NOT_EXIST"):
        client.delete_tag(run_id, "b")


def test_log_batch_1000_metrics_one_request(client, experiment_id):
    run_id = client.create_run(experiment_id).info.run_id
    ts = now_ms()
    metrics = [Metric(f"m{i:04d}", i * 0.5 - 100.25, ts + i, i % 7) for i in range(1000)]
    client.log_batch(run_id, metrics=metrics)  # 1000 metrics: exactly one request
    data = client.get_run(run_id).data
    assert data.metrics == {m.key: m.value for m in metrics}
    for m in (metrics[0], metrics[499], metrics[999]):
        [h] = client.get_metric_history(run_id, m.key)
        assert (h.key, h.value, h.timestamp, h.step) == (m.key, m.value, m.timestamp, m.step)


def test_log_batch_history_params_tags(client, experiment_id):
    run_id = client.create_run(experiment_id).info.run_id
    ts = now_ms()
    points = [Metric("loss", 1000.0 - s, ts + s, s) for s in range(1000)]
    params = [Param(f"p{i:03d}", f"value-{i}") for i in range(100)]
    tags = [RunTag(f"t{i:03d}", f"tag-{i}") for i in range(100)]
    client.log_batch(run_id, metrics=points)
    client.log_batch(run_id, params=params, tags=tags)

    data = client.get_run(run_id).data
    assert data.metrics == {"loss": 1.0}  # latest = greatest step
    assert data.params == {p.key: p.value for p in params}
    assert user_tags(tags_dict(data)) == {t.key: t.value for t in tags}
    history = client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.timestamp, m.value) for m in history) == [
        (p.step, p.timestamp, p.value) for p in points]
    assert {m.key for m in history} == {"loss"}


def test_log_batch_mixed_through_client_splitting(client, experiment_id):
    """1000 metrics + 100 params + 100 tags: more than one request's worth; the client splits."""
    run_id = client.create_run(experiment_id).info.run_id
    ts = now_ms()
    metrics = [Metric(f"k{i}", float(i), ts, 0) for i in range(1000)]
    params = [Param(f"p{i}", str(i)) for i in range(100)]
    tags = [RunTag(f"t{i}", str(i)) for i in range(100)]
    client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
    data = client.get_run(run_id).data
    assert len(data.metrics) == 1000 and data.metrics["k999"] == 999.0
    assert data.params == {f"p{i}": str(i) for i in range(100)}
    assert user_tags(tags_dict(data)) == {f"t{i}": str(i) for i in range(100)}


def test_metric_history_values_steps_timestamps(client, experiment_id):
    run_id = client.create_run(experiment_id).info.run_id
    logged = [
        (0.5, 1_700_000_000_000, 0),
        (0.25, 1_700_000_000_500, 1),
        (0.125, 1_700_000_001_000, 1),   # same step twice: both kept
        (-3.0, 1_700_000_002_000, 10),
        (7.0, 1_700_000_000_100, -1),    # negative step, earlier timestamp, logged last
    ]
    for value, ts, step in logged:
        client.log_metric(run_id, "m", value, timestamp=ts, step=step)
    history = client.get_metric_history(run_id, "m")
    assert sorted((m.value, m.timestamp, m.step) for m in history) == sorted(logged)
    assert all(m.key == "m" for m in history)
    assert client.get_metric_history(run_id, "never-logged") == []


def test_latest_metric_is_max_step_timestamp_value(client, experiment_id):
    run_id = client.create_run(experiment_id).info.run_id
    # greater step wins over a later write
    client.log_metric(run_id, "a", 1.0, timestamp=1000, step=5)
    client.log_metric(run_id, "a", 9.0, timestamp=2000, step=3)
    # same step: greater timestamp wins over a greater value
    client.log_metric(run_id, "b", 5.0, timestamp=2000, step=1)
    client.log_metric(run_id, "b", 4.0, timestamp=3000, step=1)
    client.log_metric(run_id, "b", 6.0, timestamp=1000, step=1)
    # same step and timestamp: greater value wins, whatever the order of writes
    client.log_metric(run_id, "c", 2.0, timestamp=1000, step=0)
    client.log_metric(run_id, "c", 1.0, timestamp=1000, step=0)
    client.log_batch(run_id, metrics=[Metric("d", 1.0, 1000, 0), Metric("d", 3.0, 1000, 0),
                                      Metric("d", 2.0, 1000, 0)])
    assert client.get_run(run_id).data.metrics == {"a": 1.0, "b": 4.0, "c": 2.0, "d": 3.0}
    found = client.search_runs([experiment_id], "metrics.a = 1 AND metrics.b = 4")
    assert [r.info.run_id for r in found] == [run_id]


def test_nan_and_infinity_metrics(client, experiment_id):
    run_id = client.create_run(experiment_id).info.run_id
    client.log_metric(run_id, "nan", float("nan"), timestamp=1000, step=0)
    client.log_metric(run_id, "pinf", float("inf"), timestamp=1000, step=0)
    client.log_metric(run_id, "ninf", float("-inf"), timestamp=1000, step=0)
    client.log_batch(run_id, metrics=[Metric("bnan", float("nan"), 1000, 0),
                                      Metric("binf", float("inf"), 1000, 1)])
    m = client.get_run(run_id).data.metrics
    assert math.isnan(m["nan"]) and math.isnan(m["bnan"])
    # MLflow's SQL stores clamp infinities to the largest finite double
    assert m["pinf"] == MAX_DOUBLE and m["binf"] == MAX_DOUBLE
    assert m["ninf"] == -MAX_DOUBLE
    [h] = client.get_metric_history(run_id, "nan")
    assert math.isnan(h.value) and h.step == 0 and h.timestamp == 1000
    [h] = client.get_metric_history(run_id, "pinf")
    assert h.value == MAX_DOUBLE
    # a later step replaces a NaN as the latest value
    client.log_metric(run_id, "nan", 0.5, timestamp=1000, step=1)
    assert client.get_run(run_id).data.metrics["nan"] == 0.5


def test_set_terminated_and_update(client, experiment_id):
    run_id = client.create_run(experiment_id).info.run_id
    client.set_terminated(run_id, status="FAILED", end_time=1_700_000_123_456)
    info = client.get_run(run_id).info
    assert info.status == "FAILED"
    assert info.end_time == 1_700_000_123_456

    other = client.create_run(experiment_id).info.run_id
    before = now_ms()
    client.set_terminated(other)
    info = client.get_run(other).info
    assert info.status == RunStatus.to_string(RunStatus.FINISHED) == "FINISHED"
    assert before - 1000 <= info.end_time <= now_ms() + 1000

    # a terminated run still accepts writes
    client.log_param(run_id, "after", "end")
    client.log_metric(run_id, "after", 1.0)
    assert client.get_run(run_id).data.params == {"after": "end"}

    client.update_run(other, status="KILLED")
    assert client.get_run(other).info.status == "KILLED"


def test_fluent_end_run_status(tracking_uri, client, unique_name):
    mlflow.set_experiment(unique_name)
    run = mlflow.start_run()
    mlflow.end_run(status="KILLED")
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    try:
        with mlflow.start_run() as failing:
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert client.get_run(failing.info.run_id).info.status == "FAILED"


def test_delete_and_restore_run(client, experiment_id):
    keep = client.create_run(experiment_id).info.run_id
    gone = client.create_run(experiment_id).info.run_id
    client.delete_run(gone)
    assert client.get_run(gone).info.lifecycle_stage == "deleted"
    assert client.get_run(keep).info.lifecycle_stage == "active"

    def ids(view):
        return sorted(r.info.run_id for r in client.search_runs([experiment_id], run_view_type=view))

    assert ids(ViewType.ACTIVE_ONLY) == [keep]
    assert ids(ViewType.DELETED_ONLY) == [gone]
    assert ids(ViewType.ALL) == sorted([keep, gone])

    client.restore_run(gone)
    assert client.get_run(gone).info.lifecycle_stage == "active"
    assert ids(ViewType.ACTIVE_ONLY) == sorted([keep, gone])
    assert ids(ViewType.DELETED_ONLY) == []


def test_same_param_value_again_is_accepted(client, experiment_id):
    run_id = client.create_run(experiment_id).info.run_id
    client.log_param(run_id, "p", "v")
    client.log_param(run_id, "p", "v")
    client.log_batch(run_id, params=[Param("p", "v"), Param("q", "w")])
    assert client.get_run(run_id).data.params == {"p": "v", "q": "w"}


def test_log_input_datasets(tracking_uri, client, unique_name):
    mlflow.set_experiment(unique_name)
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    dataset = mlflow.data.from_pandas(df, source="/data/train.csv", name="train-set", targets="y")
    other = mlflow.data.from_pandas(df.head(2), source="/data/eval.csv", name="eval-set")
    with mlflow.start_run() as run:
        mlflow.log_input(dataset, context="training", tags={"split": "a"})
        mlflow.log_input(dataset, context="training", tags={"split": "a"})  # deduplicated
        mlflow.log_input(other, context="eval")
    run_id = run.info.run_id

    inputs = client.get_run(run_id).inputs.dataset_inputs
    by_name = {i.dataset.name: i for i in inputs}
    assert sorted(by_name) == ["eval-set", "train-set"]
    train = by_name["train-set"]
    assert train.dataset.digest == dataset.digest
    assert train.dataset.source_type == "local"
    assert "/data/train.csv" in train.dataset.source
    assert train.dataset.schema and '"x"' in train.dataset.schema
    assert train.dataset.profile and '"num_rows": 3' in train.dataset.profile
    assert {t.key: t.value for t in train.tags} == {"mlflow.data.context": "training",
                                                    "split": "a"}
    assert {t.key: t.value for t in by_name["eval-set"].tags} == {"mlflow.data.context": "eval"}

    exp_id = client.get_run(run_id).info.experiment_id
    for flt in ("datasets.name = 'train-set'", "datasets.context = 'eval'",
                f"datasets.digest = '{dataset.digest}'", "datasets.name IN ('x', 'eval-set')",
                "datasets.name LIKE 'train%'"):
        assert [r.info.run_id for r in client.search_runs([exp_id], flt)] == [run_id], flt
    assert client.search_runs([exp_id], "datasets.name = 'nope'") == []
