"""Markdown tables for e2e/bench/search-after-load.sh from its raw JSON lines.

    python3 search_after_load_report.py raw.jsonl > results.md
"""

import json
import statistics
import sys

NAMES = {
    "ferroflow": "ferroflow (Postgres)",
    "ferroflow-sqlite": "ferroflow (SQLite)",
    "mlflow": "MLflow 3.17.2, gunicorn x4 (Postgres, warm)",
}


def fmt(x):
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def main(path):
    records = [json.loads(line) for line in open(path) if line.strip()]
    facts = next((r for r in records if r["measure"] == "facts"), {})
    end = next((r for r in records if r["measure"] == "end"), {})
    # (server, rep, phase) -> {path: record}
    paths = {}
    steps = {}
    order = []
    for r in records:
        if r["measure"] == "search-paths":
            key = (r["server"], int(r["rep"]), r["phase"])
            paths[key] = {p["path"]: p for p in r["paths"]}
            for p in r["paths"]:
                if p["path"] not in order:
                    order.append(p["path"])
        elif r["measure"] in ("log-batch", "log-metric", "sweep"):
            steps.setdefault((r["server"], int(r["rep"])), {})[r["measure"]] = r
    servers = [s for s in NAMES if any(k[0] == s for k in paths)]
    out = []
    w = out.append
    w("# Search right after heavy logging (issue #11)\n")
    w("Produced by `bash e2e/bench/search-after-load.sh` (see e2e/bench/README.md). Per repetition "
      "and server, on a fresh database: 10 s of log-batch (8 clients, 1000 points over 10 keys), "
      "10 s of log-metric (32 clients), a sweep of runs with 5 params, 3 tags and 5 metrics each "
      "(+ registered models, versions, logged models), then every search path for a few seconds "
      "with 8 clients (**first minute**), then `VACUUM ANALYZE` (SQLite: nothing, it gathers no statistics by itself) and the same "
      "again (**settled**).\n")
    w(f"- ferroflow: {facts.get('ferroflow', '?')} (commit {facts.get('commit', '?')}); "
      f"PostgreSQL {facts.get('postgres', '?')}; {facts.get('cores', '?')} cores shared with other work")
    w(f"- load average at start {' '.join(facts.get('loadavg_start', []))}, "
      f"at end {' '.join(end.get('loadavg_end', []))}\n")

    for s in servers:
        reps = sorted({k[1] for k in paths if k[0] == s})
        w(f"## {NAMES[s]}: first minute vs settled, {len(reps)} repetition(s)\n")
        w("Medians over repetitions; `worst ratio` is the highest first-minute p99 ÷ settled p99 of "
          "any one repetition (target ≤ 2).\n")
        w("| search path | first minute p50 / p99 (ms) | settled p50 / p99 (ms) | p99 ratio, median (worst) | queries/s first / settled | items |")
        w("|---|---:|---:|---:|---:|---:|")
        for name in order:
            first = [paths[(s, r, "first")][name] for r in reps if name in paths.get((s, r, "first"), {})]
            settled = [paths[(s, r, "settled")][name] for r in reps if name in paths.get((s, r, "settled"), {})]
            if not first or not settled:
                continue
            med = lambda rs, f: statistics.median(f(x) for x in rs)
            ratios = [a["latency"]["p99_ms"] / b["latency"]["p99_ms"] for a, b in zip(first, settled)
                      if a["latency"]["p99_ms"] and b["latency"]["p99_ms"]]
            w(f"| {name} | {fmt(med(first, lambda x: x['latency']['p50_ms']))} / {fmt(med(first, lambda x: x['latency']['p99_ms']))}"
              f" | {fmt(med(settled, lambda x: x['latency']['p50_ms']))} / {fmt(med(settled, lambda x: x['latency']['p99_ms']))}"
              f" | {fmt(statistics.median(ratios)) if ratios else '–'} ({fmt(max(ratios)) if ratios else '–'})"
              f" | {fmt(med(first, lambda x: x['queries_per_s']))} / {fmt(med(settled, lambda x: x['queries_per_s']))}"
              f" | {first[0]['items_returned']} |")
        errors = sum(p["errors"] for (sv, _, _), d in paths.items() if sv == s for p in d.values())
        w(f"\nErrors (non-200 answers): {errors}.\n")
        w(f"### {NAMES[s]}: every repetition (p50 / p99 ms; load average before → after)\n")
        w("| search path | " + " | ".join(f"rep {r} first | rep {r} settled" for r in reps) + " |")
        w("|---|" + "---:|" * (2 * len(reps)))
        for name in order:
            cells = []
            for r in reps:
                for phase in ("first", "settled"):
                    p = paths.get((s, r, phase), {}).get(name)
                    cells.append("–" if p is None else
                                 f"{fmt(p['latency']['p50_ms'])} / {fmt(p['latency']['p99_ms'])} "
                                 f"({p['loadavg_before']:.1f} → {p['loadavg_after']:.1f})")
            w(f"| {name} | " + " | ".join(cells) + " |")
        w("")
        w("Load steps per repetition: " + "; ".join(
            f"rep {r}: log-batch {fmt(steps[(s, r)]['log-batch']['points_per_s'])} points/s, "
            f"log-metric {fmt(steps[(s, r)]['log-metric']['requests_per_s'])} req/s, "
            f"sweep {steps[(s, r)]['sweep']['runs']} runs in {fmt(steps[(s, r)]['sweep']['runs_elapsed_s'])} s"
            for r in reps if "sweep" in steps.get((s, r), {})) + ".\n")

    if "mlflow" in servers:
        ml_reps = sorted({k[1] for k in paths if k[0] == "mlflow"})
        w("## ferroflow in the first minute vs MLflow warm, after the same steps\n")
        w("Worst repetition of ferroflow against the best repetition of MLflow (so `faster` holds in "
          "every pairing of repetitions).\n")
        w("| search path | ferroflow Postgres first-minute p50 / p99, worst rep | MLflow p50 / p99, best rep | faster in every repetition |")
        w("|---|---:|---:|---|")
        ff_reps = sorted({k[1] for k in paths if k[0] == "ferroflow"})
        for name in order:
            ff = [paths[("ferroflow", r, "first")].get(name) for r in ff_reps]
            ml = [paths[("mlflow", r, "first")].get(name) for r in ml_reps]
            ff = [p for p in ff if p]
            ml = [p for p in ml if p]
            if not ff or not ml:
                continue
            f50 = max(p["latency"]["p50_ms"] for p in ff)
            f99 = max(p["latency"]["p99_ms"] for p in ff)
            m50 = min(p["latency"]["p50_ms"] for p in ml)
            m99 = min(p["latency"]["p99_ms"] for p in ml)
            w(f"| {name} | {fmt(f50)} / {fmt(f99)} | {fmt(m50)} / {fmt(m99)} | "
              f"{'yes' if f50 < m50 and f99 < m99 else '**no**'} |")
        w("")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
