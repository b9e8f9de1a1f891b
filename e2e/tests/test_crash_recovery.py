"""SIGKILL of the server under mixed load: nothing it acknowledged is lost, nothing is half-written.

One server per backend, on a store and an artifact folder that outlive it. Writers on separate
threads send log-batch (metrics + a param + a tag per request), single log-metric / log-param /
set-tag, model-version creates with an alias move, and artifact uploads, and record every
request the server answered 200. Once each writer has had a few writes acknowledged and one
upload is half sent, the server is killed with SIGKILL and started again on the same store;
this happens three times. Afterwards:

- every acknowledged write is in the store (metric points, params, tags, versions, artifacts);
- no point is stored twice, and every batch is whole or absent (its 100 points, its param and
  its tag together);
- every artifact file is complete with the content that was sent, or absent: the upload
  killed half-way left nothing, and the artifact folder holds no file the API does not know.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from conftest import (
    STATE_DIR,
    START_TIMEOUT_S,
    Server,
    _free_port,
    _impl,
    _PostgresDatabase,
    _server_command,
    _wait_healthy,
)

KILLS = 3
BATCH_POINTS = 100
# Each writer needs this many acknowledged writes in a round before the kill.
ACKS_BEFORE_KILL = 3
PROGRESS_DEADLINE_S = 120.0
UPLOAD_CHUNK = 1 << 20
UPLOAD_CHUNKS = 16
REQUEST_TIMEOUT_S = 30


def _chunk(seed: str, index: int) -> bytes:
    """Deterministic, incompressible-enough content: chunk `index` of the file named `seed`."""
    block = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return block * (UPLOAD_CHUNK // len(block))


def _file_digest(seed: str) -> str:
    digest = hashlib.sha256()
    for i in range(UPLOAD_CHUNKS):
        digest.update(_chunk(seed, i))
    return digest.hexdigest()


@dataclass
class Acks:
    """What the server acknowledged (answered 200), per kind of write."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    batches: list[tuple[str, int]] = field(default_factory=list)  # (run_id, batch index)
    attempted_batches: list[tuple[str, int]] = field(default_factory=list)
    points: list[tuple[str, str, int]] = field(default_factory=list)  # (run_id, key, step)
    params: list[tuple[str, str, str]] = field(default_factory=list)
    tags: list[tuple[str, str, str]] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)  # artifact paths acknowledged
    attempted_uploads: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, writer: str) -> None:
        with self.lock:
            self.counts[writer] = self.counts.get(writer, 0) + 1


class RestartableServer:
    """A server process that can be killed and started again on the same store and artifacts."""

    def __init__(self, request, backend: str, tmp_path: Path):
        self.impl, self.exe = _impl(request.config)
        self.backend = backend
        self.pg_db = None
        if backend == "sqlite":
            self.store_uri = f"sqlite:///{tmp_path / 'tracking.db'}"
        else:
            admin_url = os.environ.get("FERROFLOW_TEST_PG_URL")
            if not admin_url:
                pytest.skip("FERROFLOW_TEST_PG_URL is unset")
            self.pg_db = _PostgresDatabase(admin_url)
            self.store_uri = self.pg_db.url
        self.artifacts = tmp_path / "artifacts"
        self.artifacts.mkdir()
        self.workdir = tmp_path / "cwd"
        self.workdir.mkdir()
        logs = STATE_DIR / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{self.impl}-{backend}-crash.log"
        self.log_path.write_bytes(b"")
        self.port = _free_port()
        self.server: Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = _server_command(self.impl, self.exe, self.port, self.store_uri, str(self.artifacts))
        env = dict(os.environ, RUST_LOG="info")
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.workdir, env=env,
                                    start_new_session=True)
        self.server = Server(impl=self.impl, backend=self.backend, url=self.url,
                             log_path=self.log_path, proc=proc, artifacts=self.artifacts,
                             store_uri=self.store_uri)
        _wait_healthy(self.server, time.monotonic() + START_TIMEOUT_S)

    def kill(self) -> None:
        assert self.server is not None
        # The whole process group: MLflow's server (the reference run) has worker children.
        os.killpg(self.server.proc.pid, signal.SIGKILL)
        self.server.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.server is not None and self.server.proc.poll() is None:
            self.server.proc.terminate()
            try:
                self.server.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.pg_db is not None:
            self.pg_db.drop()


