#!/usr/bin/env python3
"""Checks that the seeded search experiment reads back identically through every server's API.

    python3 e2e/bench/check_seed.py [--reference FILE] [--sample I,J,...] RUNS NAME=URL=EXPERIMENT_ID ...

Compares a sample of runs (found by name through runs/search) field by field: name, start time,
status, user, params, tags, latest metrics, and each metric's full history; and the number of
runs in the experiment. With --reference, servers that never run at the same time are compared:
the first call writes its first server's sample to FILE, later calls compare against it.
--sample picks the run indexes (default: first, second, a third, half, last of RUNS), so that
experiments of different sizes can be compared with one reference (e2e/bench/scale.sh). Prints
one JSON line; exits 1 on any difference. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
import urllib.request


def call(url, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + "/api/2.0/mlflow" + path, data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"{}")


def snapshot(url, exp, name):
    runs = call(url, "/runs/search", {"experiment_ids": [exp],
                                      "filter": f"attributes.run_name = '{name}'"}).get("runs", [])
    if len(runs) != 1:
        return {"error": f"{len(runs)} runs named {name}"}
    run = runs[0]
    info, data = run["info"], run.get("data", {})
    history = {}
    for m in data.get("metrics", []):
        q = urllib.parse.urlencode({"run_id": info["run_id"], "metric_key": m["key"]})
        points = call(url, f"/metrics/get-history?{q}").get("metrics", [])
        history[m["key"]] = sorted((p["step"], p["timestamp"], p["value"]) for p in points)
    return {
        "name": info.get("run_name"),
        "start_time": info.get("start_time"),
        "status": info.get("status"),
        "user_id": info.get("user_id"),
        "lifecycle_stage": info.get("lifecycle_stage"),
        "params": sorted((p["key"], p["value"]) for p in data.get("params", [])),
        "tags": sorted((t["key"], t["value"]) for t in data.get("tags", [])),
        "metrics": sorted((m["key"], m["value"], m["step"], m["timestamp"]) for m in data.get("metrics", [])),
        "history": history,
    }


def count(url, exp):
    n, token = 0, None
    while True:
        body = {"experiment_ids": [exp], "max_results": 1000}
        if token:
            body["page_token"] = token
        page = call(url, "/runs/search", body)
        n += len(page.get("runs", []))
        token = page.get("next_page_token")
        if not token:
            return n


def main():
    argv = sys.argv[1:]
    reference_file = None
    sample = None
    while argv[:1] in (["--reference"], ["--sample"]):
        if argv[0] == "--reference":
            reference_file = argv[1]
        else:
            sample = sorted({int(i) for i in argv[1].split(",")})
        argv = argv[2:]
    total = int(argv[0])
    servers = [a.split("=", 2) for a in argv[1:]]
    if sample is None:
        sample = sorted({0, 1, total // 3, total // 2, total - 1})
    problems = []
    reference = None
    if reference_file and os.path.exists(reference_file):
        with open(reference_file) as f:
            saved = json.load(f)
        reference = (saved["server"], {int(i): s for i, s in saved["sample"].items()})
    for name, url, exp in servers:
        # through JSON, so that a sample read back from the reference file compares equal
        snaps = {int(i): s for i, s in json.loads(json.dumps(
            {i: snapshot(url, exp, f"run-{i:05}") for i in sample})).items()}
        if reference is None:
            reference = (name, snaps)
            if reference_file:
                with open(reference_file, "w") as f:
                    json.dump({"server": name, "sample": snaps}, f)
        else:
            for i in sample:
                if snaps[i] != reference[1][i]:
                    problems.append(f"run-{i:05}: {name} {snaps[i]} != {reference[0]} {reference[1][i]}")
    counts = {name: count(url, exp) for name, url, exp in servers}
    for name, n in counts.items():
        if n != total:
            problems.append(f"{name}: {n} runs in the experiment, expected {total}")
    for p in problems:
        print("check_seed: " + p[:2000], file=sys.stderr)
    print(json.dumps({"measure": "seed-check", "sample": sample, "runs_counted": counts,
                      "identical": not problems}))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
