"""Alias move → Deployment template latency for ModelDeployment (issue #14); run by
alias-latency.sh, which starts the server and the operator. DRAFT: needs the reconciler.

Two paths, BENCH_MOVES (20) moves each, alternating `champion` between versions 1 and 2:
  git  the RegisteredModel manifest re-applied with kubectl (t0: kubectl apply returned)
  api  MlflowClient.set_registered_model_alias on a model without a resource (t0: the call returned)
t1 is when a `kubectl get --watch` on the leg's Deployment prints the new version from its Pod
template's `ferroflow.dev/model-version` annotation. Prints p50/p99 per path in milliseconds.
"""

from __future__ import annotations

import os
import queue
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import uuid

from mlflow.tracking import MlflowClient

KUBECTL = os.environ["FERROFLOW_KUBECTL"]
KUBECONFIG = os.environ["FERROFLOW_KUBECONFIG"]
MOVES = int(os.environ.get("BENCH_MOVES", "20"))
TIMEOUT_S = float(os.environ.get("BENCH_MOVE_TIMEOUT", "60"))


def kubectl(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run([KUBECTL, f"--kubeconfig={KUBECONFIG}", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {done.stderr}")
    return done.stdout


def apply(namespace: str, manifest: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=textwrap.dedent(manifest))


class TemplateWatch:
    """Lines of `kubectl get --watch` for one Deployment's template version, with arrival times."""

    def __init__(self, namespace: str, deployment: str):
        jsonpath = '{.spec.template.metadata.annotations.ferroflow\\.dev/model-version}{"\\n"}'
        self.proc = subprocess.Popen(
            [KUBECTL, f"--kubeconfig={KUBECONFIG}", "get", "-n", namespace, f"deployment/{deployment}",
             "--watch", "-o", f"jsonpath={jsonpath}"],
            stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.strip()))

    def wait_for(self, version: str, since: float) -> float:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SystemExit(f"template did not reach version {version} within {TIMEOUT_S:.0f}s")
            try:
                at, value = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if value == version and at >= since:
                return at

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def register(client: MlflowClient, name: str) -> None:
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, source=f"s3://bucket/bench/{name}")


def measure(move, watch: TemplateWatch) -> list[float]:
    latencies = []
    watch.wait_for("1", 0.0)
    for i in range(MOVES):
        version = "2" if i % 2 == 0 else "1"
        move(int(version))
        t0 = time.monotonic()
        latencies.append((watch.wait_for(version, t0 - 0.5) - t0) * 1000)
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    results = {}
    try:
        git_model, api_model = f"bench-git-{namespace}", f"bench-api-{namespace}"
        register(client, git_model)
        register(client, api_model)
        client.set_registered_model_alias(api_model, "champion", "1")

        def git_move(version: int) -> None:
            apply(namespace, f"""
                apiVersion: ferroflow.dev/v1alpha1
                kind: RegisteredModel
                metadata: {{name: git}}
                spec: {{modelName: {git_model}, aliases: {{champion: {version}}}}}
                """)

        git_move(1)
        apply(namespace, """
            apiVersion: ferroflow.dev/v1alpha1
            kind: ModelDeployment
            metadata: {name: git}
            spec: {modelRef: {name: git}, alias: champion}
            ---
            apiVersion: ferroflow.dev/v1alpha1
            kind: ModelDeployment
            metadata: {name: api}
            spec: {modelName: %s, alias: champion}
            """ % api_model)
        for path, move, deployment in (
            ("git", git_move, "git-champion"),
            ("api", lambda v: client.set_registered_model_alias(api_model, "champion", str(v)), "api-champion"),
        ):
            kubectl("wait", "-n", namespace, "--for=create", f"deployment/{deployment}", f"--timeout={TIMEOUT_S:.0f}s")
            watch = TemplateWatch(namespace, deployment)
            try:
                results[path] = measure(move, watch)
            finally:
                watch.close()
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false")
    print("| path | moves | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for path, values in results.items():
        print(f"| {path} | {len(values)} | {statistics.median(values):.0f} | {percentile(values, 0.99):.0f} "
              f"| {max(values):.0f} |")


if __name__ == "__main__":
    sys.exit(main())
