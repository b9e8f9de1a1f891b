#!/usr/bin/env bash
# Soak: ferroflow alone for SOAK_MINUTES (30) at SOAK_FRACTION (0.5) of its peak log-batch
# throughput, with searches mixed in, watching for leaks and slow-downs (issue #10).
#
#   bash e2e/bench/soak.sh            # setup, build, measure peak, soak, report
#
# Steps: the throwaway Postgres (e2e/setup/postgres.sh), a release build of ferroflow (or
# FERROFLOW_BIN), the load generator; a fresh database; a 2,000-run experiment to search; 10 s
# of closed-loop log-batch (8 clients, 1000 points per request) to find the peak; then one
# window per minute: log-batch paced at the fraction of the peak (SOAK_CLIENTS clients, each
# `--rate peak*fraction/clients` requests per second) beside one client searching that
# experiment (`metrics.accuracy > 0.5` ordered by it, 100 results), and after each window the
# server's RSS and open file descriptors. The report (markdown, also written to SOAK_OUT) has
# a row per minute and the verdicts: RSS and fds grew less than 10% from the first 5 minutes
# (after the first, warm-up minute) to the last 5, and log-batch p99 in the last 5 minutes is
# within 1.5x of the first 5.
#
# A benchmark, not a test: CI never runs it. Traffic goes to 127.0.0.1 only; every loop is
# bounded by a duration. Knobs: SOAK_MINUTES, SOAK_FRACTION, SOAK_CLIENTS (4),
# SOAK_SEARCH_RUNS (2000), SOAK_MIN_FREE_GB (8: stop early below it), SOAK_OUT
# (e2e/bench/runs/<date>-soak.md), FERROFLOW_BENCH_STATE.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

minutes="${SOAK_MINUTES:-30}"
fraction="${SOAK_FRACTION:-0.5}"
clients="${SOAK_CLIENTS:-4}"
search_runs="${SOAK_SEARCH_RUNS:-2000}"
stamp="$(date -u +%Y%m%dT%H%M%S)"
state="${FERROFLOW_BENCH_STATE:-/tmp/ferroflow-bench}/soak-$stamp"
out="${SOAK_OUT:-$here/runs/$(date -u +%Y-%m-%d)-soak.md}"
mkdir -p "$state"

# free_port
source "$here/lib.sh"

