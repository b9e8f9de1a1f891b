"""MLflow's web UI in Chromium, ferroflow vs `mlflow server` (issue #18): the driver of ui-speed.sh.

Per server, one at a time (the other stopped): a fresh database in the same Postgres, the
server, the seed, a check that it reads back, `VACUUM ANALYZE`, a wait until the server is quiet
(its processes under a quarter of a core, as run.sh waits), then per page one untimed load
and LOADS timed loads, each in a fresh browser context (no cache, no state but the chart
settings below) and then reloaded in it (the bundle cached), with the page's API requests timed:

- runs table: `#/experiments/<runs experiment>/runs` until the newest run's name shows in the
  table (its first rows);
- chart: `#/experiments/<chart experiment>/runs?compareRunsMode=CHART`, the experiment's runs
  all shown in the `loss` chart (the UI shows the first 10 by default: the page's saved settings
  say "show all" and 100 runs per chart, as a user sets them), until every run's line is drawn.

Seed (same content on both): RUNS runs (name `run-NNNNN`, tags `mlflow.user`, params `lr` and
`depth`, metric `score` at step 0) in one experiment; CHART_RUNS runs with metric `loss` at
STEPS steps in another. ferroflow through its REST API (runs/create + log-batch, 8 threads);
MLflow by SQL `INSERT … SELECT generate_series(…)` into MLflow 3.17.2's own tables (the rows
its SQLAlchemy store writes for those calls, as loadgen's `seed-sql`), its experiments through
its API: through its API the seed takes tens of minutes on 2 cores. Sample runs, run counts and a
full metric history then read back through each server's API, and must be equal on both.

Prints one JSON line per measurement and the markdown report at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import requests
from playwright.sync_api import sync_playwright

API = "/api/2.0/mlflow"
BASE_TIME = 1_700_000_000_000
START_TIMEOUT_S = 300
PAGE_TIMEOUT_MS = 300_000


def log(message: str) -> None:
    print(f"[ui-speed {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_params(i: int) -> list[dict]:
    return [{"key": "lr", "value": f"{0.0001 * (1 + i % 97):.4f}"}, {"key": "depth", "value": str(3 + i % 5)}]


def loss(run: int, step: int) -> float:
    # Plain float arithmetic, which Postgres' float8 repeats bit for bit (MLFLOW_CHART_SQL).
    return 1.0 / (1 + step) + run / 1000


class Database:
    """A fresh database in the Postgres server `admin_url` names; dropped by `drop`."""

    def __init__(self, admin_url: str, name: str):
        self.admin_url = admin_url
        self.name = name
        self._admin(f'CREATE DATABASE "{name}"')
        parts = urlsplit(admin_url)
        self.url = urlunsplit(("postgresql", parts.netloc, "/" + name, parts.query, ""))

    def _admin(self, sql: str) -> None:
        conn = psycopg2.connect(self.admin_url.replace("postgresql://", "postgres://", 1))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def connect(self):
        return psycopg2.connect(self.url.replace("postgresql://", "postgres://", 1))

    def vacuum_analyze(self) -> None:
        conn = self.connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("VACUUM ANALYZE")
        finally:
            conn.close()

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class Server:
    def __init__(self, name: str, command: list[str], workdir: Path, env: dict[str, str]):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=workdir, env=env, start_new_session=True)
        self.url = next(command[i + 1] for i, arg in enumerate(command) if arg == "--port")
        self.url = f"http://127.0.0.1:{self.url}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited during start-up; see {self.log_path}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not healthy within {START_TIMEOUT_S} s; see {self.log_path}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's whole process group (MLflow: its workers and
        job runners too)."""
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # the process ended meanwhile
            if int(fields[2]) == self.proc.pid:  # fields[2] is the process group
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def wait_quiet(self, share: float = 0.25, window_s: float = 2.0, limit_s: float = 120.0) -> float:
        """Waits until the server used under `share` of a core in two successive windows, as
        run.sh does: a freshly started MLflow still imports and spawns job runners for up to a
        minute and answers at a fraction of its warm speed meanwhile. Returns the seconds waited."""
        started, calm = time.monotonic(), 0
        while calm < 2 and time.monotonic() - started < limit_s:
            before = self.cpu_seconds()
            time.sleep(window_s)  # a sampling window, not synchronisation
            calm = calm + 1 if self.cpu_seconds() - before < share * window_s else 0
        if calm < 2:
            log(f"{self.name} still busy after {limit_s:.0f} s without load: measuring anyway")
        return time.monotonic() - started

    def post(self, session: requests.Session, path: str, body: dict) -> dict:
        r = session.post(self.url + API + path, json=body, timeout=600)
        if r.status_code != 200:
            raise RuntimeError(f"{self.name} {path}: {r.status_code} {r.text[:300]}")
        return r.json()


