"""End-to-end fixtures: start the tracking server under test, point the real mlflow client at it.

The server under test is chosen by environment variables (or the matching pytest options):

  FERROFLOW_BIN=/path/to/ferroflow   (--ferroflow-bin)  runs `ferroflow server ...`
  FERROFLOW_REFERENCE=mlflow         (--reference)      runs MLflow's own `mlflow server ...` from
                                                         this venv, to check that the tests encode
                                                         MLflow's real behaviour

Every test runs once per backend store: `sqlite` (a temporary file) and `postgres` (a fresh
database per session in the server named by FERROFLOW_TEST_PG_URL, see e2e/setup/postgres.sh).
FERROFLOW_E2E_BACKENDS=sqlite (or postgres) restricts the run to one of them. Without
FERROFLOW_TEST_PG_URL the postgres half is skipped, unless CI is set: then it fails.

Tests marked `artifact_stores` (test_artifacts.py) also run once per artifact store: `local` (a
temporary folder, the server every other test uses) and `s3` (a second server per backend whose
`--artifacts-destination` is s3://<bucket>/<fresh prefix> in the S3 server e2e/setup/s3.sh
started, named by FERROFLOW_E2E_S3_*). FERROFLOW_E2E_ARTIFACT_STORES=local (or s3) restricts
them. Without FERROFLOW_E2E_S3_ENDPOINT the s3 half is skipped, unless CI is set: then it fails.

The server's stdout and stderr go to $FERROFLOW_E2E_STATE/logs/<impl>-<backend>.log (default
/tmp/ferroflow-e2e); the part of it written while a test ran is attached to that test's failure
report.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

# The client retries 408/429/5xx with exponential backoff for minutes by default: a server bug
# must fail the test at once instead. These are read at call time by mlflow.
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = os.environ.get("FERROFLOW_E2E_CLIENT_RETRIES", "0")
os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "0"
os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = os.environ.get("FERROFLOW_E2E_CLIENT_TIMEOUT", "60")
# No git probing, no telemetry, no interactive prompts from the client.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

import mlflow  # noqa: E402  (after the environment above)
import requests  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from s3client import S3Bucket  # noqa: E402

BACKENDS = ("sqlite", "postgres")
ARTIFACT_STORES = ("local", "s3")
STATE_DIR = Path(os.environ.get("FERROFLOW_E2E_STATE", "/tmp/ferroflow-e2e"))
START_TIMEOUT_S = float(os.environ.get("FERROFLOW_E2E_START_TIMEOUT", "180"))
STOP_TIMEOUT_S = 20.0


def pytest_addoption(parser):
    group = parser.getgroup("ferroflow")
    group.addoption(
        "--ferroflow-bin",
        default=os.environ.get("FERROFLOW_BIN"),
        help="path of the ferroflow binary to test (env FERROFLOW_BIN)",
    )
    group.addoption(
        "--reference",
        default=os.environ.get("FERROFLOW_REFERENCE"),
        choices=[None, "mlflow"],
        help="run the suite against MLflow's own server instead (env FERROFLOW_REFERENCE=mlflow)",
    )
    group.addoption(
        "--backends",
        default=os.environ.get("FERROFLOW_E2E_BACKENDS", ",".join(BACKENDS)),
        help="comma-separated backend stores to run on (env FERROFLOW_E2E_BACKENDS)",
    )
    group.addoption(
        "--artifact-stores",
        default=os.environ.get("FERROFLOW_E2E_ARTIFACT_STORES", ",".join(ARTIFACT_STORES)),
        help="comma-separated artifact stores the artifact tests run on (env FERROFLOW_E2E_ARTIFACT_STORES)",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "registry: exercises the model registry (deselect with -m 'not registry')",
    )
    config.addinivalue_line(
        "markers",
        "artifact_stores: run once per artifact store (local folder, S3), see --artifact-stores",
    )
    # SIGTERM (a CI timeout; run-pytest.sh passing on its own) ends the session as Ctrl-C does:
    # the fixtures tear down, so no server or operator outlives the suite on its port or Lease.
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _selected_backends(config) -> list[str]:
    wanted = [b.strip() for b in config.getoption("--backends").split(",") if b.strip()]
    unknown = [b for b in wanted if b not in BACKENDS]
    if unknown:
        raise pytest.UsageError(f"unknown backend(s) {unknown}; choose from {BACKENDS}")
    return wanted


def _selected_artifact_stores(config) -> list[str]:
    wanted = [s.strip() for s in config.getoption("--artifact-stores").split(",") if s.strip()]
    unknown = [s for s in wanted if s not in ARTIFACT_STORES]
    if unknown or not wanted:
        raise pytest.UsageError(f"unknown artifact store(s) {unknown or wanted}; choose from {ARTIFACT_STORES}")
    return wanted


def pytest_generate_tests(metafunc):
    # Parametrize the session-scoped `backend` fixture here so `--backends` can narrow it.
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", _selected_backends(metafunc.config), scope="session")
    # Only marked tests get the artifact-store dimension (their `server` is the one it names);
    # every other test keeps its id and the local-folder server.
    if metafunc.definition.get_closest_marker("artifact_stores") is not None:
        metafunc.parametrize("artifact_store", _selected_artifact_stores(metafunc.config))


def _impl(config) -> tuple[str, str]:
    """(implementation name, executable) of the server under test."""
    reference = config.getoption("--reference")
    binary = config.getoption("--ferroflow-bin")
    if reference and binary:
        raise pytest.UsageError("set either FERROFLOW_BIN or FERROFLOW_REFERENCE, not both")
    if reference == "mlflow":
        exe = Path(sys.executable).with_name("mlflow")
        if not exe.exists():
            found = shutil.which("mlflow")
            if not found:
                raise pytest.UsageError("FERROFLOW_REFERENCE=mlflow but no `mlflow` executable")
            exe = Path(found)
        return "mlflow", str(exe)
    if binary:
        path = Path(binary)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise pytest.UsageError(f"FERROFLOW_BIN={binary} is not an executable file")
        return "ferroflow", str(path.resolve())
    raise pytest.UsageError(
        "choose the server under test: FERROFLOW_BIN=/path/to/ferroflow or FERROFLOW_REFERENCE=mlflow"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    impl: str
    backend: str
    url: str
    log_path: Path
    proc: subprocess.Popen
    # The local artifacts folder (Path() when artifacts go to S3, see artifacts_destination).
    artifacts: Path
    # The backend store URI the server was started with (the operator shares it).
    store_uri: str = ""
    # Where artifacts go: a local folder, or for the s3 artifact store the s3:// URL.
    artifacts_destination: str = ""
    # The bucket behind an s3 artifact store, and the key prefix the server writes under.
    s3: S3Bucket | None = None
    s3_prefix: str = ""
    extra: dict = field(default_factory=dict)

    def log_tail(self, since: int = 0, max_chars: int = 20000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                text = f.read().decode("utf-8", "replace")
        except OSError as e:
            return f"<cannot read {self.log_path}: {e}>"
        if len(text) > max_chars:
            text = "...\n" + text[-max_chars:]
        return text

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0


class _PostgresDatabase:
    """A fresh database in the server FERROFLOW_TEST_PG_URL names; dropped afterwards."""

    def __init__(self, admin_url: str):
        import psycopg2  # from requirements.txt

        self._psycopg2 = psycopg2
        self.admin_url = admin_url
        self.name = f"ff_e2e_{uuid.uuid4().hex[:12]}"
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            conn.close()
        parts = urlsplit(admin_url)
        # MLflow (SQLAlchemy) and ferroflow both take the postgresql:// scheme.
        self.url = urlunsplit(("postgresql", parts.netloc, "/" + self.name, parts.query, ""))

    def _connect(self):
        conn = self._psycopg2.connect(self.admin_url.replace("postgresql://", "postgres://", 1))
        conn.autocommit = True
        return conn

    def drop(self):
        try:
            conn = self._connect()
            try:
                with conn.cursor() as cur:
                    cur.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            finally:
                conn.close()
        except Exception as e:  # the cluster is throwaway; do not mask test results
            print(f"warning: could not drop database {self.name}: {e}", file=sys.stderr)


def _server_command(impl: str, exe: str, port: int, store_uri: str, artifacts: str) -> list[str]:
    common = [
        "--host", "127.0.0.1",
        "--port", str(port),
        "--backend-store-uri", store_uri,
        "--artifacts-destination", artifacts,
    ]
    if impl == "mlflow":
        # One worker: the machine has 2 cores and the suite drives the server serially.
        return [exe, "server", *common, "--workers", "1"]
    return [exe, "server", *common]


def _wait_healthy(server: Server, deadline: float) -> None:
    last = "no answer yet"
    while True:
        code = server.proc.poll()
        if code is not None:
            raise RuntimeError(
                f"{server.impl} server exited with {code} during start-up; log "
                f"{server.log_path}:\n{server.log_tail()}"
            )
        try:
            r = requests.get(server.url + "/health", timeout=5)
            if r.status_code == 200:
                return
            last = f"GET /health -> {r.status_code} {r.text[:200]!r}"
        except requests.RequestException as e:
            last = f"GET /health -> {type(e).__name__}"
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{server.impl} server not healthy within {START_TIMEOUT_S:.0f}s ({last}); log "
                f"{server.log_path}:\n{server.log_tail()}"
            )
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def server(request, backend, tmp_path_factory) -> Server:
    """The server under test, artifacts in a local folder."""
    with _running_server(request, backend, tmp_path_factory, "local") as srv:
        yield srv


@pytest.fixture(scope="session")
def s3_server(request, backend, tmp_path_factory) -> Server:
    """Another server on the same kind of backend store, artifacts in the S3 bucket."""
    impl, _ = _impl(request.config)
    if S3Bucket.from_env() is None:
        message = ("FERROFLOW_E2E_S3_ENDPOINT is unset: start the S3 server with "
                   "`eval \"$(e2e/setup/s3.sh)\"`")
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set, so the s3 artifact store is required)")
        pytest.skip(message)
    if impl == "mlflow":
        import importlib.util

        if importlib.util.find_spec("boto3") is None:
            pytest.skip("MLflow's server needs boto3 for s3:// artifact destinations; not in e2e/requirements.txt")
    with _running_server(request, backend, tmp_path_factory, "s3") as srv:
        yield srv


@pytest.fixture
def artifact_store() -> str:
    """The artifact store of the server under test (parametrized for `artifact_stores` tests)."""
    return "local"


@contextmanager
def _running_server(request, backend: str, tmp_path_factory, artifact_store: str):
    impl, exe = _impl(request.config)
    pg_db = None
    if backend == "sqlite":
        db_dir = tmp_path_factory.mktemp(f"{impl}-sqlite")
        store_uri = f"sqlite:///{db_dir / 'tracking.db'}"
    else:
        admin_url = os.environ.get("FERROFLOW_TEST_PG_URL")
        if not admin_url:
            message = ("FERROFLOW_TEST_PG_URL is unset: start a test cluster with "
                       "`eval \"$(e2e/setup/postgres.sh)\"`")
            if os.environ.get("CI"):
                pytest.fail(f"{message} (CI is set, so the postgres backend is required)")
            pytest.skip(message)
        pg_db = _PostgresDatabase(admin_url)
        store_uri = pg_db.url

    name = f"{impl}-{backend}" if artifact_store == "local" else f"{impl}-{backend}-{artifact_store}"
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    env.setdefault("RUST_BACKTRACE", "1")
    s3, s3_prefix = None, ""
    if artifact_store == "s3":
        s3 = S3Bucket.from_env()
        # a fresh prefix per server: sessions sharing the bucket never see each other's objects
        s3_prefix = f"{name}-{uuid.uuid4().hex[:10]}"
        artifacts = f"s3://{s3.bucket}/{s3_prefix}"
        env.update(s3.server_env())
    else:
        artifacts = str(tmp_path_factory.mktemp(f"{name}-artifacts"))
    logs = STATE_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    port = _free_port()
    cmd = _server_command(impl, exe, port, store_uri, artifacts)
    workdir = tmp_path_factory.mktemp(f"{name}-cwd")
    with open(log_path, "wb") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=workdir, env=env, start_new_session=True,
        )
    srv = Server(impl=impl, backend=backend, url=f"http://127.0.0.1:{port}",
                 log_path=log_path, proc=proc, artifacts=Path(artifacts) if s3 is None else Path(),
                 store_uri=store_uri, artifacts_destination=artifacts, s3=s3, s3_prefix=s3_prefix)
    try:
        _wait_healthy(srv, time.monotonic() + START_TIMEOUT_S)
        yield srv
    finally:
        _stop(proc)
        if pg_db is not None:
            pg_db.drop()
        if s3 is not None:
            try:
                s3.delete_prefix(f"{s3_prefix}/")
            except Exception as e:  # the bucket is throwaway; do not mask test results
                print(f"warning: could not empty s3://{s3.bucket}/{s3_prefix}: {e}", file=sys.stderr)


def _reset_fluent_state():
    while mlflow.active_run() is not None:
        mlflow.end_run()
    # mlflow.set_experiment() in one test must not leak into the next (the fluent API keeps the
    # active experiment in a module global)
    import mlflow.tracking.fluent as fluent

    if hasattr(fluent, "_active_experiment_id"):
        fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # set_experiment() exports it for subprocesses
    os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)


@pytest.fixture
def tracking_uri(server, monkeypatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    mlflow.set_tracking_uri(server.url)
    _reset_fluent_state()
    yield server.url
    _reset_fluent_state()


@pytest.fixture
def client(tracking_uri) -> MlflowClient:
    return MlflowClient(tracking_uri)


@pytest.fixture
def unique_name(request) -> str:
    """A name no other test (or earlier session on the same database) uses."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:60]
    return f"{base}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def experiment_id(client, unique_name) -> str:
    return client.create_experiment(unique_name)