@pytest.fixture
def restartable(request, backend, tmp_path):
    srv = RestartableServer(request, backend, tmp_path)
    srv.start()
    yield srv
    srv.stop()


def _post(session: requests.Session, url: str, path: str, body: dict) -> requests.Response:
    return session.post(f"{url}/api/2.0/mlflow/{path}", json=body, timeout=REQUEST_TIMEOUT_S)


class ServerGone(Exception):
    """The server stopped answering (it was killed)."""


class Writers:
    """The load: one thread per kind of write, until the server goes away."""

    def __init__(self, url: str, acks: Acks, round_no: int, runs: dict[str, str], model: str):
        self.url = url
        self.acks = acks
        self.round_no = round_no
        self.runs = runs
        self.model = model
        self.upload_half_sent = threading.Event()
        self.killed = threading.Event()
        self.threads: list[threading.Thread] = []
        self.failures: list[BaseException] = []

    def _call(self, session: requests.Session, writer: str, path: str, body: dict) -> bool:
        """True when the server answered 200. Raises ServerGone once the server is gone."""
        try:
            r = _post(session, self.url, path, body)
        except requests.RequestException as e:
            raise ServerGone from e
        if r.status_code >= 500:
            with self.acks.lock:
                self.acks.server_errors.append(f"{path}: {r.status_code} {r.text[:200]}")
            return False
        assert r.status_code == 200, f"{path} {body} -> {r.status_code} {r.text}"
        self.acks.count(writer)
        return True

    def batch_writer(self, session: requests.Session) -> None:
        run_id = self.runs["batch"]
        batch = self.round_no * 1_000_000
        while not self.killed.is_set():
            batch += 1
            metrics = [{"key": "m", "value": float(step), "timestamp": step, "step": step}
                       for step in range(batch * BATCH_POINTS, (batch + 1) * BATCH_POINTS)]
            body = {"run_id": run_id, "metrics": metrics,
                    "params": [{"key": f"p{batch}", "value": str(batch)}],
                    "tags": [{"key": f"t{batch}", "value": str(batch)}]}
            with self.acks.lock:
                self.acks.attempted_batches.append((run_id, batch))
            if self._call(session, "batch", "runs/log-batch", body):
                with self.acks.lock:
                    self.acks.batches.append((run_id, batch))

    def single_writer(self, session: requests.Session) -> None:
        run_id = self.runs["single"]
        i = self.round_no * 1_000_000
        while not self.killed.is_set():
            i += 1
            if self._call(session, "single", "runs/log-metric",
                          {"run_id": run_id, "key": "s", "value": float(i), "timestamp": i, "step": i}):
                with self.acks.lock:
                    self.acks.points.append((run_id, "s", i))
            if self._call(session, "single", "runs/log-parameter",
                          {"run_id": run_id, "key": f"sp{i}", "value": str(i)}):
                with self.acks.lock:
                    self.acks.params.append((run_id, f"sp{i}", str(i)))
            if self._call(session, "single", "runs/set-tag",
                          {"run_id": run_id, "key": f"st{i}", "value": str(i)}):
                with self.acks.lock:
                    self.acks.tags.append((run_id, f"st{i}", str(i)))

    def registry_writer(self, session: requests.Session) -> None:
        run_id = self.runs["single"]
        while not self.killed.is_set():
            try:
                r = _post(session, self.url, "model-versions/create",
                          {"name": self.model, "source": f"runs:/{run_id}/model", "run_id": run_id})
            except requests.RequestException as e:
                raise ServerGone from e
            if r.status_code >= 500:
                with self.acks.lock:
                    self.acks.server_errors.append(f"model-versions/create: {r.status_code} {r.text[:200]}")
                continue
            assert r.status_code == 200, r.text
            version = r.json()["model_version"]["version"]
            with self.acks.lock:
                self.acks.versions.append(version)
            self.acks.count("registry")
            self._call(session, "registry", "registered-models/alias",
                       {"name": self.model, "alias": "champion", "version": version})

    def upload_writer(self, session: requests.Session) -> None:
        n = 0
        # Whole uploads first, until the others have made progress; then one that stops half-way
        # and stays open until the kill.
        while not self.killed.is_set():
            n += 1
            path = f"crash/round{self.round_no}/file{n}.bin"
            half_way = n > ACKS_BEFORE_KILL
            with self.acks.lock:
                self.acks.attempted_uploads.append(path)

            def body(seed=path, half_way=half_way):
                for i in range(UPLOAD_CHUNKS):
                    if half_way and i == UPLOAD_CHUNKS // 2:
                        self.upload_half_sent.set()
                        self.killed.wait(PROGRESS_DEADLINE_S)
                    yield _chunk(seed, i)

            try:
                r = session.put(f"{self.url}/api/2.0/mlflow-artifacts/artifacts/{path}",
                                data=body(), timeout=REQUEST_TIMEOUT_S)
            except requests.RequestException as e:
                raise ServerGone from e
            if r.status_code >= 500:
                with self.acks.lock:
                    self.acks.server_errors.append(f"PUT {path}: {r.status_code} {r.text[:200]}")
                continue
            assert r.status_code == 200, f"PUT {path} -> {r.status_code} {r.text}"
            with self.acks.lock:
                self.acks.uploads.append(path)
            self.acks.count("upload")

    def start(self) -> None:
        def run(target):
            # Each writer ends when its connection fails: the server was killed.
            try:
                target(requests.Session())
            except ServerGone:
                pass
            except BaseException as e:  # reported by join(): a thread's assertion is the test's
                self.failures.append(e)

        for target in (self.batch_writer, self.batch_writer, self.single_writer,
                       self.registry_writer, self.upload_writer):
            t = threading.Thread(target=run, args=(target,), daemon=True)
            t.start()
            self.threads.append(t)

    def wait_for_progress(self) -> None:
        deadline = time.monotonic() + PROGRESS_DEADLINE_S
        writers = ("batch", "single", "registry", "upload")
        while True:
            with self.acks.lock:
                counts = dict(self.acks.counts)
                errors = list(self.acks.server_errors)
            assert not errors, f"5xx under load: {errors[:5]}"
            if self.failures:
                raise self.failures[0]
            if all(counts.get(w, 0) >= ACKS_BEFORE_KILL for w in writers) and self.upload_half_sent.is_set():
                return
            assert time.monotonic() < deadline, f"no progress before the kill: {counts}"
            time.sleep(0.05)

    def join(self) -> None:
        self.killed.set()
        for t in self.threads:
            t.join(timeout=REQUEST_TIMEOUT_S + 10)
            assert not t.is_alive(), "a writer did not stop after the kill"
        if self.failures:
            raise self.failures[0]


