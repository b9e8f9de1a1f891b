"""What `--auth kubernetes` costs with warm caches: log-batch throughput and search p99 of a
server with auth off and one with auth on (same binary, SQLite, same machine), and how many
TokenReviews and SubjectAccessReviews the API server was asked for.

    FERROFLOW_BIN=... FERROFLOW_KUBECTL=... FERROFLOW_KUBECONFIG=... \\
        python e2e/bench/auth_overhead.py [--requests 500]

Needs the e2e cluster (`eval "$(e2e/cluster/up.sh)"`); creates ServiceAccount `bench` in
namespace `team-a` bound to ClusterRole ferroflow-editor (config/rbac).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = os.environ["FERROFLOW_KUBECTL"]
KUBECONFIG = os.environ["FERROFLOW_KUBECONFIG"]


def kubectl(*args: str, stdin: str | None = None) -> str:
    return subprocess.run([KUBECTL, f"--kubeconfig={KUBECONFIG}", *args], input=stdin, text=True,
                          capture_output=True, check=True, timeout=60).stdout


def bench_token() -> str:
    kubectl("apply", "-f", str(ROOT / "config" / "rbac" / "editor_role.yaml"))
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}))
    kubectl("apply", "-n", "team-a", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bench"}}))
    kubectl("apply", "-n", "team-a", "-f", "-", stdin=json.dumps({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "bench-editor"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ferroflow-editor"},
        "subjects": [{"kind": "ServiceAccount", "name": "bench", "namespace": "team-a"}]}))
    return kubectl("create", "token", "bench", "-n", "team-a", "--duration=1h").strip()


def start(binary: str, workdir: Path, auth: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "server", "--port", str(port), "--auth", auth,
                             "--backend-store-uri", f"sqlite:///{workdir / f'{auth}.db'}",
                             "--artifacts-destination", str(workdir / f"{auth}-artifacts")],
                            env=dict(os.environ, KUBECONFIG=KUBECONFIG, RUST_LOG="warn"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server --auth {auth} did not start")
        time.sleep(0.1)


def measure(url: str, session: requests.Session, count: int) -> dict:
    api = url + "/api/2.0/mlflow"
    experiment = session.post(api + "/experiments/create", json={"name": f"bench-{time.time_ns()}"}, timeout=30)
    experiment.raise_for_status()
    experiment_id = experiment.json()["experiment_id"]
    run_id = session.post(api + "/runs/create", json={"experiment_id": experiment_id}, timeout=30).json()["run"]["info"]["run_id"]
    metrics = [{"key": f"m{i}", "value": i, "timestamp": 1, "step": 0} for i in range(100)]
    for _ in range(20):  # warm caches and connections
        session.post(api + "/runs/log-batch", json={"run_id": run_id, "metrics": metrics}, timeout=30).raise_for_status()
    start = time.perf_counter()
    for step in range(count):
        batch = [dict(metric, step=step + 1) for metric in metrics]
        session.post(api + "/runs/log-batch", json={"run_id": run_id, "metrics": batch}, timeout=30).raise_for_status()
    log_batch_per_s = count / (time.perf_counter() - start)
    latencies = []
    for _ in range(count):
        t = time.perf_counter()
        session.post(api + "/runs/search", json={"experiment_ids": [experiment_id], "max_results": 10},
                     timeout=30).raise_for_status()
        latencies.append(time.perf_counter() - t)
    latencies.sort()
    return {"log_batch_per_s": log_batch_per_s, "search_p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    binary = os.environ["FERROFLOW_BIN"]
    token = bench_token()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        off, off_url = start(binary, workdir, "none")
        on, on_url = start(binary, workdir, "kubernetes")
        try:
            plain = requests.Session()
            authed = requests.Session()
            authed.headers.update({"Authorization": f"Bearer {token}", "X-MLFLOW-WORKSPACE": "team-a"})
            results = {"off": [], "on": []}
            for _ in range(args.rounds):  # alternate, so drift on a shared machine hits both
                results["off"].append(measure(off_url, plain, args.requests))
                results["on"].append(measure(on_url, authed, args.requests))
            metrics = requests.get(on_url + "/metrics", timeout=10).text
            reviews = dict(re.findall(r'ferroflow_auth_reviews_total\{kind="(\w+)"\} (\d+)', metrics))
        finally:
            for proc in (off, on):
                proc.terminate()
                proc.wait(timeout=30)
    total_requests = args.rounds * (2 * args.requests + 22 + 2)
    best = {mode: {"log_batch_per_s": max(r["log_batch_per_s"] for r in rs),
                   "search_p99_ms": min(r["search_p99_ms"] for r in rs)} for mode, rs in results.items()}
    print(json.dumps({"rounds": results, "best": best, "requests_with_auth": total_requests,
                      "reviews": reviews,
                      "reviews_per_1000_requests": {k: 1000 * int(v) / total_requests for k, v in reviews.items()}},
                     indent=1))


if __name__ == "__main__":
    main()
