#!/usr/bin/env python3
"""Turns the raw JSON lines of e2e/bench/scale.sh into the markdown scale table.

    python3 e2e/bench/scale_report.py RAW.jsonl [COMMANDS.txt] > scale.md

One column per size and server, and the growth factor from each size to the next: for a
latency later / earlier, for a throughput earlier / later (how many times slower). A measure
"grows faster than the number of runs" when its growth factor exceeds the size ratio (10);
the target for indexed first pages is ~1 (flat). Standard library only.
"""

from __future__ import annotations

import sys

from report import LABELS, dig, fmt, load

SERVERS = ["ferroflow", "mlflow-gunicorn"]
RUN_QUERIES = ["default order", "metric filter + metric order", "param filter"]
EXPERIMENT_QUERIES = ["experiments: default order", "experiments: name filter, name order"]


def size_label(n):
    n = int(n)
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def main():
    records = load(sys.argv[1])
    commands = open(sys.argv[2]).read().strip() if len(sys.argv) > 2 else ""
    facts = next((r for r in records if r.get("measure") == "facts"), {})
    end = next((r for r in records if r.get("measure") == "end"), {})

    # (server, size) -> {measure name: (value, higher_is_better)}
    cells = {}
    turns, seeds, checks, warmups = [], [], [], []
    last_seed = None
    for r in records:
        if r.get("measure") == "seed-check" and last_seed is not None:
            # check_seed.py labels nothing: it checks the seed just before it
            checks.append((last_seed["server"], last_seed["size"], r))
            continue
        # run.sh's warm-up and quiet records call the size their round
        server, size = r.get("server"), r.get("size", r.get("rep"))
        if server not in SERVERS or size in (None, "reference"):
            continue
        key = (server, int(size))
        row = cells.setdefault(key, {})
        m = r.get("measure")
        if m == "log-batch" and r.get("phase") != "warm-up":
            row["log-batch metric points/s"] = (r.get("points_per_s"), True)
            row["log-batch p99 ms"] = (dig(r, "latency.p99_ms"), False)
        elif m == "search" and r.get("experiment_id"):
            row["runs/search p50 ms (mix)"] = (dig(r, "latency.p50_ms"), False)
            row["runs/search p99 ms (mix)"] = (dig(r, "latency.p99_ms"), False)
            row["runs/search queries timed"] = (r.get("queries_ok"), None)
            for q in r.get("per_query", []):
                row[f"runs/search {q['query']} p50 ms"] = (dig(q, "latency.p50_ms"), False)
                row[f"runs/search {q['query']} p99 ms"] = (dig(q, "latency.p99_ms"), False)
                row[f"runs returned: {q['query']}"] = (q.get("runs_returned"), None)
        elif m == "search":
            for q in r.get("per_query", []):
                row[f"{q['query']} p50 ms"] = (dig(q, "latency.p50_ms"), False)
                row[f"{q['query']} p99 ms"] = (dig(q, "latency.p99_ms"), False)
                row[f"returned: {q['query']}"] = (q.get("runs_returned"), None)
        elif m == "seed":
            seeds.append(r)
            last_seed = r
            row["seed: runs by COPY, s"] = (r.get("runs_s"), None)
            row["seed: database size, MB"] = ((r.get("database_bytes") or 0) / 1e6, None)
        elif m == "warm-up":
            warmups.append(r)
        elif m == "turn":
            turns.append(r)

    columns = sorted(cells, key=lambda k: (SERVERS.index(k[0]), k[1]))
    names = []
    for key in columns:
        for name in cells[key]:
            if name not in names:
                names.append(name)
    # growth columns: each server's consecutive sizes
    growth = []
    for server in SERVERS:
        sizes = [s for srv, s in columns if srv == server]
        growth += [(server, a, b) for a, b in zip(sizes, sizes[1:])]

    out = ["# Scale curves: runs/search, experiments/search and log-batch at 10k / 100k / 1M runs", ""]
    out.append("**Loaded-machine numbers**: the 2 cores were shared with other helpers' compiles and "
               f"tests (load average {' '.join(facts.get('loadavg_start', []))} at the start, "
               f"{' '.join(end.get('loadavg_end', []))} at the end; per turn below). Latencies and "
               "throughputs are lower bounds; the growth factors are the point.")
    out.append("")
    out.append(f"Machine: {facts.get('cores')} cores ({facts.get('cpu')}), {facts.get('memory_gib')} GiB; "
               f"PostgreSQL {facts.get('postgres')}; {facts.get('mlflow')}; ferroflow: {facts.get('ferroflow')}; "
               f"repository commit {facts.get('commit')}.")
    out.append("")
    head = ["measure"] + [f"{LABELS[s].split(',')[0]} {size_label(n)}" for s, n in columns] + \
        [f"{'ff' if s == 'ferroflow' else 'MLflow'} ×{size_label(a)}→{size_label(b)}" for s, a, b in growth]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + " --- |" * len(head))
    too_fast = []
    for name in names:
        row = [name]
        for key in columns:
            value = cells[key].get(name, (None, None))[0]
            row.append(fmt(value, 0 if isinstance(value, int) else None) if isinstance(value, (int, float)) else "–")
        for server, a, b in growth:
            va, better = cells[(server, a)].get(name, (None, None))
            vb = cells[(server, b)].get(name, (None, None))[0]
            if better is None or not va or not vb:
                row.append("")
                continue
            factor = va / vb if better else vb / va
            ratio = b / a
            mark = " **>N**" if factor > ratio else ""
            if factor > ratio:
                too_fast.append(f"{LABELS[server]}: {name} grew {factor:.1f}x from {size_label(a)} to {size_label(b)}")
            row.append(f"{factor:.2f}{mark}")
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    out.append("Growth factor: later ÷ earlier for latencies, earlier ÷ later for throughput (how many times "
               "slower at the larger size); 1 is flat, 10 grows as the number of runs. **>N** marks a "
               "measure that grew faster than the number of runs.")
    out.append("")
    if too_fast:
        out.append("Measures that grew faster than the number of runs:")
        out += [f"- {t}" for t in too_fast]
    else:
        out.append("No measure grew faster than the number of runs.")
    out.append("")

    out.append("## Seeding and checks")
    out.append("")
    out.append("| server | size | runs by COPY (s) | 10,000 experiments (s) | extra SQL | VACUUM ANALYZE (s) | database | read-back check |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    verdict = {(srv, str(sz)): r for srv, sz, r in checks}
    for r in seeds:
        c = verdict.get((r["server"], str(r["size"])), {})
        ok = "identical to the API-seeded reference, count " + \
            str(next(iter(c.get("runs_counted", {}).values()), "?")) if c.get("identical") else "DIFFERS"
        out.append(f"| {r['server']} | {size_label(r['size'])} | {r.get('runs_s')} | {r.get('experiments_s')} | "
                   f"{r.get('extra_sql') or '–'} | {r.get('vacuum_analyze_s')} | {r.get('database_bytes', 0) / 1e9:.2f} GB | {ok} |")
    out.append("")
    out.append("## Warm-up (log-batch windows, points/s) and load average per turn")
    out.append("")
    out.append("| server | size | windows | converged | load before | load after |")
    out.append("| --- | --- | --- | --- | --- | --- |")
    for w, t in zip(warmups, turns):
        rates = ", ".join(fmt(x) for x in w.get("rates", []))
        out.append(f"| {t['server']} | {size_label(t['size'])} | {rates} | {'yes' if w.get('converged') else 'CAP'} | "
                   f"{t['loadavg_before']} | {t['loadavg_after']} |")
    errors = [r for r in records if r.get("errors")]
    if errors:
        out.append("")
        out.append("Errors: " + "; ".join(f"{r.get('server')} {r.get('size')} {r['measure']}: {r['errors']} "
                                        f"({(r.get('first_error') or '')[:200]})" for r in errors))
    if commands:
        out += ["", "## Commands", "", "```", commands, "```"]
    print("\n".join(out))


if __name__ == "__main__":
    main()