@pytest.fixture
def api(server):
    """Raw HTTP access: api.get/post(path under /api/2.0/mlflow, ...) -> requests.Response."""
    return RawApi(server.url)


class RawApi:
    def __init__(self, base: str):
        self.base = base
        self.session = requests.Session()

    def url(self, path: str) -> str:
        if path.startswith("/"):
            return self.base + path
        return f"{self.base}/api/2.0/mlflow/{path}"

    def get(self, path, params=None, **kw):
        return self.request("GET", path, params=params, **kw)

    def post(self, path, json=None, **kw):
        return self.request("POST", path, json=json, **kw)

    def request(self, method, path, **kw):
        kw.setdefault("timeout", 60)
        # As the mlflow client does: the workspace of MLFLOW_WORKSPACE, when set.
        workspace = os.environ.get("MLFLOW_WORKSPACE", "").strip()
        if workspace:
            kw["headers"] = {"X-MLFLOW-WORKSPACE": workspace, **(kw.get("headers") or {})}
        return self.session.request(method, self.url(path), **kw)


# --- attach the server's log to failures ------------------------------------------------------

@pytest.fixture(autouse=True)
def _server_log_mark(request):
    """Remember where the server log stood when this test began (for the failure report)."""
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        request.node._ferroflow_log = (srv, srv.log_size())
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    # Fixtures read item.rep_call in teardown to dump state when the test failed.
    setattr(item, f"rep_{report.when}", report)
    mark = getattr(item, "_ferroflow_log", None)
    if report.failed and mark is not None:
        srv, since = mark
        report.sections.append(
            (f"{srv.impl} server log ({srv.log_path}, from this test on)", srv.log_tail(since))
        )
        if srv.proc.poll() is not None:
            report.sections.append(("server exited", f"exit code {srv.proc.returncode}"))