def _metric_history(url: str, run_id: str, key: str) -> list[dict]:
    points, token = [], None
    while True:
        params = {"run_id": run_id, "metric_key": key, "max_results": 25000}
        if token:
            params["page_token"] = token
        r = requests.get(f"{url}/api/2.0/mlflow/metrics/get-history", params=params, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        points += body.get("metrics", [])
        token = body.get("next_page_token")
        if not token:
            return points


def _run_data(url: str, run_id: str) -> tuple[dict, dict]:
    r = requests.get(f"{url}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=60)
    assert r.status_code == 200, r.text
    data = r.json()["run"]["data"]
    params = {p["key"]: p["value"] for p in data.get("params", [])}
    tags = {t["key"]: t["value"] for t in data.get("tags", [])}
    return params, tags


def test_sigkill_under_mixed_load_loses_no_acknowledged_write(restartable):
    url = restartable.url
    r = _post(requests.Session(), url, "experiments/create", {"name": f"crash-{uuid.uuid4().hex[:8]}"})
    assert r.status_code == 200, r.text
    experiment_id = r.json()["experiment_id"]
    runs = {}
    for role in ("batch", "single"):
        r = _post(requests.Session(), url, "runs/create", {"experiment_id": experiment_id, "start_time": 1})
        assert r.status_code == 200, r.text
        runs[role] = r.json()["run"]["info"]["run_id"]
    model = f"crash-model-{uuid.uuid4().hex[:8]}"
    assert _post(requests.Session(), url, "registered-models/create", {"name": model}).status_code == 200

    acks = Acks()
    for round_no in range(1, KILLS + 1):
        writers = Writers(url, acks, round_no, runs, model)
        writers.start()
        writers.wait_for_progress()
        restartable.kill()
        writers.join()
        restartable.start()

    assert not acks.server_errors, f"5xx under load: {acks.server_errors[:5]}"

    # Metric points: every acknowledged batch whole, every batch whole or absent, none twice.
    history = _metric_history(url, runs["batch"], "m")
    steps = [int(p["step"]) for p in history]
    assert len(steps) == len(set(steps)), "a metric point is stored twice"
    stored_steps = set(steps)
    batch_params, batch_tags = _run_data(url, runs["batch"])
    partial = []
    for _, batch in acks.attempted_batches:
        present = sum(1 for s in range(batch * BATCH_POINTS, (batch + 1) * BATCH_POINTS)
                      if s in stored_steps)
        param_present = batch_params.get(f"p{batch}") == str(batch)
        tag_present = batch_tags.get(f"t{batch}") == str(batch)
        whole = present == BATCH_POINTS
        if present not in (0, BATCH_POINTS) or param_present != whole or tag_present != whole:
            partial.append((batch, present, param_present, tag_present))
    assert not partial, f"half-written batches (batch, points, param, tag): {partial[:5]}"
    lost = [b for _, b in acks.batches
            if not all(s in stored_steps for s in range(b * BATCH_POINTS, (b + 1) * BATCH_POINTS))]
    assert not lost, f"acknowledged batches lost: {lost[:5]} of {len(acks.batches)}"

    single_steps = [int(p["step"]) for p in _metric_history(url, runs["single"], "s")]
    assert len(single_steps) == len(set(single_steps)), "a single metric point is stored twice"
    lost_points = [s for _, _, s in acks.points if s not in set(single_steps)]
    assert not lost_points, f"acknowledged log-metric points lost: {lost_points[:5]}"
    single_params, single_tags = _run_data(url, runs["single"])
    lost_params = [k for _, k, v in acks.params if single_params.get(k) != v]
    lost_tags = [k for _, k, v in acks.tags if single_tags.get(k) != v]
    assert not lost_params and not lost_tags, (lost_params[:5], lost_tags[:5])

    # Registry: every acknowledged version exists, numbers unique and contiguous from 1.
    r = requests.get(f"{url}/api/2.0/mlflow/model-versions/search",
                     params={"filter": f"name='{model}'", "max_results": 10000}, timeout=60)
    assert r.status_code == 200, r.text
    versions = sorted(int(v["version"]) for v in r.json().get("model_versions", []))
    assert versions == list(range(1, len(versions) + 1)), versions
    assert set(int(v) for v in acks.versions) <= set(versions)
    r = requests.get(f"{url}/api/2.0/mlflow/registered-models/alias",
                     params={"name": model, "alias": "champion"}, timeout=60)
    assert r.status_code == 200, r.text
    assert int(r.json()["model_version"]["version"]) in versions

    # Artifacts: acknowledged uploads complete; every file complete or absent; nothing else.
    partial_files, lost_files = [], []
    for path in acks.attempted_uploads:
        local = restartable.artifacts / path
        if not local.exists():
            if path in acks.uploads:
                lost_files.append(path)
            continue
        if hashlib.sha256(local.read_bytes()).hexdigest() != _file_digest(path):
            partial_files.append((path, local.stat().st_size))
    assert not lost_files, f"acknowledged uploads lost: {lost_files}"
    assert not partial_files, f"truncated artifacts: {partial_files}"
    expected = {restartable.artifacts / p for p in acks.attempted_uploads}
    unknown = [str(p.relative_to(restartable.artifacts)) for p in restartable.artifacts.rglob("*")
               if (p.is_file() or p.is_symlink()) and p not in expected]
    # ferroflow stages local uploads in .ferroflow-staging/<server id>/ and holds
    # <server id>.lock while it runs: the running server's lock is the one file allowed there.
    live_locks = [f for f in unknown if re.fullmatch(r"\.ferroflow-staging/[^/]+\.lock", f)]
    leftovers = [f for f in unknown if f not in live_locks]
    assert not leftovers, f"files the API does not know (temporary uploads?) after restart: {leftovers}"
    assert len(live_locks) <= 1, f"staging locks of servers that are gone: {live_locks}"
    assert len(acks.uploads) >= KILLS * ACKS_BEFORE_KILL
    assert len(acks.batches) >= KILLS * ACKS_BEFORE_KILL
