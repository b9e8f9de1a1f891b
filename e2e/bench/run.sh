#!/usr/bin/env bash
# ferroflow vs MLflow tracking-server benchmark, side by side on one Postgres.
#
#   bash e2e/bench/run.sh            # everything: setup, build, seed, measure, table
#
# Sets up the throwaway Postgres (e2e/setup/postgres.sh) and the Python venv with mlflow
# (e2e/setup/venv.sh), builds `ferroflow` (cargo build --release) and the load generator
# (e2e/bench/loadgen), creates fresh databases, starts three servers on free loopback ports:
#
#   ferroflow        target/release/ferroflow server
#   mlflow-default   mlflow server                        (3.x default: uvicorn, 4 workers)
#   mlflow-gunicorn  mlflow server --workers 4 --gunicorn-opts "--timeout 120"
#
# seeds a 10,000-run experiment in each, runs every measurement BENCH_REPS times (servers
# interleaved within a repetition), reads the servers' memory, stops them, and prints a
# markdown table that is also written to e2e/bench/results.md. See e2e/bench/README.md.
#
# ferroflow is built from the work tree by default; BENCH_FERROFLOW_REV=HEAD (or any commit)
# builds that committed revision from `git archive` instead (own target dir under the state
# directory), FERROFLOW_BIN=path uses a prebuilt binary.
#
# Knobs (environment): BENCH_REPS (3), BENCH_SEARCH_RUNS (10000), BENCH_CLIENTS (8),
# BENCH_LOG_BATCH_DURATION (20 s) / _REQUESTS (300 per client), BENCH_LOG_METRIC_DURATION
# (10 s) / _REQUESTS (20000 per client), BENCH_SEARCH_CLIENTS (4), BENCH_SEARCH_DURATION
# (20 s) / _QUERIES (400), BENCH_KEEPALIVE_REQUESTS (200), BENCH_SERVERS (all three, comma
# separated), BENCH_OUT (e2e/bench/results.md), BENCH_KEEP_DBS=1 keeps the databases,
# FERROFLOW_BENCH_STATE (logs; default /tmp/ferroflow-bench).
#
# A benchmark, not a test: CI never runs it. Traffic goes to 127.0.0.1 only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

reps="${BENCH_REPS:-3}"
search_runs="${BENCH_SEARCH_RUNS:-10000}"
clients="${BENCH_CLIENTS:-8}"
lb_duration="${BENCH_LOG_BATCH_DURATION:-20}"
lb_requests="${BENCH_LOG_BATCH_REQUESTS:-300}"
lm_duration="${BENCH_LOG_METRIC_DURATION:-10}"
lm_requests="${BENCH_LOG_METRIC_REQUESTS:-20000}"
search_clients="${BENCH_SEARCH_CLIENTS:-4}"
search_duration="${BENCH_SEARCH_DURATION:-20}"
search_queries="${BENCH_SEARCH_QUERIES:-400}"
ka_requests="${BENCH_KEEPALIVE_REQUESTS:-200}"
servers_csv="${BENCH_SERVERS:-ferroflow,mlflow-default,mlflow-gunicorn}"
out="${BENCH_OUT:-$here/results.md}"
start_timeout="${BENCH_START_TIMEOUT:-180}"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
state="${FERROFLOW_BENCH_STATE:-/tmp/ferroflow-bench}/$stamp"
mkdir -p "$state"
raw="$state/raw.jsonl"
: >"$raw"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

IFS=',' read -r -a servers <<<"$servers_csv"
for s in "${servers[@]}"; do
  case "$s" in ferroflow|mlflow-default|mlflow-gunicorn) ;; *) die "unknown server $s in BENCH_SERVERS" ;; esac
done

want() { [[ ",$servers_csv," == *",$1,"* ]]; }

# ---------------------------------------------------------------------------------------------
# setup

