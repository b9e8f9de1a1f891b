#!/usr/bin/env python3
"""Turns the raw JSON lines of e2e/bench/run.sh into the markdown results table.

    python3 e2e/bench/report.py RAW.jsonl [COMMANDS.txt] > results.md

Every number in the main table is the median over the rounds (each server measured alone, once
per round). Warm-up windows are not measurements: they only appear in the warm-up verdicts.
Standard library only.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

SERVERS = ["ferroflow", "mlflow-default", "mlflow-gunicorn"]
LABELS = {
    "ferroflow": "ferroflow",
    "mlflow-default": "MLflow default (uvicorn, 4 workers)",
    "mlflow-gunicorn": "MLflow gunicorn, 4 workers",
}
MLFLOWS = ["mlflow-default", "mlflow-gunicorn"]
# Issue #20's targets against MLflow's faster configuration: (log-batch, log-metric) ratios
TARGETS = {"postgres": (20, 30), "sqlite": (10, 10)}
# the independent client's figure may differ from loadgen's by this much before the row is flagged
CROSSCHECK_TOLERANCE = 0.20


SINGLE_POINT_MEASURES = ["log-metric", "log-param", "set-tag"]


def single_point_section(rows, other_rows, present, mlflows, backend, target):
    """The single-point logging table: per measure and client count, throughput, latency and CPU
    per request of each server (medians over the rounds), and the independent client's figure
    where run.sh took one (`other_rows`: crosscheck-log-param / crosscheck-set-tag)."""
    if not rows:
        return []
    present = [s for s in SERVERS if s in present or any(r.get("server") == s for r in rows)]
    mlflows = [s for s in MLFLOWS if s in present]
    series = defaultdict(list)
    for r in rows:
        key = (r.get("server"), r["measure"], r["clients"])
        cpu = r.get("cpu") or {}
        for name, v in (("rps", r.get("requests_per_s")), ("p50", dig(r, "latency.p50_ms")),
                        ("p99", dig(r, "latency.p99_ms")), ("cpu_server", cpu.get("server_ms_per_request")),
                        ("cpu_db", cpu.get("db_ms_per_request")), ("errors", r.get("errors"))):
            series[key + (name,)].append(v)
    for r in other_rows:
        measure = r["measure"].removeprefix("crosscheck-")
        if r["measure"].startswith("crosscheck-") and measure in SINGLE_POINT_MEASURES[1:]:
            series[(r.get("server"), measure, r.get("clients"), "x_rps")].append(r.get("requests_per_s"))
    shapes = sorted({(r["measure"], r["clients"]) for r in rows},
                    key=lambda mc: (SINGLE_POINT_MEASURES.index(mc[0]) if mc[0] in SINGLE_POINT_MEASURES else 9, mc[1]))
    has_ff = "ferroflow" in present and mlflows
    out = ["## Single-point logging", "",
           "One value per request (`runs/log-metric`, `runs/log-parameter` with a new key each time, "
           "`runs/set-tag` of one key), each client on its own run, closed loop; one untimed window "
           "before each measured one. Latency is per request as the client saw it. Medians over "
           "the rounds.", ""]
    head = ["measure", "clients", "figure"] + [LABELS[s] for s in present]
    if has_ff:
        head += ["ferroflow vs faster MLflow", "target", "met"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---", "---:", "---"] + ["---:"] * (len(head) - 3)) + "|")
    figures = [("rps", "requests/s", True, None), ("x_rps", "… same, independent client (crosscheck.py)", True, None),
               ("p50", "latency p50 (ms)", False, None),
               ("p99", "latency p99 (ms)", False, None), ("cpu_server", "server CPU per request (ms)", False, 2)]
    if backend != "sqlite":  # SQLite runs inside the server: its CPU is the server's
        figures.append(("cpu_db", "PostgreSQL CPU per request (ms)", False, 2))
    for measure, clients in shapes:
        for name, label, higher_better, digits in figures:
            vals = {s: med(series.get((s, measure, clients, name), [])) for s in present}
            if all(v is None for v in vals.values()):
                continue
            cells = [measure, str(clients), label] + [fmt(vals[s], digits) if vals[s] is not None else "–"
                                                       for s in present]
            if has_ff:
                ff = vals.get("ferroflow")
                ml = [vals[s] for s in mlflows if vals[s] is not None]
                ratio = None
                if ff and ml:
                    ratio = ff / max(ml) if higher_better else (min(ml) / ff)
                cells.append("–" if ratio is None else f"{ratio:,.1f}x" + (" higher" if higher_better else " lower"))
                is_target = name == "rps"
                cells.append(f"≥ {target}x" if is_target else "")
                cells.append("" if not is_target or ratio is None else ("yes" if ratio >= target else "**no**"))
            out.append("| " + " | ".join(cells) + " |")
    failed = [(s, m, c, n) for s in present for m, c in shapes
              if (n := sum(x or 0 for x in series.get((s, m, c, "errors"), []))) > 0]
    out.append("")
    for s, m, c, n in failed:
        out.append(f"- **{LABELS.get(s, s)}: {n} failed request(s) in {m} at {c} clients**")
    if failed:
        out.append("")
    return out


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def dig(obj, dotted):
    for part in dotted.split("."):
        if obj is None:
            return None
        obj = obj.get(part)
    return obj


def med(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def fmt(x, digits=None):
    if x is None:
        return "–"
    if digits is None:
        digits = 0 if abs(x) >= 100 else (1 if abs(x) >= 10 else 2)
    return f"{x:,.{digits}f}"


def differ(a, b):
    """Relative difference of two rates, or None."""
    if not a or not b:
        return None
    return abs(a - b) / max(a, b)


def role(process):
    """A readable name for one process of a server's tree."""
    cmd = process.get("cmdline") or process.get("comm") or "?"
    for needle, name in (
        ("huey_consumer", "job runner: huey consumer"),
        ("_job_runner", "job runner"),
        ("resource_tracker", "multiprocessing resource tracker"),
        ("spawn_main", "uvicorn worker"),
        ("-m uvicorn", "uvicorn supervisor"),
        ("-m gunicorn", "gunicorn master + workers"),
        ("mlflow server", "mlflow CLI"),
        ("ferroflow server", "ferroflow"),
    ):
        if needle in cmd:
            return name
    return process.get("comm") or "?"


