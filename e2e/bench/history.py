#!/usr/bin/env python3
"""The benchmark's history section (e2e/bench/run.sh): metric history read back through a
server's API, timed against reading the same rows straight from its database, in one script.

    python history.py --url URL --server NAME --rep R --pgid PGID --store STORE_URI
                      [--points 100000] [--bulk-runs 100] [--bulk-steps 10000]
                      [--bulk-max-results 320] [--repeats 5] [--seed-clients 4] [--label k=v ...]

STORE_URI is the server's own store: postgresql://… (read with psycopg, `COPY … TO STDOUT`) or
sqlite:///path (read with Python's sqlite3). Both MLflow's and ferroflow's schemas keep points
in `metrics(run_uuid, key, value, timestamp, step, is_nan)`, so the raw reads are the same SQL
for both servers.

Seeding (through the server's API, log-batch of 1000 points per request): one run with
`--points` points of key `history` (steps 0…N-1), and `--bulk-runs` runs with `--bulk-steps`
points of key `loss`. A sample is read back and checked before anything is timed.

Measures (one JSON line each):

  history       GET metrics/get-history of the N-point run, paged as MlflowClient pages it
                (max_results=25000 + page_token until no token), bodies read to the last byte,
                not parsed — against `COPY (SELECT key, value, timestamp, step … ORDER BY step,
                timestamp, value) TO STDOUT` of the same rows read to the last byte (SQLite:
                the same SELECT fetched through sqlite3). Also MlflowClient.get_metric_history
                itself (parses into entities: the client's cost, for information). The server's
                memory: RSS before and after, and its peak (VmHWM, reset through
                /proc/PID/clear_refs) while reading a 10,000-point history and then the N-point
                one — with streaming the two peaks are alike.
  history-bulk  GET ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?run_ids=…(all bulk
                runs)&metric_key=loss&max_results=320, the web UI's chart call — against the
                same sampled rows read straight from the database by a sampling query (NTILE per
                run + each run's last point, what MLflow's SQL store computes), and, for
                context, a plain read of every point the sampling has to order (all the runs'
                `loss` rows). The answer is checked against the sampling computed here in
                Python from the raw rows (MLflow's rule: first point of each of max_results
                tiles, the last point always).

Timings: the median of `--repeats` reads after one untimed read (caches warm for both sides),
the API's and the raw reads interleaved so that both meet the same load on a shared machine.
Traffic goes to loopback addresses only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import sqlite3
import statistics
import threading
import time
import urllib.parse

import requests

API = "/api/2.0/mlflow"
AJAX = "/ajax-api/2.0/mlflow"
HISTORY_KEY = "history"
BULK_KEY = "loss"
CLIENT_PAGE = 25000  # mlflow.store.tracking.GET_METRIC_HISTORY_MAX_RESULTS
BATCH = 1000
T0 = 1_700_000_000_000


def value_of(run, step):
    """Deterministic, not monotonic in step, with a repeated value now and then."""
    return ((step * 7919 + run * 104729) % 100003) / 1000.0


def post(session, url, path, body):
    r = session.post(url + API + path, json=body, timeout=300)
    if r.status_code != 200:
        raise RuntimeError(f"POST {path}: {r.status_code} {r.text[:300]}")
    return r.json()


def seed(url, points, bulk_runs, bulk_steps, clients):
    t0 = time.perf_counter()
    session = requests.Session()
    exp = post(session, url, "/experiments/create", {"name": f"bench-history-{time.time_ns()}"})["experiment_id"]

    def create_run(name):
        return post(session, url, "/runs/create", {"experiment_id": exp, "run_name": name,
                                                   "start_time": T0})["run"]["info"]["run_id"]

    history_run = create_run("history")
    bulk = [create_run(f"bulk-{i:03d}") for i in range(bulk_runs)]
    jobs = [(history_run, HISTORY_KEY, 0, start, min(points, start + BATCH))
            for start in range(0, points, BATCH)]
    for i, run in enumerate(bulk):
        jobs += [(run, BULK_KEY, i + 1, start, min(bulk_steps, start + BATCH))
                 for start in range(0, bulk_steps, BATCH)]
    local = threading.local()

    def send(job):
        run, key, index, lo, hi = job
        if not hasattr(local, "session"):
            local.session = requests.Session()
        metrics = [{"key": key, "value": value_of(index, step), "timestamp": T0 + step, "step": step}
                   for step in range(lo, hi)]
        post(local.session, url, "/runs/log-batch", {"run_id": run, "metrics": metrics})

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for _ in pool.map(send, jobs):
            pass
    return exp, history_run, bulk, time.perf_counter() - t0


def reuse(url, experiment_id, bulk_runs):
    """The runs an earlier seed() made in `experiment_id`, by name."""
    session = requests.Session()
    found = post(session, url, "/runs/search", {"experiment_ids": [experiment_id],
                                                "max_results": 1000})["runs"]
    by_name = {r["info"]["run_name"]: r["info"]["run_id"] for r in found}
    return experiment_id, by_name["history"], [by_name[f"bulk-{i:03d}"] for i in range(bulk_runs)]


# ---------------------------------------------------------------------------------------------
# the raw side: the server's own database


class Raw:
    def __init__(self, store):
        self.sqlite = store.startswith("sqlite:")
        if self.sqlite:
            self.conn = sqlite3.connect(urllib.parse.urlparse(store).path, timeout=60)
        else:
            import psycopg

            self.conn = psycopg.connect(store, autocommit=True)

    def copy(self, sql, params):
        """Rows of `sql` to the last byte: (bytes or rows read, row count)."""
        if self.sqlite:
            rows = self.conn.execute(sql.replace("%s", "?"), params).fetchall()
            return rows, len(rows)
        n = 0
        size = 0
        with self.conn.cursor() as cur:
            # COPY cannot take bind parameters: literals, quoted by the driver
            from psycopg import sql as psql

            query = psql.SQL(sql.replace("%s", "{}")).format(*[psql.Literal(p) for p in params])
            with cur.copy(psql.SQL("COPY ({}) TO STDOUT").format(query)) as copy:
                for block in copy:
                    size += len(block)
                    n += bytes(block).count(b"\n")
        return size, n

    def rows(self, sql, params):
        if self.sqlite:
            return self.conn.execute(sql.replace("%s", "?"), params).fetchall()
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()


HISTORY_SQL = ("SELECT key, value, timestamp, step FROM metrics WHERE run_uuid = %s AND key = %s "
               "ORDER BY step, timestamp, value")
ORDER = "step, timestamp, value, is_nan"
ORDER_DESC = "step DESC, timestamp DESC, value DESC, is_nan DESC"


def in_list(n):
    return "(" + ", ".join(["%s"] * n) + ")"


def scan_sql(n):
    return (f"SELECT run_uuid, step, timestamp, value, is_nan FROM metrics WHERE key = %s "
            f"AND run_uuid IN {in_list(n)} ORDER BY run_uuid, {ORDER}")


def sampled_sql(n, max_results):
    return (f"SELECT run_uuid, step, timestamp, value FROM ("
            f"SELECT run_uuid, step, timestamp, value, is_nan, rank_from_end, "
            f"ROW_NUMBER() OVER (PARTITION BY run_uuid, tile ORDER BY {ORDER}) AS tile_rank FROM ("
            f"SELECT run_uuid, step, timestamp, value, is_nan, "
            f"NTILE({int(max_results)}) OVER (PARTITION BY run_uuid ORDER BY {ORDER}) AS tile, "
            f"ROW_NUMBER() OVER (PARTITION BY run_uuid ORDER BY {ORDER_DESC}) AS rank_from_end "
            f"FROM metrics WHERE key = %s AND run_uuid IN {in_list(n)}) tiled) ranked "
            f"WHERE tile_rank = 1 OR rank_from_end = 1 ORDER BY run_uuid, {ORDER}")


def expected_sample(steps, max_results):
    """MLflow's sampling of one run's ordered points: the first point of each of max_results
    NTILE tiles, then the last point (in place of the final sample when the answer is full)."""
    n = len(steps)
    tiles = min(max_results, n)
    q, r = divmod(n, tiles)
    picks, i = [], 0
    for t in range(tiles):
        picks.append(steps[i])
        i += q + (1 if t < r else 0)
    if picks[-1] != steps[-1]:
        if len(picks) >= max_results:
            picks.pop()
        picks.append(steps[-1])
    return picks


# ---------------------------------------------------------------------------------------------
# the server's memory


def group_pids(pgid):
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[2]) == pgid and rest[0] != "Z":
            pids.append(int(d))
    return pids


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def group_kib(pgid, field):
    return sum(status_kib(p, field) for p in group_pids(pgid))


def reset_peak(pgid):
    """VmHWM := current RSS for every process of the group (Linux: clear_refs 5)."""
    for p in group_pids(pgid):
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# the API side


class Http:
    """One kept-alive connection; bodies read whole, as bytes (http.client: no per-chunk work
    in the client, so the time is the server's and the transfer's)."""

    def __init__(self, url):
        parsed = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)

    def get(self, path, params):
        target = path + "?" + urllib.parse.urlencode(params)
        try:
            self.conn.request("GET", target)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
            # the server closed the idle connection (uvicorn after 5 s): a GET may be resent
            self.conn.close()
            self.conn.request("GET", target)
            response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
        return body


def read_history(web, run, key):
    """Every page, as MlflowClient asks for them: the bodies."""
    bodies, token = [], None
    while True:
        params = {"run_id": run, "metric_key": key, "max_results": CLIENT_PAGE}
        if token:
            params["page_token"] = token
        body = web.get(API + "/metrics/get-history", params)
        bodies.append(body)
        # the token closes the body; finding it there does not parse the points
        tail = body[-400:]
        at = tail.rfind(b'"next_page_token"')
        token = json.loads(b"{" + tail[at:])["next_page_token"] if at >= 0 else None
        if not token:
            return bodies


def read_bulk(web, runs, key, max_results):
    params = [("run_ids", r) for r in runs] + [("metric_key", key), ("max_results", max_results)]
    return web.get(AJAX + "/metrics/get-history-bulk-interval", params)


def timed(repeats, *fns):
    """Each of `fns` timed `repeats` times, interleaved (a, b, a, b, …: on a shared machine
    both sides meet the same load), after one untimed call each (caches warm alike)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, series in zip(fns, times):
            t = time.perf_counter()
            fn()
            series.append((time.perf_counter() - t) * 1000)
    return [{"median_ms": round(statistics.median(x), 2), "min_ms": round(min(x), 2),
             "all_ms": [round(v, 1) for v in x]} for x in times]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--rep", default="1")
    ap.add_argument("--pgid", type=int, required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--bulk-runs", type=int, default=100)
    ap.add_argument("--bulk-steps", type=int, default=10_000)
    ap.add_argument("--bulk-max-results", type=int, default=320)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed-clients", type=int, default=4)
    ap.add_argument("--label", action="append", default=[])
    ap.add_argument("--reuse-experiment", help="an experiment seeded by an earlier run of this "
                    "script on the same database (another server on it): no seeding")
    a = ap.parse_args()
    labels = dict(kv.split("=", 1) for kv in a.label)
    base = {"server": a.server, "rep": a.rep, **labels}

    if a.reuse_experiment:
        exp, run, bulk = reuse(a.url, a.reuse_experiment, a.bulk_runs)
        seed_s = None
    else:
        exp, run, bulk, seed_s = seed(a.url, a.points, a.bulk_runs, a.bulk_steps, a.seed_clients)
    raw = Raw(a.store)
    if raw.sqlite:
        raw.conn.execute("ANALYZE")
    else:
        raw.conn.execute("ANALYZE metrics")
    web = Http(a.url)

    # ---- check before timing: the API's whole history equals the database's rows
    points = []
    for body in read_history(web, run, HISTORY_KEY):
        points += json.loads(body).get("metrics", [])
    stored = raw.rows(HISTORY_SQL, (run, HISTORY_KEY))
    answered = [(m["step"], m["timestamp"], m["value"]) for m in points]
    expected = [(step, ts, value) for _, value, ts, step in stored]
    if len(answered) != a.points or answered != expected:
        raise SystemExit(f"{a.server}: get-history answered {len(answered)} points, the database "
                         f"holds {len(expected)}; equal: {answered == expected}")

    # ---- history
    mib = lambda kib: round(kib / 1024, 1)  # noqa: E731
    rss_before = group_kib(a.pgid, "VmRSS:")
    peaks = {}
    can_reset = reset_peak(a.pgid)
    read_history(web, bulk[0], BULK_KEY)
    peaks["peak_10k_mib"] = mib(group_kib(a.pgid, "VmHWM:"))
    reset_peak(a.pgid)
    bodies = read_history(web, run, HISTORY_KEY)
    peaks["peak_100k_mib" if a.points == 100_000 else "peak_n_mib"] = mib(group_kib(a.pgid, "VmHWM:"))
    api, raw_t = timed(a.repeats, lambda: read_history(web, run, HISTORY_KEY),
                       lambda: raw.copy(HISTORY_SQL, (run, HISTORY_KEY)))
    rss_after = group_kib(a.pgid, "VmRSS:")

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=a.url)
    client_t, = timed(max(1, a.repeats // 2), lambda: client.get_metric_history(run, HISTORY_KEY))
    print(json.dumps({
        "measure": "history", **base, "points": a.points, "pages": len(bodies),
        "page_size": CLIENT_PAGE, "bytes": sum(len(b) for b in bodies),
        "api": api, "raw": raw_t, "mlflow_client": client_t,
        "ratio_to_raw": round(api["median_ms"] / raw_t["median_ms"], 2),
        "raw_how": "sqlite3 fetchall" if raw.sqlite else "psycopg COPY (SELECT …) TO STDOUT",
        "rss_before_mib": mib(rss_before), "rss_after_mib": mib(rss_after),
        "peak_reset": can_reset, **peaks, "seed_s": None if seed_s is None else round(seed_s, 1),
        "experiment_id": exp,
    }), flush=True)

    # ---- bulk interval: check the answer against MLflow's sampling computed from the raw rows
    mr = a.bulk_max_results
    try:
        answer = json.loads(read_bulk(web, bulk, BULK_KEY, mr)).get("metrics", [])
    except RuntimeError as refused:
        # e.g. gunicorn's 4094-byte request line: 100 run ids do not fit
        print(json.dumps({"measure": "history-bulk", **base, "runs": len(bulk),
                          "steps": a.bulk_steps, "max_results": mr,
                          "error": " ".join(str(refused).split())[:300]}), flush=True)
        return
    got = {}
    for m in answer:
        got.setdefault(m["run_id"], []).append(m["step"])
    scan = raw.rows(scan_sql(len(bulk)), (BULK_KEY, *bulk))
    per_run = {}
    for run_uuid, step, *_ in scan:
        per_run.setdefault(run_uuid, []).append(step)
    want = {r: expected_sample(per_run[r], mr) for r in bulk}
    if got != want:
        bad = next(r for r in bulk if got.get(r) != want[r])
        raise SystemExit(f"{a.server}: bulk-interval sample differs for run {bad}: "
                         f"{(got.get(bad) or [])[:5]}… vs {want[bad][:5]}…")
    api_b, sampled_b, scan_b = timed(
        a.repeats, lambda: read_bulk(web, bulk, BULK_KEY, mr),
        lambda: raw.copy(sampled_sql(len(bulk), mr), (BULK_KEY, *bulk)),
        lambda: raw.copy(scan_sql(len(bulk)), (BULK_KEY, *bulk)))
    print(json.dumps({
        "measure": "history-bulk", **base, "runs": len(bulk), "steps": a.bulk_steps,
        "max_results": mr, "points_answered": len(answer),
        "api": api_b, "raw_sampled": sampled_b, "raw_scan": scan_b,
        "ratio_to_raw": round(api_b["median_ms"] / sampled_b["median_ms"], 2),
        "ratio_to_scan": round(api_b["median_ms"] / scan_b["median_ms"], 2),
    }), flush=True)


if __name__ == "__main__":
    main()
