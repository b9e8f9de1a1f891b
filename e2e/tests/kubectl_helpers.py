"""kubectl against the e2e cluster (FERROFLOW_KUBECTL, FERROFLOW_KUBECONFIG from
`eval "$(e2e/cluster/up.sh)"`), shared by the tests that use it."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time

KUBECTL = os.environ.get("FERROFLOW_KUBECTL")
KUBECONFIG = os.environ.get("FERROFLOW_KUBECONFIG")
WAIT_S = float(os.environ.get("FERROFLOW_E2E_OPERATOR_WAIT", "120"))


def kubectl(*args: str, stdin: str | None = None, check: bool = True, kubeconfig: str | None = None):
    cmd = [KUBECTL, f"--kubeconfig={kubeconfig or KUBECONFIG}", *args]
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=180)
    if check and done.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return done


def apply(namespace: str, manifest: str):
    return kubectl("apply", "-n", namespace, "-f", "-", stdin=textwrap.dedent(manifest))


def get(namespace: str, resource: str) -> dict | None:
    done = kubectl("get", "-n", namespace, resource, "-o", "json", check=False)
    if done.returncode != 0:
        if "NotFound" in done.stderr:
            return None
        raise AssertionError(f"kubectl get {resource}: {done.stderr}")
    return json.loads(done.stdout)


def wait_until(namespace: str, resource: str, predicate, what: str, timeout: float = WAIT_S) -> dict | None:
    """Polls the resource until `predicate(obj)` holds; fails with its last status at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        obj = get(namespace, resource)
        if predicate(obj):
            return obj
        if time.monotonic() > deadline:
            status = json.dumps((obj or {}).get("status"), indent=1) if obj else "<absent>"
            raise AssertionError(f"{resource} in {namespace}: {what} not reached within {timeout:.0f}s; status: {status}")
        time.sleep(0.2)


def established(crd: dict | None) -> bool:
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def wait_established(*names: str, timeout: float = 60) -> None:
    """Waits until the API server serves each CRD. Not `kubectl wait --for=condition=Established`:
    that fails at once when it reads a CRD before the API server wrote any condition."""
    for name in names:
        wait_until("default", f"crd/{name}", established, "Established", timeout)