log "state and logs in $state"
eval "$(bash "$root/e2e/setup/postgres.sh")"
eval "$(bash "$root/e2e/setup/venv.sh")"
pg_url="$FERROFLOW_TEST_PG_URL"                      # postgres://postgres@127.0.0.1:54329/postgres
pg_base="postgresql://${pg_url#*://}"; pg_base="${pg_base%/*}"
psql_bin="$(command -v psql || echo "$(ls -d /usr/lib/postgresql/*/bin | sort -t/ -k4,4n | tail -n1)/psql")"
psql_cmd=("$psql_bin" "$pg_url" -v ON_ERROR_STOP=1 -qAt)
psql_db() { local db="$1"; shift; "$psql_bin" "${pg_url%/*}/$db" -v ON_ERROR_STOP=1 -qAt "$@"; }
command -v curl >/dev/null || die "curl is needed"

ferroflow=/bin/false; ferroflow_source="not measured"
if ! want ferroflow; then
  :
elif [[ -n "${FERROFLOW_BIN:-}" ]]; then
  ferroflow="$(cd "$(dirname "$FERROFLOW_BIN")" && pwd)/$(basename "$FERROFLOW_BIN")"
  [[ -x "$ferroflow" ]] || die "FERROFLOW_BIN=$FERROFLOW_BIN is not executable"
  ferroflow_source="prebuilt $ferroflow"
elif [[ -n "${BENCH_FERROFLOW_REV:-}" ]]; then
  # a committed revision, exported from git (the work tree may hold others' unfinished edits)
  rev="$(git rev-parse --short "$BENCH_FERROFLOW_REV")"
  src="${FERROFLOW_BENCH_STATE:-/tmp/ferroflow-bench}/src-$rev"
  if [[ ! -f "$src/Cargo.toml" ]]; then
    mkdir -p "$src" && git archive "$rev" | tar -x -C "$src"
  fi
  log "building ferroflow $rev in $src (cargo build --release)"
  (cd "$src" && CARGO_TARGET_DIR="${FERROFLOW_BENCH_STATE:-/tmp/ferroflow-bench}/target" cargo build --release >&2)
  ferroflow="${FERROFLOW_BENCH_STATE:-/tmp/ferroflow-bench}/target/release/ferroflow"
  ferroflow_source="commit $rev, cargo build --release"
else
  log "building ferroflow (cargo build --release)"
  cargo build --release >&2
  ferroflow="$root/target/release/ferroflow"
  rev="$(git rev-parse --short HEAD)"
  if [[ -n "$(git status --porcelain -- src migrations Cargo.toml Cargo.lock build.rs)" ]]; then
    ferroflow_source="work tree at $rev with uncommitted changes, cargo build --release"
  else
    ferroflow_source="commit $rev, cargo build --release"
  fi
fi
log "building the load generator"
cargo build --release --manifest-path "$here/loadgen/Cargo.toml" >&2
loadgen="$here/loadgen/target/release/ferroflow-loadgen"
mlflow="$FERROFLOW_VENV/bin/mlflow"
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true

# ---------------------------------------------------------------------------------------------
# databases and servers

db_ff="bench_ff_${stamp,,}"
db_ml="bench_mlflow_${stamp,,}"
db_mlg="bench_mlflow_gunicorn_${stamp,,}"
created_dbs=()
create_db() { "${psql_cmd[@]}" -c "CREATE DATABASE \"$1\""; created_dbs+=("$1"); }
db_url() { echo "$pg_base/$1"; }

declare -A pid url port
# free_port, group_alive
source "$here/lib.sh"

# launch_server NAME DB: starts the server in its own session (process group = its pid)
declare -A deadline_of
launch_server() {
  local name="$1" db="$2" p
  p="$(free_port)"
  local store; store="$(db_url "$db")"
  local artifacts="$state/artifacts-$name"
  mkdir -p "$artifacts"
  local cmd
  case "$name" in
    ferroflow) cmd=("$ferroflow" server --host 127.0.0.1 --port "$p" --backend-store-uri "$store" --artifacts-destination "$artifacts") ;;
    mlflow-default) cmd=("$mlflow" server --host 127.0.0.1 --port "$p" --backend-store-uri "$store" --artifacts-destination "$artifacts") ;;
    mlflow-gunicorn) cmd=("$mlflow" server --host 127.0.0.1 --port "$p" --backend-store-uri "$store" --artifacts-destination "$artifacts" --workers 4 "--gunicorn-opts=--timeout 120") ;;
  esac
  log "starting $name on 127.0.0.1:$p ($db): ${cmd[*]}"
  echo "$name: ${cmd[*]}" >>"$state/commands.txt"
  # its own session, so that stopping it reaches every worker: the session leader writes its
  # pid (= the process group id) before exec'ing the server
  local pidfile="$state/$name.pid"
  rm -f "$pidfile"
  setsid bash -c 'echo $$ >"$0"; cd "$1" && shift && exec "$@"' "$pidfile" "$artifacts" "${cmd[@]}" \
    >"$state/$name.log" 2>&1 &
  local deadline=$((SECONDS + start_timeout))
  until [[ -s "$pidfile" ]]; do
    (( SECONDS < deadline )) || die "$name did not start"
    sleep 0.05
  done
  pid[$name]="$(cat "$pidfile")"
  port[$name]=$p
  url[$name]="http://127.0.0.1:$p"
  deadline_of[$name]=$deadline
}

# wait_healthy NAME: until GET /health answers 200, the start deadline passes or it exits
wait_healthy() {
  local name="$1" deadline="${deadline_of[$1]}"
  until curl -fsS --max-time 2 "${url[$name]}/health" >/dev/null 2>&1; do
    group_alive "${pid[$name]}" || { tail -n 40 "$state/$name.log" >&2; die "$name exited during start-up"; }
    (( SECONDS < deadline )) || { tail -n 40 "$state/$name.log" >&2; die "$name not healthy within ${start_timeout}s"; }
    sleep 0.2
  done
  log "$name healthy (pid ${pid[$name]})"
}

stop_server() {
  local name="$1" p="${pid[$1]:-}"
  [[ -n "$p" ]] || return 0
  if group_alive "$p"; then
    kill -TERM -- "-$p" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while group_alive "$p" && (( SECONDS < deadline )); do sleep 0.2; done
    group_alive "$p" && { log "$name did not stop within 30 s of SIGTERM; SIGKILL"; kill -KILL -- "-$p" 2>/dev/null || true; }
  fi
  unset "pid[$name]"
}

cleanup() {
  local status=$?
  for name in "${!pid[@]}"; do stop_server "$name"; done
  if [[ "${BENCH_KEEP_DBS:-0}" != 1 ]]; then
    for db in "${created_dbs[@]}"; do
      "${psql_cmd[@]}" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" 2>/dev/null || true
    done
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

record() { cat >>"$raw"; tail -n1 "$raw" | cut -c1-400 >&2; }

# ---------------------------------------------------------------------------------------------
# machine facts

{
  python3 - "$ferroflow" "$ferroflow_source" "$mlflow" "${psql_cmd[@]}" <<'EOF'
import json, os, platform, subprocess, sys
ferroflow, ferroflow_source, mlflow, psql = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception as e:
        return f"? ({e})"
cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
mem_kib = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
print(json.dumps({
    "measure": "facts",
    "cores": os.cpu_count(),
    "cpu": cpu,
    "memory_gib": round(mem_kib / 1024 / 1024, 1),
    "kernel": platform.release(),
    "postgres": run(*psql, "-c", "SHOW server_version"),
    "mlflow": run(mlflow, "--version"),
    "gunicorn": run(os.path.join(os.path.dirname(mlflow), "python"), "-c", "import gunicorn; print(gunicorn.__version__)"),
    "uvicorn": run(os.path.join(os.path.dirname(mlflow), "python"), "-c", "import uvicorn; print(uvicorn.__version__)"),
    "python": run(os.path.join(os.path.dirname(mlflow), "python"), "--version"),
    "ferroflow": run(ferroflow, "--version") + " (" + ferroflow_source + ")",
    "rustc": run("rustc", "--version"),
    "loadavg_start": open("/proc/loadavg").read().split()[:3],
}))
EOF
} | record

# ---------------------------------------------------------------------------------------------
# servers and seeding: one 10,000-run experiment per database, identical content (a pure
# function of the run index, see `seed_run` in loadgen). ferroflow is seeded through its API
# (runs/create + log-batch per run). MLflow needs many minutes for that on 2 cores, so by default
# its experiment is created through its API and the runs are COPY'd into MLflow's own tables
# (`loadgen seed-sql`: the rows MLflow's store writes for the same calls);
# BENCH_MLFLOW_SEED=api seeds MLflow through its API too. A check below compares a few runs as
# read back through both servers' APIs.

declare -A exp_id db_of
for s in "${servers[@]}"; do
  case "$s" in
    ferroflow) db_of[$s]="$db_ff" ;;
    mlflow-default) db_of[$s]="$db_ml" ;;
    mlflow-gunicorn) db_of[$s]="$db_mlg" ;;
  esac
  create_db "${db_of[$s]}"
  launch_server "$s" "${db_of[$s]}"
done
for s in "${servers[@]}"; do wait_healthy "$s"; done

for s in "${servers[@]}"; do
  if [[ "$s" == ferroflow || "${BENCH_MLFLOW_SEED:-sql}" == api ]]; then
    log "seeding $search_runs runs into $s through its API"
    "$loadgen" seed --url "${url[$s]}" --runs "$search_runs" --clients "$clients" --experiment-name bench-search \
      --label "server=$s" | record
    exp_id[$s]="$(tail -n1 "$raw" | python3 -c 'import json,sys; print(json.load(sys.stdin)["experiment_id"])')"
  else
    log "seeding $search_runs runs into $s: experiment through the API, runs by COPY into MLflow's tables"
    t0=$SECONDS
    exp_id[$s]="$(curl -fsS --max-time 60 -H 'Content-Type: application/json' -d '{"name":"bench-search"}' \
      "${url[$s]}/api/2.0/mlflow/experiments/create" | python3 -c 'import json,sys; print(json.load(sys.stdin)["experiment_id"])')"
    "$loadgen" seed-sql --experiment-id "${exp_id[$s]}" --runs "$search_runs" | psql_db "${db_of[$s]}" >&2
    printf '{"measure":"seed","method":"sql","server":"%s","experiment_id":"%s","runs":%s,"elapsed_s":%s}\n' \
      "$s" "${exp_id[$s]}" "$search_runs" "$((SECONDS - t0))" | record
  fi
done
# same planner statistics everywhere before measuring
for db in "${created_dbs[@]}"; do psql_db "$db" -c "VACUUM ANALYZE"; done

# the seeded runs must read back identically through every server's API
check_args=()
for s in "${servers[@]}"; do check_args+=("$s=${url[$s]}=${exp_id[$s]}"); done
python3 "$here/check_seed.py" "$search_runs" "${check_args[@]}" | record \
  || die "the seeded experiments differ between servers (see above)"
# ---------------------------------------------------------------------------------------------
# measurements: per repetition, every server in turn (so machine noise spreads over all three).
# Besides rates and latencies, each timed window reports the CPU time the server's processes and
# its database's PostgreSQL backends used (from /proc): a per-request cost that depends much less
# on other work sharing the machine than throughput does.
clk_tck="$(getconf CLK_TCK 2>/dev/null || echo 100)"

for rep in $(seq 1 "$reps"); do
  for s in "${servers[@]}"; do
    u="${url[$s]}"; lab=(--label "server=$s" --label "rep=$rep")
    cpu=(--server-pid "${pid[$s]}" --db "${db_of[$s]}" --clk-tck "$clk_tck")
    log "rep $rep/$reps: $s"
    "$loadgen" log-batch --url "$u" --clients "$clients" --metrics 1000 --keys 10 \
      --requests "$lb_requests" --duration "$lb_duration" "${cpu[@]}" "${lab[@]}" | record
    "$loadgen" log-metric --url "$u" --clients "$clients" \
      --requests "$lm_requests" --duration "$lm_duration" "${cpu[@]}" "${lab[@]}" | record
    for mr in 100 1000; do
      "$loadgen" search --url "$u" --experiment-id "${exp_id[$s]}" --max-results "$mr" \
        --clients "$search_clients" --queries "$search_queries" --duration "$search_duration" "${cpu[@]}" "${lab[@]}" | record
    done
    "$loadgen" keepalive --url "$u" --requests "$ka_requests" "${lab[@]}" | record
  done
done

for s in "${servers[@]}"; do
  "$loadgen" rss --pid "${pid[$s]}" --label "server=$s" | record
done
python3 -c 'import json; print(json.dumps({"measure":"end","loadavg_end":open("/proc/loadavg").read().split()[:3]}))' | record

for s in "${servers[@]}"; do stop_server "$s"; done

# ---------------------------------------------------------------------------------------------
# report

python3 "$here/report.py" "$raw" "$state/commands.txt" >"$state/results.md"
cp "$state/results.md" "$out"
cat "$out"
log "raw results: $raw; table written to $out"