# Issue #20: the API's history reads within this factor of reading the same rows raw
HISTORY_TARGET = 2.0


def history_section(rows, present, backend):
    """The history section's table (history.py's records), or nothing when it did not run."""
    hist = [r for r in rows if r["measure"] in ("history", "history-bulk")]
    if not hist:
        return []
    raw_db = "SQLite (Python's sqlite3)" if backend == "sqlite" else "PostgreSQL (psycopg COPY … TO STDOUT)"
    out = ["## History", ""]
    w = out.append
    first = next((r for r in hist if r["measure"] == "history"), {})
    bulk = next((r for r in hist if r["measure"] == "history-bulk"), {})
    w(f"e2e/bench/history.py, seeded through each server's API on its own database: one run with "
      f"{first.get('points', 0):,} points of one key, {bulk.get('runs', 0)} runs × "
      f"{bulk.get('steps', 0):,} steps of another. **get-history**: every page as MlflowClient asks "
      f"for them (max_results={first.get('page_size', 25000):,} + page_token), bodies read whole, "
      f"not parsed; raw: the same rows in the same order from {raw_db}, read whole. "
      f"**bulk-interval**: the UI chart's `get-history-bulk-interval` for all runs, "
      f"max_results={bulk.get('max_results', 320)}; raw: the same sampled rows by one sampling "
      "query (NTILE per run + last point) straight from the database — the strict reference, it "
      "does the same work minus HTTP and JSON; `scan` is the plain read of every point the sampling "
      "orders, for context. Answers checked before timing (history: equal to the database's rows; "
      "bulk: equal to MLflow's sampling computed from the raw rows). Median of the timed reads "
      "(ms), after one untimed read; the ratio is the server's median over its own database's raw "
      "median.")
    w("")
    w("| measure | server | API (ms) | raw read (ms) | API / raw | target | met |")
    w("|---|---|---:|---:|---:|---|---|")
    med_of = defaultdict(list)
    for r in hist:
        med_of[(r["measure"], r["server"])].append(r)
    for measure, label, raw_key in (("history", "get-history, all pages", "raw"),
                                    ("history-bulk", "get-history-bulk-interval", "raw_sampled")):
        for s in present:
            recs = med_of.get((measure, s), [])
            if not recs:
                continue
            api = med([dig(r, "api.median_ms") for r in recs])
            raw = med([dig(r, f"{raw_key}.median_ms") for r in recs])
            ratio = api / raw if api and raw else None
            ours = s == "ferroflow"
            met = "" if not ours or ratio is None else ("yes" if ratio <= HISTORY_TARGET else "**no**")
            w(f"| {label} | {LABELS.get(s, s)} | {fmt(api)} | {fmt(raw)} | "
              f"{'–' if ratio is None else f'{ratio:.2f}x'} | "
              f"{f'within {HISTORY_TARGET:g}x raw' if ours else ''} | {met} |")
            if measure == "history-bulk":
                scan = med([dig(r, "raw_scan.median_ms") for r in recs])
                w(f"| … raw scan of every point sampled | {LABELS.get(s, s)} | | {fmt(scan)} | "
                  f"{fmt(api / scan, 2) + 'x' if api and scan else '–'} | | |")
            else:
                client = med([dig(r, "mlflow_client.median_ms") for r in recs])
                w(f"| … MlflowClient.get_metric_history (client parses) | {LABELS.get(s, s)} | "
                  f"{fmt(client)} | | | | |")
    w("")
    mem = [r for r in hist if r["measure"] == "history"]
    if mem:
        w("Server memory around the history reads (MiB, all processes of the server; peak = "
          "VmHWM reset through /proc/PID/clear_refs before each read): "
          + "; ".join(
              f"{LABELS.get(r['server'], r['server'])} round {r['rep']}: RSS {r['rss_before_mib']} before, "
              f"{r['rss_after_mib']} after; peak reading 10,000 points {r.get('peak_10k_mib')}, "
              f"reading {r['points']:,} {r.get('peak_100k_mib', r.get('peak_n_mib'))}"
              for r in mem) + ".")
        w("")
    return out


