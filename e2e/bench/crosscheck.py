#!/usr/bin/env python3
"""An independent second client for the benchmark's logging figures (e2e/bench/run.sh).

    python crosscheck.py log-batch  --url U [--clients 8 --duration 10 --metrics 1000 --keys 10]
    python crosscheck.py log-metric --url U [--clients 8 --duration 10 --processes 2]
    python crosscheck.py log-param  --url U [as log-metric; a new param key per request]
    python crosscheck.py set-tag    --url U [as log-metric; one tag key set again and again]
    ... [--client aiohttp|mlflow] [--label k=v ...]

`loadgen` (Rust, hyper) produces the benchmark's numbers; this script measures the same shape of
load against the same server with nothing in common with it: Python, its own HTTP stack, its own
request bodies. When the two figures disagree by more than 20% the harness flags the row: one
of the two clients, not the server, is then what was measured.

Clients (`--client`):
  aiohttp  (default) one aiohttp session per client, bodies built with `json.dumps` before the
           clock starts (like loadgen's); light enough to keep up with ferroflow.
  mlflow   the mlflow client itself: `MlflowClient.log_batch` / `log_metric` / `log_param` /
           `set_tag`, one
           thread per client; what a training loop sends, but its own CPU per call (entities ->
           protobuf -> JSON) competes with the server on a small machine.

Each client logs into its own run of a new experiment; closed loop, one request in flight per
client; throughput = successful requests / wall time from the common start to the last answer.
`--processes P` spreads the clients over P processes (one Python process cannot drive thousands
of small requests a second). Prints one JSON object. Traffic goes to loopback addresses only.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import multiprocessing
import os
import random
import sys
import time
import urllib.parse
import urllib.request
import uuid

API = "/api/2.0/mlflow"
KEYS = ["loss", "accuracy", "val_loss", "val_accuracy", "lr", "grad_norm", "precision", "recall",
        "f1", "auc"]
WARMUP_REQUESTS = 1  # untimed per client, as loadgen does
PATHS = {"log-batch": "/runs/log-batch", "log-metric": "/runs/log-metric",
         "log-param": "/runs/log-parameter", "set-tag": "/runs/set-tag"}


def call(url, path, body):
    req = urllib.request.Request(url + API + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"{}")


def create_runs(url, n):
    exp = call(url, "/experiments/create", {"name": f"crosscheck-{uuid.uuid4().hex[:12]}"})["experiment_id"]
    now = int(time.time() * 1000)
    return exp, [call(url, "/runs/create", {"experiment_id": exp, "start_time": now, "user_id": "bench",
                                            "run_name": f"crosscheck-client-{c}"})["run"]["info"]["run_id"]
                 for c in range(n)]


def batch_points(args, request_index, ts0, rng):
    """(key, value, timestamp, step) of one log-batch request: `keys` keys × consecutive steps."""
    keys = KEYS[:args.keys]
    steps = -(-args.metrics // len(keys))
    points = []
    for k in range(steps):
        step = request_index * steps + k
        for key in keys:
            if len(points) == args.metrics:
                return points
            points.append((key, rng.random(), ts0 + step, step))
    return points


def body(args, run_id, i, ts0, rng):
    if args.measure == "log-batch":
        return json.dumps({"run_id": run_id, "params": [], "tags": [], "metrics": [
            {"key": k, "value": v, "timestamp": t, "step": s} for k, v, t, s in batch_points(args, i, ts0, rng)]})
    if args.measure == "log-param":
        return json.dumps({"run_id": run_id, "key": f"param_{i}", "value": str(rng.random())})
    if args.measure == "set-tag":
        return json.dumps({"run_id": run_id, "key": "progress", "value": f"step {i}"})
    return json.dumps({"run_id": run_id, "key": "loss", "value": rng.random(), "timestamp": ts0 + i, "step": i})


async def aiohttp_clients(args, runs, barrier):
    import aiohttp

    path = args.url + API + PATHS[args.measure]
    rng = random.Random(os.getpid())
    ts0 = int(time.time() * 1000)
    bodies = {run: [body(args, run, i, ts0, rng) for i in range(args.requests + WARMUP_REQUESTS)]
              for run in runs}
    headers = {"Content-Type": "application/json"}
    stats = {"ok": 0, "errors": 0, "first_error": None, "latencies": []}

    async def post(session, data):
        async with session.post(path, data=data, headers=headers) as r:
            await r.read()
            return r.status

    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                      timeout=aiohttp.ClientTimeout(total=120)) for _ in runs]
    try:
        for session, run in zip(sessions, runs):
            for data in bodies[run][:WARMUP_REQUESTS]:
                await post(session, data)
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        start = time.monotonic()
        deadline = start + args.duration

        async def client(session, run):
            for data in bodies[run][WARMUP_REQUESTS:]:
                if time.monotonic() >= deadline:
                    return
                t0 = time.monotonic()
                try:
                    status = await post(session, data)
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    status, err = None, repr(e)
                else:
                    err = None if status == 200 else f"HTTP {status}"
                if err is None:
                    stats["ok"] += 1
                    stats["latencies"].append((time.monotonic() - t0) * 1000)
                else:
                    stats["errors"] += 1
                    stats["first_error"] = stats["first_error"] or err

        await asyncio.gather(*(client(s, r) for s, r in zip(sessions, runs)))
        end = time.monotonic()
    finally:
        for s in sessions:
            await s.close()
    return start, end, stats


def mlflow_clients(args, runs, barrier):
    import threading

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=args.url)
    rng = random.Random(os.getpid())
    ts0 = int(time.time() * 1000)
    stats = {"ok": 0, "errors": 0, "first_error": None, "latencies": []}
    lock = threading.Lock()

    def send(run, i):
        if args.measure == "log-batch":
            client.log_batch(run, metrics=[Metric(k, v, t, s) for k, v, t, s in batch_points(args, i, ts0, rng)])
        elif args.measure == "log-param":
            client.log_param(run, f"param_{i}", str(rng.random()))
        elif args.measure == "set-tag":
            client.set_tag(run, "progress", f"step {i}")
        else:
            client.log_metric(run, "loss", rng.random(), timestamp=ts0 + i, step=i)

    for run in runs:
        for i in range(WARMUP_REQUESTS):
            send(run, i)
    barrier.wait()
    start = time.monotonic()
    deadline = start + args.duration

    def worker(run):
        for i in range(WARMUP_REQUESTS, args.requests + WARMUP_REQUESTS):
            if time.monotonic() >= deadline:
                return
            t0 = time.monotonic()
            try:
                send(run, i)
            except Exception as e:  # the mlflow client raises MlflowException and requests' errors
                with lock:
                    stats["errors"] += 1
                    stats["first_error"] = stats["first_error"] or repr(e)[:300]
            else:
                with lock:
                    stats["ok"] += 1
                    stats["latencies"].append((time.monotonic() - t0) * 1000)

    threads = [threading.Thread(target=worker, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return start, time.monotonic(), stats


def process_main(args, runs, barrier, results):
    try:
        if args.client == "aiohttp":
            results.put(asyncio.run(aiohttp_clients(args, runs, barrier)))
        else:
            results.put(mlflow_clients(args, runs, barrier))
    except BaseException as e:  # report, and let the parent see a failed process
        barrier.abort()
        results.put(repr(e))
        raise


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    return round(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))], 3)


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("measure", choices=list(PATHS))
    p.add_argument("--url", required=True)
    p.add_argument("--client", choices=["aiohttp", "mlflow"], default="aiohttp")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--requests", type=int, default=None, help="budget per client")
    p.add_argument("--metrics", type=int, default=1000)
    p.add_argument("--keys", type=int, default=10)
    p.add_argument("--label", action="append", default=[])
    args = p.parse_args()
    host = urllib.parse.urlsplit(args.url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"crosscheck: {args.url}: only loopback targets")
    if args.requests is None:
        args.requests = 300 if args.measure == "log-batch" else 20000
    if args.keys > len(KEYS):
        sys.exit(f"crosscheck: at most {len(KEYS)} keys")

    loadavg_before = loadavg()
    experiment_id, runs = create_runs(args.url, args.clients)
    processes = max(1, min(args.processes, args.clients))
    shares = [runs[i::processes] for i in range(processes)]
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=process_main, args=(args, share, barrier, results)) for share in shares]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=args.duration + 600) for _ in procs]
    for proc in procs:
        proc.join()
    failed = [o for o in outcomes if isinstance(o, str)]
    if failed:
        sys.exit(f"crosscheck: a client process failed: {failed[0]}")
    start = min(o[0] for o in outcomes)
    end = max(o[1] for o in outcomes)
    ok = sum(o[2]["ok"] for o in outcomes)
    latencies = sorted(x for o in outcomes for x in o[2]["latencies"])
    elapsed = end - start
    out = {
        "measure": f"crosscheck-{args.measure}",
        "client": "aiohttp" if args.client == "aiohttp" else "mlflow MlflowClient",
        "experiment_id": experiment_id,
        "clients": args.clients,
        "processes": processes,
        "requests_ok": ok,
        "errors": sum(o[2]["errors"] for o in outcomes),
        "first_error": next((o[2]["first_error"] for o in outcomes if o[2]["first_error"]), None),
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(ok / elapsed, 3) if elapsed > 0 else None,
        "latency": {"count": len(latencies), "p50_ms": percentile(latencies, 0.50),
                    "p99_ms": percentile(latencies, 0.99)},
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg(),
    }
    if args.measure == "log-batch":
        out["metrics_per_request"] = args.metrics
        out["points_per_s"] = round(ok * args.metrics / elapsed, 3) if elapsed > 0 else None
    for label in args.label:
        k, _, v = label.partition("=")
        out[k] = v
    print(json.dumps(out))


if __name__ == "__main__":
    main()
