"""What `--auth kubernetes` costs with warm caches: log-batch throughput and search p99 of a
server with auth off and one with auth on (same binary, SQLite, same machine), and how many
TokenReviews and SubjectAccessReviews the API server was asked for.

    cargo build --release
    FERROFLOW_BIN=target/release/ferroflow FERROFLOW_KUBECTL=... FERROFLOW_KUBECONFIG=... \\
        python e2e/bench/auth_overhead.py [--requests 500] [--rounds 5] [--out note.md]

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


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def report(args, binary: str, results: dict, reviews: dict, total_requests: int, load: tuple) -> str:
    """The markdown note: every round side by side, medians, ratios against the 5% target."""
    lines = [
        "| round | log-batch/s off | log-batch/s on | search p99 ms off | search p99 ms on |",
        "|---|---|---|---|---|",
    ]
    for index, (off, on) in enumerate(zip(results["off"], results["on"]), start=1):
        lines.append(f"| {index} | {off['log_batch_per_s']:.0f} | {on['log_batch_per_s']:.0f} | "
                     f"{off['search_p99_ms']:.2f} | {on['search_p99_ms']:.2f} |")
    med = {mode: {key: median([r[key] for r in rs]) for key in ("log_batch_per_s", "search_p99_ms")}
           for mode, rs in results.items()}
    lines.append(f"| **median** | **{med['off']['log_batch_per_s']:.0f}** | **{med['on']['log_batch_per_s']:.0f}** | "
                 f"**{med['off']['search_p99_ms']:.2f}** | **{med['on']['search_p99_ms']:.2f}** |")
    throughput = med["on"]["log_batch_per_s"] / med["off"]["log_batch_per_s"]
    p99 = med["on"]["search_p99_ms"] / med["off"]["search_p99_ms"]
    per_1000 = {kind: 1000 * count / total_requests for kind, count in reviews.items()}
    met = lambda ok: "met" if ok else "missed"  # noqa: E731
    return "\n".join([
        f"Binary: `{binary}`; {args.rounds} rounds of {args.requests} log-batch (100 metrics each) and "
        f"{args.requests} runs/search calls per server, rounds alternating off/on (which goes first "
        "alternates too), SQLite, one client (requests.Session, keep-alive).",
        "",
        f"**Shared machine**: {os.cpu_count()} cores used by other sessions' builds and tests at the same "
        f"time; load average (1/5/15 min) before {load[0][0]:.2f}/{load[0][1]:.2f}/{load[0][2]:.2f}, "
        f"after {load[1][0]:.2f}/{load[1][1]:.2f}/{load[1][2]:.2f}. Differences of a few percent are "
        "within the noise of such a machine; the per-round columns show the spread.",
        "",
        *lines,
        "",
        f"- log-batch throughput with auth / without: **{throughput:.3f}** (target ≥ 0.95: {met(throughput >= 0.95)})",
        f"- search p99 with auth / without: **{p99:.3f}** (target ≤ 1.05: {met(p99 <= 1.05)})",
        f"- calls to the API server (server's `ferroflow_auth_reviews_total`, "
        f"`ferroflow_auth_namespace_lists_total`) over {total_requests} authenticated requests: "
        f"TokenReview {reviews.get('token', 0)}, SubjectAccessReview {reviews.get('access', 0)}, "
        f"namespace list {reviews.get('namespace_list', 0)} → per 1,000 requests: TokenReview "
        f"{per_1000.get('token', 0):.2f}, SubjectAccessReview {per_1000.get('access', 0):.2f}, "
        f"namespace list {per_1000.get('namespace_list', 0):.2f}",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", help="also write the markdown note here")
    args = parser.parse_args()
    binary = os.environ["FERROFLOW_BIN"]
    token = bench_token()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        off, off_url = start(binary, workdir, "none")
        on, on_url = start(binary, workdir, "kubernetes")
        try:
            plain = requests.Session()
            authed = requests.Session()
            authed.headers.update({"Authorization": f"Bearer {token}", "X-MLFLOW-WORKSPACE": "team-a"})
            results = {"off": [], "on": []}
            for round_index in range(args.rounds):  # alternate, so drift on a shared machine hits both
                order = [("off", off_url, plain), ("on", on_url, authed)]
                for mode, url, session in order if round_index % 2 == 0 else reversed(order):
                    results[mode].append(measure(url, session, args.requests))
            metrics = requests.get(on_url + "/metrics", timeout=10).text
            reviews = {kind: int(count) for kind, count in
                       re.findall(r'ferroflow_auth_reviews_total\{kind="(\w+)"\} (\d+)', metrics)}
            lists = re.search(r"^ferroflow_auth_namespace_lists_total (\d+)", metrics, re.MULTILINE)
            reviews["namespace_list"] = int(lists.group(1)) if lists else 0
        finally:
            for proc in (off, on):
                proc.terminate()
                proc.wait(timeout=30)
    load_after = os.getloadavg()
    # Per round: experiment and run created, 20 warm-up batches, then the measured calls.
    total_requests = args.rounds * (2 + 20 + 2 * args.requests)
    print(json.dumps({"rounds": results, "reviews": reviews, "requests_with_auth": total_requests}, indent=1))
    note = report(args, binary, results, reviews, total_requests, (load_before, load_after))
    print(note)
    if args.out:
        Path(args.out).write_text(note)


if __name__ == "__main__":
    main()