def main():
    rows = load(sys.argv[1])
    commands = []
    if len(sys.argv) > 2:
        try:
            with open(sys.argv[2]) as f:
                commands = [line.rstrip("\n") for line in f if line.strip()]
        except OSError:
            pass
    facts = next((r for r in rows if r["measure"] == "facts"), {})
    end = next((r for r in rows if r["measure"] == "end"), {})
    backend = facts.get("backend", "postgres")
    lb_target, lm_target = TARGETS.get(backend, TARGETS["postgres"])
    if backend == "sqlite":
        for k in LABELS:
            LABELS[k] += " (SQLite)"
    # warm-up windows are reported as verdicts only, never as measurements
    warmups = [r for r in rows if r["measure"] == "warm-up"]
    rows = [r for r in rows if r.get("phase") != "warm-up"]
    # the single-point section has a table of its own (its log-metric rows at other client counts
    # must not mix with the main table's)
    single_points = [r for r in rows if r.get("section") == "single-point"]
    rows = [r for r in rows if r.get("section") != "single-point"]
    present = [s for s in SERVERS if any(r.get("server") == s for r in rows)]
    mlflows = [s for s in MLFLOWS if s in present]

    # (server, key) -> list over reps
    series = defaultdict(list)
    errors = defaultdict(int)
    first_errors = {}
    per_query = defaultdict(lambda: defaultdict(list))  # (server, max_results) -> query -> [summaries]
    returned = defaultdict(dict)  # (max_results, query) -> server -> runs returned
    rss = defaultdict(list)
    seeds = {}
    turns = {}  # (server, rep) -> everything of that server's turn, for the per-turn table
    reps = set()

    def add(server, key, value):
        series[(server, key)].append(value)

    for r in rows:
        s = r.get("server")
        m = r["measure"]
        if s is not None and "rep" in r:
            turns.setdefault((s, str(r["rep"])), {})[m] = r
        if "rep" in r:
            reps.add(r["rep"])
        if r.get("errors"):
            errors[(s, m if m != "search" else f"search{r['max_results']}")] += r["errors"]
            first_errors.setdefault((s, m), r.get("first_error"))
        cpu = r.get("cpu") or {}
        if m in ("log-batch", "log-metric", "search"):
            tag = {"log-batch": "lb", "log-metric": "lm"}.get(m) or f"s{r.get('max_results')}"
            add(s, f"{tag}_cpu_server", cpu.get("server_ms_per_request"))
            add(s, f"{tag}_cpu_db", cpu.get("db_ms_per_request"))
        if m == "log-batch":
            add(s, "lb_pts", r["points_per_s"])
            add(s, "lb_p50", dig(r, "latency.p50_ms"))
            add(s, "lb_conns", r["connections_opened"])
        elif m == "log-metric":
            add(s, "lm_rps", r["requests_per_s"])
            add(s, "lm_p50", dig(r, "latency.p50_ms"))
            add(s, "lm_conns", r["connections_opened"])
        elif m == "search":
            mr = r["max_results"]
            add(s, f"s{mr}_qps", r["queries_per_s"])
            add(s, f"s{mr}_p50", dig(r, "latency.p50_ms"))
            add(s, f"s{mr}_p99", dig(r, "latency.p99_ms"))
            add(s, f"s{mr}_n", dig(r, "latency.count"))
            for q in r["per_query"]:
                per_query[(s, mr)][q["query"]].append(q["latency"])
                returned[(mr, q["query"])][s] = q["runs_returned"]
        elif m == "keepalive":
            add(s, "ka_kept", dig(r, "kept_alive.p50_ms"))
            add(s, "ka_fresh", dig(r, "fresh_connection.p50_ms"))
            add(s, "ka_pen", r["penalty_p50_ms"])
            add(s, "ka_conns", r["kept_alive_connections_opened"])
            add(s, "ka_n", r["requests"])
        elif m == "crosscheck-log-batch":
            add(s, "lb_x_pts", r.get("points_per_s"))
        elif m == "crosscheck-log-metric":
            add(s, "lm_x_rps", r.get("requests_per_s"))
        elif m == "rss":
            rss[s].append(r)
        elif m == "seed":
            seeds[s] = r

    def value(server, key):
        return med(series.get((server, key), []))

    def rss_value(server, key):
        return med([r.get(key) for r in rss.get(server, [])])

    out = []
    w = out.append
    w("# ferroflow vs MLflow tracking server: benchmark results")
    w("")
    cmd = "BENCH_BACKEND=sqlite bash e2e/bench/run.sh" if backend == "sqlite" else "bash e2e/bench/run.sh"
    w(f"Produced by `{cmd}` at commit {facts.get('commit', '?')}; {len(reps)} round(s), each "
      "server started on a fresh database, seeded, warmed up until two successive warm-up "
      "windows agreed, measured and stopped before the next one started (no other server "
      "running). Every number is the median over the rounds. See e2e/bench/README.md for what "
      "each number means and the caveats.")
    w("")
    w("## Machine")
    w("")
    w(f"- {facts.get('cores')} cores ({facts.get('cpu')}), {facts.get('memory_gib')} GiB memory, "
      f"Linux {facts.get('kernel')}; load average at start {' '.join(facts.get('loadavg_start', []))}, "
      f"at end {' '.join(end.get('loadavg_end', []))} (the cores are shared with other work)")
    if backend == "sqlite":
        w(f"- SQLite {facts.get('sqlite')} (Python's; ferroflow links its own): one fresh database "
          "file per server and round")
    else:
        w(f"- PostgreSQL {facts.get('postgres')} (e2e/setup/postgres.sh: one local cluster, fsync off, "
          "one fresh database per server and round)")
    w(f"- {facts.get('mlflow')}; uvicorn {facts.get('uvicorn')}, gunicorn {facts.get('gunicorn')}, "
      f"{facts.get('python')}")
    w(f"- ferroflow: {facts.get('ferroflow')}, {facts.get('rustc')}")
    w("")

    # ---- main table
    head = ["measure"] + [LABELS[s] for s in present]
    has_ff = "ferroflow" in present and mlflows
    if has_ff:
        head += ["ferroflow vs faster MLflow", "target", "met"]
    w("## Results")
    w("")
    w("| " + " | ".join(head) + " |")
    w("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")

    def row(label, key, higher_better, target=None, check=None, digits=None, unit=""):
        vals = {s: value(s, key) for s in present}
        cells = [label] + [fmt(vals[s], digits) + unit if vals[s] is not None else "–" for s in present]
        if has_ff:
            ff = vals.get("ferroflow")
            ml = [vals[s] for s in mlflows if vals[s] is not None]
            ratio = None
            if ff is not None and ml:
                if higher_better is True:
                    best = max(ml)
                    ratio = ff / best if best else None
                elif higher_better is False:
                    best = min(ml)
                    ratio = best / ff if ff else None
            cells.append("–" if ratio is None else
                         (f"{ratio:,.1f}x" + (" higher" if higher_better else " lower")))
            cells.append(target or "")
            cells.append("" if check is None or ff is None else ("yes" if check(ff, ratio) else "**no**"))
        w("| " + " | ".join(cells) + " |")

    row("log-batch: metric points/s (1000 per request, 8 clients)", "lb_pts", True,
        f"≥ {lb_target}x", lambda ff, r: r is not None and r >= lb_target)
    row("… same, independent client (crosscheck.py)", "lb_x_pts", True)
    have_cpu = any(k[1].endswith("_cpu_server") and any(v is not None for v in vals)
                   for k, vals in series.items())

    def cpu_rows(tag, unit):
        if have_cpu:
            row(f"… server CPU per {unit} (ms)", f"{tag}_cpu_server", False, digits=2)
            if backend != "sqlite":  # SQLite runs inside the server: its CPU is the server's
                row(f"… PostgreSQL CPU per {unit} (ms)", f"{tag}_cpu_db", False, digits=2)

    row("log-batch: request latency p50 (ms)", "lb_p50", False)
    cpu_rows("lb", "request = 1000 points")
    row("log-metric: requests/s (8 clients)", "lm_rps", True,
        f"≥ {lm_target}x", lambda ff, r: r is not None and r >= lm_target)
    row("… same, independent client (crosscheck.py)", "lm_x_rps", True)
    row("log-metric: request latency p50 (ms)", "lm_p50", False)
    cpu_rows("lm", "request")
    for mr in (100, 1000):
        row(f"search max_results={mr}: queries/s", f"s{mr}_qps", True)
        row(f"search max_results={mr}: p50 (ms)", f"s{mr}_p50", False)
        row(f"search max_results={mr}: p99 (ms)", f"s{mr}_p99", False,
            "p99 ≤ 1/10 (≥ 10x lower)", lambda ff, r: r is not None and r >= 10)
        cpu_rows(f"s{mr}", "query")
    # RSS row (single reading)
    cells = ["server RSS after the load (MiB, all processes)"]
    for s in present:
        cells.append(fmt(rss_value(s, "rss_mib"), 0) if s in rss else "–")
    if has_ff:
        ff = rss_value("ferroflow", "rss_mib")
        ml = [rss_value(s, "rss_mib") for s in mlflows if s in rss]
        cells.append(f"{min(ml) / ff:,.1f}x lower" if ff and ml else "–")
        cells.append("< 100 MiB")
        cells.append("" if ff is None else ("yes" if ff < 100 else "**no**"))
    w("| " + " | ".join(cells) + " |")
    cells = ["server PSS after the load (MiB, shared pages split)"]
    for s in present:
        cells.append(fmt(rss_value(s, "pss_mib"), 0) if s in rss else "–")
    if has_ff:
        cells += ["", "", ""]
    w("| " + " | ".join(cells) + " |")
    row("GET experiments/get, kept-alive connection: p50 (ms)", "ka_kept", False, digits=2)
    row("GET experiments/get, fresh connection each: p50 (ms)", "ka_fresh", False, digits=2)
    row("keep-alive penalty: kept-alive p50 − fresh p50 (ms)", "ka_pen", None,
        "none (≤ 0.5 ms)", lambda ff, r: ff <= 0.5, digits=2)
    w("")
    out.extend(single_point_section(single_points, rows, present, mlflows, backend, lm_target))

    # ---- notes on errors and connection behaviour
    notes = []
    for (s, m), n in sorted(errors.items()):
        fe = first_errors.get((s, m if not m.startswith("search") else "search"))
        notes.append(f"- **{LABELS.get(s, s)}: {n} failed request(s) in {m}**; first: `{(fe or '')[:300]}`")
    for s in present:
        conns = value(s, "ka_conns")
        n = value(s, "ka_n")
        if conns is not None and n and conns >= n:
            notes.append(f"- {LABELS[s]} closes the connection after every response "
                         f"({conns:.0f} connections for {n:.0f} requests on the \"kept-alive\" client): "
                         "its two GET rows both measure fresh connections.")
        lbc, lmc = value(s, "lb_conns"), value(s, "lm_conns")
        if lbc is not None and lbc > 8 * 2:
            notes.append(f"- {LABELS[s]}: the load clients had to reconnect (median {fmt(lbc, 0)} "
                         f"connections in log-batch, {fmt(lmc, 0)} in log-metric).")
    for s in present:
        for key, xkey, what in (("lb_pts", "lb_x_pts", "log-batch"), ("lm_rps", "lm_x_rps", "log-metric")):
            d = differ(value(s, key), value(s, xkey))
            if d is not None and d > CROSSCHECK_TOLERANCE:
                notes.append(f"- **{LABELS[s]}: {what} — loadgen and the independent client differ by "
                             f"{d:.0%} (more than {CROSSCHECK_TOLERANCE:.0%}): that row measured a client, "
                             "not only the server.**")
    for wu in warmups:
        if not wu.get("converged"):
            notes.append(f"- **{LABELS.get(wu['server'], wu['server'])}, round {wu['rep']}: {wu['of']} warm-up "
                         f"did not converge in {len(wu['rates'])} windows** (last change "
                         f"{wu.get('last_change')}); measured anyway.")
    for r in rows:
        if r["measure"] == "quiet" and not r.get("quiet"):
            notes.append(f"- **{LABELS.get(r['server'], r['server'])}, round {r['rep']}: still using CPU "
                         f"{r['waited_s']} s after start without load**; measured anyway.")
    if notes:
        w("Notes from this run:")
        w("")
        out.extend(notes)
        w("")

    out.extend(history_section(rows, present, backend))

    # ---- each server's turn
    w("## Each server alone")
    w("")
    w("One row per server and round, in the order they ran. Load average (1, 5, 15 min) before the "
      "server started and after it stopped; the other servers were stopped. Warm-up: windows of "
      "the measured load (rates per window) until two successive ones differed by less than the "
      "tolerance; `CAP` = never converged. Independent client: crosscheck.py right after "
      f"loadgen's measured window, flagged when the two differ by more than {CROSSCHECK_TOLERANCE:.0%}.")
    w("")
    w("| round | server | load avg before → after | healthy after (s) | quiet after (s) | "
      "log-batch warm-up (points/s per window) | log-batch loadgen / independent (points/s) | "
      "log-metric warm-up (req/s per window) | log-metric loadgen / independent (req/s) |")
    w("|---:|---|---|---:|---:|---|---|---|---|")
    wu_of = {(wu["server"], str(wu["rep"]), wu["of"]): wu for wu in warmups}

    def warm_cell(s, rep, of):
        wu = wu_of.get((s, rep, of))
        if not wu:
            return "–"
        rates = ", ".join(fmt(x) for x in wu["rates"])
        if wu.get("converged"):
            verdict = f"last two Δ {wu['last_change']:.1%} < {wu['tolerance']:.0%}"
        else:
            verdict = f"**CAP**: never two within {wu['tolerance']:.0%}"
        return f"{rates} ({verdict}; {wu['window_s']} s windows)"

    def pair_cell(turn, measure, key):
        a = dig(turn, f"{measure}.{key}")
        b = dig(turn, f"crosscheck-{measure}.{key}")
        if a is None:
            return "–"
        d = differ(a, b)
        client = dig(turn, f"crosscheck-{measure}.client") or ""
        cell = f"{fmt(a)} / {fmt(b)} {client}".rstrip()
        if d is not None:
            cell += f" ({d:.0%}" + (", **differ > 20%**)" if d > CROSSCHECK_TOLERANCE else ")")
        return cell

    order = [r for r in rows if r["measure"] == "turn"]
    for t in order:
        s, rep = t["server"], str(t["rep"])
        turn = turns.get((s, rep), {})
        w(f"| {rep} | {LABELS.get(s, s)} | {t['loadavg_before']} → {t['loadavg_after']} | "
          f"{dig(turn, 'start.healthy_after_s')} | {dig(turn, 'quiet.waited_s')}"
          f"{'' if dig(turn, 'quiet.quiet') else ' **(busy)**'} | "
          f"{warm_cell(s, rep, 'log-batch')} | {pair_cell(turn, 'log-batch', 'points_per_s')} | "
          f"{warm_cell(s, rep, 'log-metric')} | {pair_cell(turn, 'log-metric', 'requests_per_s')} |")
    w("")

    # ---- search details
    w("## Search details")
    w("")
    runs = next((r.get("runs") for r in rows if r["measure"] == "seed" and r.get("runs")), None) or 10000
    w(f"Experiment of {runs:,} runs, each with 5 params, 3 tags (+ `mlflow.runName`) and 4 metrics "
      "logged at 3 steps. POST /runs/search, `run_view_type=ACTIVE_ONLY`, clients cycling "
      "through the three queries. Median over repetitions of each query's p50 / p99 (ms); "
      "`runs` is the number of runs the query returned (must agree between servers).")
    w("")
    queries = []
    for (s, mr), d in per_query.items():
        for q in d:
            if q not in queries:
                queries.append(q)
    w("| max_results | query | " + " | ".join(f"{LABELS[s]} p50 / p99" for s in present) + " | runs |")
    w("|---:|---|" + "---:|" * len(present) + "---|")
    for mr in (100, 1000):
        for q in queries:
            cells = [str(mr), q]
            for s in present:
                lat = per_query.get((s, mr), {}).get(q, [])
                p50 = med([x.get("p50_ms") for x in lat])
                p99 = med([x.get("p99_ms") for x in lat])
                cells.append(f"{fmt(p50)} / {fmt(p99)}")
            counts = returned.get((mr, q), {})
            distinct = set(counts.values())
            cells.append(" / ".join(str(c) for c in distinct) +
                         ("" if len(distinct) <= 1 else " **(servers disagree: " +
                          ", ".join(f"{k}={v}" for k, v in counts.items()) + ")**"))
            w("| " + " | ".join(cells) + " |")
    w("")
    filters = {}
    for r in rows:
        if r["measure"] == "search":
            for q in r["per_query"]:
                filters[q["query"]] = (q.get("filter"), q.get("order_by"))
    for q, (flt, order) in filters.items():
        w(f"- {q}: filter `{flt or ''}`, order_by `{', '.join(order or []) or '(default: start_time DESC)'}`")
    w("")

    # ---- per-repetition values
    w("## Every round")
    w("")
    keys = [("lb_pts", "log-batch points/s"), ("lm_rps", "log-metric req/s"),
            ("s100_qps", "search 100 q/s"), ("s100_p99", "search 100 p99 ms"),
            ("s1000_qps", "search 1000 q/s"), ("s1000_p99", "search 1000 p99 ms"),
            ("s1000_n", "search 1000 queries timed"),
            ("ka_kept", "GET kept-alive p50 ms"), ("ka_fresh", "GET fresh p50 ms")]
    w("| server | " + " | ".join(k[1] for k in keys) + " |")
    w("|---|" + "---|" * len(keys))
    for s in present:
        cells = [LABELS[s]]
        for k, _ in keys:
            cells.append(", ".join(fmt(v, 0 if k.endswith("_n") else None) for v in series.get((s, k), [])))
        w("| " + " | ".join(cells) + " |")
    w("")
    if seeds:
        how = {"api": "through its API (8 clients, runs/create + one log-batch per run)",
               "sql": "experiment through its API, runs by COPY into its tables"}
        checks = [r for r in rows if r["measure"] == "seed-check"]
        w("Seeding the search experiment (each server's fresh database, every round; last round's "
          "time): " + "; ".join(
            f"{s} {how.get(r.get('method', 'api'), '?')}, {r['elapsed_s']:.0f} s" for s, r in seeds.items())
          + ". Sample runs read back through each server's API and compared with the first "
          "server's: " + ("no check recorded." if not checks else
                          "identical." if all(r.get("identical") for r in checks) else "**different**."))
        w("")
    if rss:
        w("Processes counted for memory (RSS / PSS in MiB, after the load; last round):")
        w("")
        for s, readings in rss.items():
            r = readings[-1]
            groups = defaultdict(lambda: [0, 0, 0])
            for p in r["processes"]:
                g = groups[role(p)]
                g[0] += 1
                g[1] += p["rss_kib"] / 1024
                g[2] += p["pss_kib"] / 1024
            w(f"- {LABELS.get(s, s)}: " + "; ".join(
                f"{name} ×{n} {rs:,.0f} / {ps:,.0f}" for name, (n, rs, ps) in groups.items()))
        w("")
    if commands:
        w("Server commands:")
        w("")
        for c in commands:
            w(f"- `{c}`")
        w("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