def create_experiments(server: Server) -> tuple[str, str]:
    with requests.Session() as s:
        runs = server.post(s, "/experiments/create", {"name": "ui-bench-runs"})["experiment_id"]
        chart = server.post(s, "/experiments/create", {"name": "ui-bench-chart"})["experiment_id"]
    return runs, chart


def seed_api(server: Server, runs_exp: str, chart_exp: str, runs: int, chart_runs: int, steps: int) -> None:
    """Through the REST API, 8 threads, each with its own connection."""
    sessions: dict[int, requests.Session] = {}

    def session() -> requests.Session:
        return sessions.setdefault(threading.get_ident(), requests.Session())

    def one_run(i: int) -> None:
        s = session()
        run_id = server.post(s, "/runs/create", {
            "experiment_id": runs_exp, "run_name": f"run-{i:05d}", "start_time": BASE_TIME + i, "user_id": "bench",
            "tags": [{"key": "mlflow.user", "value": "bench"}]})["run"]["info"]["run_id"]
        server.post(s, "/runs/log-batch", {"run_id": run_id, "params": run_params(i), "metrics": [
            {"key": "score", "value": float(i), "timestamp": BASE_TIME + i, "step": 0}]})

    def chart_run(i: int) -> None:
        s = session()
        run_id = server.post(s, "/runs/create", {
            "experiment_id": chart_exp, "run_name": f"chart-{i:03d}", "start_time": BASE_TIME + i, "user_id": "bench",
            "tags": [{"key": "mlflow.user", "value": "bench"}]})["run"]["info"]["run_id"]
        for first in range(0, steps, 1000):
            server.post(s, "/runs/log-batch", {"run_id": run_id, "metrics": [
                {"key": "loss", "value": loss(i, step), "timestamp": BASE_TIME + step, "step": step}
                for step in range(first, min(first + 1000, steps))]})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one_run, range(runs)))
        list(pool.map(chart_run, range(chart_runs)))
    for s in sessions.values():
        s.close()


# MLflow 3.17.2's rows for runs/create (with run_name, start_time, user_id, tag mlflow.user) and
# log-batch: runs, tags (mlflow.runName is written by runs/create), params, metrics,
# latest_metrics (the greatest step per key).
MLFLOW_SEED_SQL = """
INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time,
                  end_time, source_version, lifecycle_stage, artifact_uri, experiment_id, deleted_time)
SELECT md5(%(prefix)s || i), %(name)s || lpad(i::text, %(width)s, '0'), 'UNKNOWN', '', '', 'bench', 'RUNNING',
       %(base)s + i, NULL, '', 'active', 'mlflow-artifacts:/' || %(exp)s || '/' || md5(%(prefix)s || i) || '/artifacts',
       %(exp)s::int, NULL
FROM generate_series(0, %(count)s - 1) AS i;
INSERT INTO tags (key, value, run_uuid)
SELECT 'mlflow.runName', name, run_uuid FROM runs WHERE experiment_id = %(exp)s::int
UNION ALL SELECT 'mlflow.user', 'bench', run_uuid FROM runs WHERE experiment_id = %(exp)s::int;
"""

MLFLOW_RUNS_SQL = """
INSERT INTO params (key, value, run_uuid)
SELECT 'lr', to_char(0.0001 * (1 + i %% 97), 'FM0.0000'), md5('r' || i) FROM generate_series(0, %(count)s - 1) AS i
UNION ALL SELECT 'depth', (3 + i %% 5)::text, md5('r' || i) FROM generate_series(0, %(count)s - 1) AS i;
INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)
SELECT 'score', i, %(base)s + i, md5('r' || i), 0, false FROM generate_series(0, %(count)s - 1) AS i;
INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)
SELECT 'score', i, %(base)s + i, 0, false, md5('r' || i) FROM generate_series(0, %(count)s - 1) AS i;
"""

MLFLOW_CHART_SQL = """
INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)
SELECT 'loss', 1.0::float8 / (1 + s) + i::float8 / 1000, %(base)s + s, md5('c' || i), s, false
FROM generate_series(0, %(count)s - 1) AS i, generate_series(0, %(steps)s - 1) AS s;
INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)
SELECT 'loss', 1.0::float8 / %(steps)s + i::float8 / 1000, %(base)s + %(steps)s - 1, %(steps)s - 1, false,
       md5('c' || i)
FROM generate_series(0, %(count)s - 1) AS i;
"""