log() { printf 'soak.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

eval "$(bash "$root/e2e/setup/postgres.sh")"
pg_url="$FERROFLOW_TEST_PG_URL"
pg_base="postgresql://${pg_url#*://}"; pg_base="${pg_base%/*}"
psql_bin="$(command -v psql || echo "$(ls -d /usr/lib/postgresql/*/bin | sort -t/ -k4,4n | tail -n1)/psql")"

if [[ -n "${FERROFLOW_BIN:-}" ]]; then
  ferroflow="$(cd "$(dirname "$FERROFLOW_BIN")" && pwd)/$(basename "$FERROFLOW_BIN")"
  source_note="prebuilt $ferroflow"
else
  log "building ferroflow (cargo build --release)"
  cargo build --release --bin ferroflow >&2
  ferroflow="${CARGO_TARGET_DIR:-$root/target}/release/ferroflow"
  source_note="commit $(git rev-parse --short HEAD), cargo build --release"
fi
[[ -x "$ferroflow" ]] || die "$ferroflow is not executable"
log "building the load generator"
CARGO_TARGET_DIR="$here/loadgen/target" cargo build --release --manifest-path "$here/loadgen/Cargo.toml" >&2
loadgen="$here/loadgen/target/release/ferroflow-loadgen"

db="soak_${stamp,,}"
"$psql_bin" "$pg_url" -v ON_ERROR_STOP=1 -qAt -c "CREATE DATABASE \"$db\""
port="$(free_port)"
url="http://127.0.0.1:$port"
mkdir -p "$state/artifacts"
"$ferroflow" server --host 127.0.0.1 --port "$port" --backend-store-uri "$pg_base/$db" \
  --artifacts-destination "$state/artifacts" >"$state/server.log" 2>&1 &
server_pid=$!
cleanup() {
  kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  if [[ -z "${SOAK_KEEP_DB:-}" ]]; then
    "$psql_bin" "$pg_url" -qAt -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
deadline=$((SECONDS + 60))
until curl -fsS "$url/health" >/dev/null 2>&1; do
  kill -0 "$server_pid" 2>/dev/null || die "server exited; see $state/server.log"
  ((SECONDS < deadline)) || die "server not healthy within 60 s"
  sleep 0.2
done

log "seeding $search_runs runs to search"
experiment_id="$("$loadgen" seed --url "$url" --runs "$search_runs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["experiment_id"])')"

log "peak: 10 s of closed-loop log-batch, 8 clients"
"$loadgen" log-batch --url "$url" --clients 8 --duration 10 --requests 400 >"$state/peak.json"
peak_rps="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests_per_s"])' "$state/peak.json")"
rate="$(python3 -c 'import sys; print(round(float(sys.argv[1]) * float(sys.argv[2]) / int(sys.argv[3]), 3))' "$peak_rps" "$fraction" "$clients")"
per_window="$(python3 -c 'import math,sys; print(math.ceil(float(sys.argv[1]) * 60) + 5)' "$rate")"
log "peak $peak_rps requests/s; soak at $rate requests/s per client x $clients for $minutes min"

sample() {  # rss_kib fds
  local rss fds
  rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status")"
  fds="$(find "/proc/$server_pid/fd" -mindepth 1 -maxdepth 1 | wc -l)"
  echo "{\"rss_kib\": $rss, \"fds\": $fds}"
}

: >"$state/windows.jsonl"
# At half of peak the database grows by roughly 1 GB a minute (22 GB after 25 minutes here): stop
# the soak, and report what it measured, before the disk runs out.
min_free_kib=$(( ${SOAK_MIN_FREE_GB:-8} * 1024 * 1024 ))
pg_data="${FERROFLOW_E2E_STATE:-/tmp/ferroflow-e2e}/pg"
for ((minute = 1; minute <= minutes; minute++)); do
  free_kib="$(df -Pk "$pg_data" | awk 'NR == 2 {print $4}')"
  if ((free_kib < min_free_kib)); then
    log "stopping after $((minute - 1)) minutes: $((free_kib / 1024 / 1024)) GiB left on the database's disk (SOAK_MIN_FREE_GB)"
    break
  fi
  "$loadgen" log-batch --url "$url" --clients "$clients" --rate "$rate" --duration 60 \
    --requests "$per_window" --label "minute=$minute" >"$state/lb-$minute.json" &
  lb=$!
  "$loadgen" search --url "$url" --experiment-id "$experiment_id" --clients 1 --duration 60 \
    --queries 100000 --label "minute=$minute" >"$state/search-$minute.json" &
  se=$!
  wait "$lb" "$se" || die "a load generator failed in minute $minute"
  kill -0 "$server_pid" 2>/dev/null || die "server exited in minute $minute; see $state/server.log"
  python3 - "$state" "$minute" "$(sample)" >>"$state/windows.jsonl" <<'EOF'
import json, sys
state, minute, mem = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
lb = json.load(open(f"{state}/lb-{minute}.json"))
se = json.load(open(f"{state}/search-{minute}.json"))
print(json.dumps({"minute": int(minute), "lb": lb, "search": se, **mem}))
EOF
  log "minute $minute/$minutes done"
done

python3 - "$state/windows.jsonl" "$out" "$source_note" "$peak_rps" "$rate" "$clients" <<'EOF'
import json, statistics, sys, platform, os, datetime
path, out, source, peak, rate, clients = sys.argv[1:7]
rows = [json.loads(l) for l in open(path)]
def p99(r): return r["lb"]["latency"]["p99_ms"]
lines = [f"# Soak, {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC",
         "",
         f"ferroflow ({source}) alone on Postgres; {os.cpu_count()} cores; peak log-batch "
         f"{float(peak):.1f} requests/s of 1000 points (8 clients, closed loop); soak at {rate} "
         f"requests/s per client x {clients} clients with one client searching beside it.",
         "",
         "| minute | points/s | log-batch p50 ms | p99 ms | errors | searches/s | search p99 ms | RSS MiB | open fds | load |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for r in rows:
    lb, se = r["lb"], r["search"]
    lines.append(f"| {r['minute']} | {lb['points_per_s']:.0f} | {lb['latency']['p50_ms']:.1f} | "
                 f"{p99(r):.1f} | {lb['errors'] + se.get('errors', 0)} | {se.get('queries_per_s', 0):.1f} | "
                 f"{se.get('latency', {}).get('p99_ms') or 0:.1f} | {r['rss_kib'] / 1024:.1f} | {r['fds']} | "
                 f"{lb.get('loadavg_after')} |")
# the first minute warms caches and pools: compare minutes 2-6 with the last five
first, last = rows[1:6], rows[-5:]
if len(rows) >= 7:
    rss_growth = statistics.mean(r["rss_kib"] for r in last) / statistics.mean(r["rss_kib"] for r in first) - 1
    fd_growth = statistics.mean(r["fds"] for r in last) / statistics.mean(r["fds"] for r in first) - 1
    p99_ratio = statistics.mean(p99(r) for r in last) / statistics.mean(p99(r) for r in first)
    lines += ["",
              f"- RSS: minutes 2-6 {statistics.mean(r['rss_kib'] for r in first)/1024:.1f} MiB, last 5 "
              f"{statistics.mean(r['rss_kib'] for r in last)/1024:.1f} MiB: growth {rss_growth:+.1%} "
              f"(target < 10%: {'met' if rss_growth < 0.10 else 'NOT met'})",
              f"- open fds: growth {fd_growth:+.1%} (target < 10%: {'met' if fd_growth < 0.10 else 'NOT met'})",
              f"- log-batch p99: last 5 minutes / minutes 2-6 = {p99_ratio:.2f}x "
              f"(target <= 1.5x: {'met' if p99_ratio <= 1.5 else 'NOT met'})",
              f"- errors: {sum(r['lb']['errors'] + r['search'].get('errors', 0) for r in rows)}"]
text = "\n".join(lines) + "\n"
os.makedirs(os.path.dirname(out), exist_ok=True)
open(out, "w").write(text)
print(text)
EOF
log "report written to $out (raw data in $state)"
