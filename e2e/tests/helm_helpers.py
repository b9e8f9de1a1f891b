"""helm against the e2e cluster: the pinned binary (FERROFLOW_HELM, else e2e/cluster/build-helm.sh
builds or reuses it) and the chart's renderings, shared by the chart and install tests."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path

import yaml
from kubectl_helpers import KUBECONFIG

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ferroflow"
CRDS_CHART = ROOT / "charts" / "ferroflow-crds"


@cache
def helm_binary() -> str:
    if os.environ.get("FERROFLOW_HELM"):
        return os.environ["FERROFLOW_HELM"]
    built = subprocess.run(
        ["bash", str(ROOT / "e2e" / "cluster" / "build-helm.sh")], capture_output=True, text=True, check=True
    )
    return built.stdout.strip().splitlines()[-1]


def helm(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [helm_binary(), *args]
    if KUBECONFIG:
        cmd.append(f"--kubeconfig={KUBECONFIG}")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return done


def template(*args: str, release: str = "ferroflow", namespace: str = "ferroflow-system") -> list[dict]:
    """The objects `helm template` renders (no cluster needed)."""
    done = subprocess.run(
        [helm_binary(), "template", release, str(CHART), "--namespace", namespace, *args],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"helm template {' '.join(args)}: {done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]