def seed_mlflow_sql(db: Database, runs_exp: str, chart_exp: str, runs: int, chart_runs: int, steps: int) -> None:
    conn = db.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(MLFLOW_SEED_SQL, {"prefix": "r", "name": "run-", "width": 5, "base": BASE_TIME,
                                          "exp": runs_exp, "count": runs})
            cur.execute(MLFLOW_RUNS_SQL, {"base": BASE_TIME, "count": runs})
            cur.execute(MLFLOW_SEED_SQL, {"prefix": "c", "name": "chart-", "width": 3, "base": BASE_TIME,
                                          "exp": chart_exp, "count": chart_runs})
            cur.execute(MLFLOW_CHART_SQL, {"base": BASE_TIME, "count": chart_runs, "steps": steps})
    finally:
        conn.close()


def readback(server: Server, runs_exp: str, chart_exp: str, runs: int) -> dict:
    """What both servers must answer alike: run counts, sample runs, a whole metric history."""
    with requests.Session() as s:
        def count(exp: str) -> int:
            total, token = 0, None
            while True:
                body = {"experiment_ids": [exp], "max_results": 1000, **({"page_token": token} if token else {})}
                answer = server.post(s, "/runs/search", body)
                total += len(answer.get("runs", []))
                token = answer.get("next_page_token")
                if not token:
                    return total

        def sample(exp: str, name: str) -> dict:
            run = server.post(s, "/runs/search", {"experiment_ids": [exp], "filter": f"attributes.run_name = '{name}'"})
            run = run["runs"][0]
            data = run["data"]
            return {
                "name": run["info"]["run_name"], "start_time": run["info"]["start_time"],
                "params": sorted((p["key"], p["value"]) for p in data.get("params", [])),
                "tags": sorted((t["key"], t["value"]) for t in data.get("tags", [])),
                "metrics": sorted((m["key"], m["value"], m["step"]) for m in data.get("metrics", [])),
                "run_id": run["info"]["run_id"],
            }

        samples = [sample(runs_exp, f"run-{i:05d}") for i in sorted({0, runs // 2, runs - 1})]
        chart = sample(chart_exp, "chart-000")
        # A connection of its own: uvicorn closes idle keep-alive connections after 5 s.
        history = requests.get(server.url + API + "/metrics/get-history",
                               params={"run_id": chart.pop("run_id"), "metric_key": "loss"},
                               timeout=600)
        if history.status_code != 200:
            raise RuntimeError(f"{server.name} get-history: {history.status_code} {history.text[:300]}")
        history = history.json()["metrics"]
        for one in samples:
            one.pop("run_id")
        digest = hashlib.sha256(json.dumps(sorted((m["step"], m["value"], m["timestamp"]) for m in history))
                                .encode()).hexdigest()[:16]
        return {"runs": count(runs_exp), "chart_runs": count(chart_exp), "samples": samples, "chart_sample": chart,
                "history_points": len(history), "history_digest": digest}


def chart_settings(chart_exp: str, chart_runs: int) -> tuple[str, str]:
    """The chart page's saved settings (localStorage), as a user leaves them after choosing
    "show all runs" and `chart_runs` runs in the loss chart."""
    key = f'MLflowLocalStorage-1.1-ExperimentPage-["{chart_exp}"]-ReactComponentState'
    state = {
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": [{
            "uuid": "bench-loss", "type": "LINE", "runsCountToCompare": chart_runs, "metricSectionId": "bench-section",
            "deleted": False, "isGenerated": True, "displayName": "loss", "metricKey": "loss", "lineSmoothness": 0,
            "xAxisKey": "step", "selectedXAxisMetricKey": "", "yAxisKey": "metric", "yAxisExpressions": [],
            "ignoreOutliers": False, "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True,
            "scaleType": "linear", "xAxisScaleType": "linear", "range": {}}],
        "compareRunSections": [{"uuid": "bench-section", "name": "Model metrics", "display": True,
                                "isReordered": False, "deleted": False, "isGenerated": True}],
    }
    return key, json.dumps(state)


def is_api(url: str) -> bool:
    return "/ajax-api/" in url or urlsplit(url).path.endswith("/graphql")


def timed_load(page, navigate, ready) -> dict:
    """One load: seconds until `ready` holds, and the API requests the page made meanwhile
    (their count, the sum and the longest of their request-to-last-byte times): what the
    server's speed can change, as opposed to the browser's own work on the bundle."""
    durations: list[float] = []

    def finished(request) -> None:
        if is_api(request.url) and request.timing["responseEnd"] >= 0:
            durations.append(request.timing["responseEnd"] / 1000)

    page.on("requestfinished", finished)
    start = time.monotonic()
    navigate()
    ready(page)
    elapsed = time.monotonic() - start
    page.remove_listener("requestfinished", finished)
    return {"page": elapsed, "api_requests": len(durations), "api_sum": sum(durations),
            "api_max": max(durations, default=0.0)}


def measure(browser, server: Server, runs_exp: str, chart_exp: str, runs: int, chart_runs: int, loads: int) -> dict:
    """Per page and load: a cold load in a fresh browser context (a first visit: the bundle is
    downloaded and compiled), then a reload in the same context (a returning user: the bundle
    comes from the browser's cache)."""
    newest = f"run-{runs - 1:05d}"
    key, state = chart_settings(chart_exp, chart_runs)

    def runs_table_ready(page) -> None:
        page.locator(".ag-center-cols-container .ag-row, .ag-pinned-left-cols-container .ag-row") \
            .get_by_text(newest, exact=True).first.wait_for()

    def chart_ready(page) -> None:
        # Plotly draws each run's trace as two `path.js-line` (the line and its hover twin).
        page.wait_for_function("n => document.querySelectorAll('.js-plotly-plot path.js-line').length >= n",
                               arg=2 * chart_runs, polling=50)

    pages = {
        "runs_table": (f"{server.url}/#/experiments/{runs_exp}/runs", runs_table_ready, None),
        "chart": (f"{server.url}/#/experiments/{chart_exp}/runs?compareRunsMode=CHART", chart_ready,
                  f"window.localStorage.setItem({json.dumps(key)}, {json.dumps(state)})"),
    }
    result: dict[str, list[dict]] = {f"{name}{kind}": [] for name in pages for kind in ("", "_warm")}
    for attempt in range(loads + 1):  # the first load of each page is untimed (warm-up)
        for name, (url, ready, init_script) in pages.items():
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            if init_script:
                context.add_init_script(init_script)
            page = context.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            cold = timed_load(page, lambda: page.goto(url), ready)
            warm = timed_load(page, page.reload, ready)
            context.close()
            if attempt:
                result[name].append(cold)
                result[f"{name}_warm"].append(warm)
            log(f"{server.name} load {attempt}{'' if attempt else ' (warm-up)'}: {name} "
                f"cold {cold['page']:.2f} s (API {cold['api_sum']:.2f} s in {cold['api_requests']}), "
                f"reload {warm['page']:.2f} s (API {warm['api_sum']:.2f} s)")
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", default="ferroflow,mlflow")
    parser.add_argument("--ferroflow-bin", required=True)
    parser.add_argument("--mlflow", required=True, help="the mlflow executable")
    parser.add_argument("--ui-dir", required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--pg-url", required=True)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--chart-runs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--state", required=True)
    args = parser.parse_args()
    state = Path(args.state)
    state.mkdir(parents=True, exist_ok=True)
    facts = {"measure": "facts", "runs": args.runs, "chart_runs": args.chart_runs, "steps": args.steps,
             "loads": args.loads, "loadavg_start": open("/proc/loadavg").read().split()[:3],
             "chromium": subprocess.run([args.chromium, "--version"], capture_output=True, text=True).stdout.strip(),
             "ferroflow": subprocess.run([args.ferroflow_bin, "--version"], capture_output=True,
                                         text=True).stdout.strip()}
    print(json.dumps(facts), flush=True)
    results: dict[str, dict] = {}
    readbacks: dict[str, dict] = {}
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", RUST_LOG="warn")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        try:
            for name in args.servers.split(","):
                db = Database(args.pg_url, f"ui_speed_{name}_{uuid.uuid4().hex[:8]}")
                server = None
                try:
                    workdir = state / name
                    workdir.mkdir(exist_ok=True)
                    port = str(free_port())
                    common = ["--host", "127.0.0.1", "--port", port, "--backend-store-uri", db.url,
                              "--artifacts-destination", str(workdir / "artifacts")]
                    if name == "ferroflow":
                        command = [args.ferroflow_bin, "server", *common, "--ui-dir", args.ui_dir]
                    else:
                        # MLflow's defaults (uvicorn, 4 workers in 3.17.2), its own copy of the bundle.
                        command = [args.mlflow, "server", *common]
                    log(f"starting {name}: {' '.join(command)}")
                    server = Server(name, command, workdir, env)
                    runs_exp, chart_exp = create_experiments(server)
                    started = time.monotonic()
                    if name == "ferroflow":
                        seed_api(server, runs_exp, chart_exp, args.runs, args.chart_runs, args.steps)
                        method = "api"
                    else:
                        seed_mlflow_sql(db, runs_exp, chart_exp, args.runs, args.chart_runs, args.steps)
                        method = "sql"
                    seeded = time.monotonic() - started
                    db.vacuum_analyze()
                    readbacks[name] = readback(server, runs_exp, chart_exp, args.runs)
                    quiet_after = server.wait_quiet()
                    print(json.dumps({"measure": "seed", "server": name, "method": method,
                                      "seconds": round(seeded, 1), "quiet_after_s": round(quiet_after),
                                      "readback": readbacks[name]}), flush=True)
                    log(f"{name} seeded by {method} in {seeded:.0f} s")
                    results[name] = measure(browser, server, runs_exp, chart_exp, args.runs, args.chart_runs,
                                            args.loads)
                    print(json.dumps({"measure": "ui", "server": name, **results[name]}), flush=True)
                finally:
                    if server is not None:
                        server.stop()
                    db.drop()
        finally:
            browser.close()
    different = len({json.dumps(r, sort_keys=True) for r in readbacks.values()}) > 1
    print(json.dumps({"measure": "end", "loadavg_end": open("/proc/loadavg").read().split()[:3],
                      "readback_equal": not different}), flush=True)
    if different:
        log("the servers read back different data: " + json.dumps(readbacks))
        return 1
    return 0


def report(raw: Path) -> str:
    """The markdown table of a raw JSON-lines file."""
    lines = [json.loads(line) for line in raw.read_text().splitlines() if line.startswith("{")]
    facts = next(line for line in lines if line["measure"] == "facts")
    end = next((line for line in lines if line["measure"] == "end"), {})
    ui = {line["server"]: line for line in lines if line["measure"] == "ui"}
    seeds = {line["server"]: line for line in lines if line["measure"] == "seed"}
    out = [f"Sizes: runs table {facts['runs']} runs; chart {facts['chart_runs']} runs x {facts['steps']} steps; "
           f"median of {facts['loads']} loads (after one untimed load) per page.",
           f"Load average (1, 5, 15 min) before: {' '.join(facts['loadavg_start'])}; "
           f"after: {' '.join(end.get('loadavg_end', ['?']))}.",
           "Seeding: " + "; ".join(f"{name} by {seed['method']} in {seed['seconds']} s, then quiet (under a quarter "
                                   f"of a core) after {seed.get('quiet_after_s', '?')} s" for name, seed in seeds.items())
           + f"; read back equal on both: {end.get('readback_equal')}.", "",
           "Each page: a cold load in a fresh browser context (the bundle downloaded and compiled), and a "
           "reload in the same context (the bundle from the browser's cache). The API rows add up the page's "
           "own `ajax-api` / `graphql` requests (request start to last byte, summed; they partly overlap): "
           "the part of each load a server's speed can change — the rest is the browser's work on the same bundle.",
           "",
           "| page | measure | ferroflow median s (min–max) | mlflow median s (min–max) | ratio | target ≥5x |",
           "|---|---|---|---|---|---|"]
    measures = (("", "page", "cold load", True), ("", "api_sum", "… its API requests", False),
                ("_warm", "page", "reload, bundle cached", True), ("_warm", "api_sum", "… its API requests", False))
    for page, label in (("runs_table", "runs table, first rows"), ("chart", "chart, every run drawn")):
        for kind, field, what, judged in measures:
            cells, medians = [], {}
            for name in ("ferroflow", "mlflow"):
                times = [load[field] for load in ui.get(name, {}).get(f"{page}{kind}", [])]
                if not times:
                    cells.append("–")
                    continue
                medians[name] = statistics.median(times)
                cells.append(f"{medians[name]:.2f} ({min(times):.2f}–{max(times):.2f})")
            ratio = medians["mlflow"] / medians["ferroflow"] if len(medians) == 2 and medians["ferroflow"] else None
            verdict = ("met" if ratio >= 5 else "not met") if ratio and judged else "–"
            out.append(f"| {label if field == 'page' and not kind else ''} | {what} | {cells[0]} | {cells[1]} | "
                       f"{f'{ratio:.1f}x' if ratio else '–'} | {verdict} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "report":
        print(report(Path(sys.argv[2])), end="")
        sys.exit(0)
    sys.exit(main())
