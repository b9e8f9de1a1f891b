#!/usr/bin/env bash
# Scale curves (issue #20): ferroflow at 10k, 100k and 1M runs in one experiment, MLflow at 10k
# and 100k for comparison, each server alone on a fresh PostgreSQL database per size.
#
#   bash e2e/bench/scale.sh                                   # all sizes, then the table
#   SCALE_SIZES=10000,100000 bash e2e/bench/scale.sh          # a subset
#
# Reuses run.sh's functions (sourced: start/stop a server alone, wait until it is quiet, judged
# warm-up, loadgen windows, records) and its knobs (BENCH_*; shorter warm-up windows here).
#
# First a reference: ferroflow on a fresh database, 10,000 runs seeded through its API
# (`loadgen seed`: runs/create + log-batch per run), sample runs read back and kept. Then per size
# and server (ferroflow; mlflow-gunicorn, MLflow's faster configuration, at SCALE_MLFLOW_SIZES):
#
#   1. a fresh database, the server started on it (which migrates its schema), GET /health;
#   2. experiment `bench-search` created through the API; its runs loaded by COPY into the
#      server's own tables (`loadgen seed-sql --schema ferroflow|mlflow`: the rows each store
#      writes for runs/create + log-batch; the same generator as the API seeding, 5 params,
#      3 tags + mlflow.runName, 4 metrics at 3 steps per run); 10,000 more experiments by
#      INSERT … SELECT generate_series; VACUUM ANALYZE;
#   3. check_seed.py: the sample runs, read back through the API, equal the API-seeded
#      reference field by field (params, tags, latest metrics, whole histories), and the run
#      count through paged runs/search equals the size;
#   4. quiet (run.sh's wait_quiet), log-batch warmed until two windows agree, then measured
#      (8 clients, 1000 points per request, into new runs next to the big experiment);
#   5. runs/search (the three queries of run.sh, max_results 100) and experiments/search
#      (max_results 100), closed loop, each after one untimed query of each kind;
#   6. the server stopped, its database dropped; load average before and after recorded.
#
# Knobs: SCALE_SIZES (10000,100000,1000000), SCALE_MLFLOW_SIZES (10000,100000; empty: none),
# SCALE_EXPERIMENTS (10000), SCALE_SEARCH_DURATION (15 s) / SCALE_SEARCH_QUERIES (2000),
# SCALE_OUT (e2e/bench/runs/<date>-scale.md), SCALE_FERROFLOW_SQL (a file of SQL run on
# ferroflow's database after seeding, before ANALYZE: e.g. a new migration a prebuilt binary
# predates; recorded in the report); BENCH_* as in run.sh (FERROFLOW_BIN, BENCH_LOADGEN,
# BENCH_WARMUP_WINDOW 5 s here, BENCH_WARMUP_MAX 6, BENCH_LOG_BATCH_DURATION 10 s, …).
# PostgreSQL: e2e/setup/postgres.sh's cluster (FERROFLOW_E2E_STATE / FERROFLOW_PG_PORT).
# A million runs are ~26 million rows, ~5 GB with indexes: watch the disk.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${BENCH_WARMUP_WINDOW:=5}" "${BENCH_WARMUP_MAX:=6}" "${BENCH_LOG_BATCH_DURATION:=10}"
export BENCH_WARMUP_WINDOW BENCH_WARMUP_MAX BENCH_LOG_BATCH_DURATION
BENCH_SERVERS=ferroflow,mlflow-gunicorn BENCH_BACKEND=postgres
export BENCH_SERVERS BENCH_BACKEND
# shellcheck source-path=SCRIPTDIR source=run.sh
source "$here/run.sh"

sizes_csv="${SCALE_SIZES:-10000,100000,1000000}"
mlflow_sizes_csv="${SCALE_MLFLOW_SIZES-10000,100000}"
experiments="${SCALE_EXPERIMENTS:-10000}"
scale_search_duration="${SCALE_SEARCH_DURATION:-15}"
scale_search_queries="${SCALE_SEARCH_QUERIES:-2000}"
scale_out="${SCALE_OUT:-$here/runs/$(date -u +%Y-%m-%d)-scale.md}"
reference_runs=10000
# run indexes every size holds: first, second, a third, half, last of the reference
sample="0,1,3333,5000,9999"

IFS=',' read -r -a sizes <<<"$sizes_csv"
for n in "${sizes[@]}"; do (( n >= reference_runs )) || die "SCALE_SIZES: $n < $reference_runs (the sample needs them)"; done

# api NAME PATH JSON: POST to the server, answer on stdout
api() { curl -fsS --max-time 60 -H 'Content-Type: application/json' -d "$2" "$url/api/2.0/mlflow$1"; }
json_field() { python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1:]: v=v[k]
print(v)' "$@"; }

# reference: 10,000 runs through ferroflow's API; check_seed.py keeps the sample
reference() {
  start_server ferroflow reference
  log "reference: $reference_runs runs seeded through ferroflow's API"
  "$loadgen" seed --url "$url" --runs "$reference_runs" --clients "$clients" --experiment-name bench-search \
    --label server=ferroflow --label size=reference | record
  exp_id="$(last_field experiment_id)"
  python3 "$here/check_seed.py" --reference "$state/seed-reference.json" --sample "$sample" \
    "$reference_runs" "ferroflow-api=$url=$exp_id" | record || die "reference seed check failed"
  stop_server
  drop_store
}

# seed_size NAME SIZE: the big experiment and the experiments by SQL, ANALYZE, read-back check
seed_size() {
  local name="$1" size="$2" t0=$SECONDS schema=mlflow location=""
  exp_id="$(api /experiments/create '{"name":"bench-search"}' | json_field experiment_id)"
  if [[ "$name" == ferroflow ]]; then
    schema=ferroflow
    location="$(curl -fsS --max-time 60 "$url/api/2.0/mlflow/experiments/get?experiment_id=$exp_id" | json_field experiment artifact_location)"
  fi
  log "seeding $size runs into $name by COPY into its own tables ($schema schema)"
  "$loadgen" seed-sql --schema "$schema" --experiment-id "$exp_id" --runs "$size" --artifact-location "${location:-unused}" \
    | psql_db "$db" >&2
  local runs_s=$((SECONDS - t0)); t0=$SECONDS
  # the experiments page: `experiments` more experiments, named and timed apart
  psql_db "$db" -c "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, last_update_time)
    SELECT 'scale-exp-' || lpad(g::text, 5, '0'), 'file:///tmp/scale-exp-' || g, 'active',
           1700000000000 + g * 1000, 1700000000000 + g * 1000
    FROM generate_series(1, $experiments) AS g"
  local experiments_s=$((SECONDS - t0)); t0=$SECONDS
  if [[ "$name" == ferroflow && -n "${SCALE_FERROFLOW_SQL:-}" ]]; then
    log "applying $SCALE_FERROFLOW_SQL to ferroflow's database"
    psql_db "$db" -f "$SCALE_FERROFLOW_SQL" >&2
  fi
  psql_db "$db" -c "VACUUM ANALYZE"
  local analyze_s=$((SECONDS - t0))
  printf '{"measure":"seed","method":"COPY (loadgen seed-sql --schema %s) + INSERT SELECT generate_series","server":"%s","size":%s,"experiment_id":"%s","runs":%s,"experiments":%s,"runs_s":%s,"experiments_s":%s,"vacuum_analyze_s":%s,"database_bytes":%s,"extra_sql":"%s"}\n' \
    "$schema" "$name" "$size" "$exp_id" "$size" "$experiments" "$runs_s" "$experiments_s" "$analyze_s" \
    "$(psql_db "$db" -c "SELECT pg_database_size(current_database())")" \
    "$([[ "$name" != ferroflow ]] || basename "${SCALE_FERROFLOW_SQL:-}")" | record
  python3 "$here/check_seed.py" --reference "$state/seed-reference.json" --sample "$sample" \
    "$size" "$name=$url=$exp_id" | record || die "the seeded experiment of $name at $size differs from the API-seeded reference"
}

# measure_size NAME SIZE: one server alone at one size
measure_size() {
  local name="$1" size="$2" lab=(--label "server=$1" --label "size=$2")
  local load_before; load_before="$(loadavg3)"
  start_server "$name" "$size"
  seed_size "$name" "$size"
  wait_quiet "$name" "$size"
  warm_up "$name" "$size" log-batch
  load log-batch "$lb_duration" "${lab[@]}" | record
  "$loadgen" search --url "$url" --experiment-id "$exp_id" --max-results 100 \
    --clients "$search_clients" --queries "$scale_search_queries" --duration "$scale_search_duration" \
    "${cpu_args[@]}" "${lab[@]}" | record
  "$loadgen" search --kind experiments --url "$url" --max-results 100 \
    --clients "$search_clients" --queries "$scale_search_queries" --duration "$scale_search_duration" \
    "${cpu_args[@]}" "${lab[@]}" | record
  stop_server
  drop_store
  printf '{"measure":"turn","server":"%s","size":%s,"loadavg_before":"%s","loadavg_after":"%s"}\n' \
    "$name" "$size" "$load_before" "$(loadavg3)" | record
}

setup
record_facts
{
  echo "ferroflow: $ferroflow server --host 127.0.0.1 --port P --backend-store-uri postgresql://…/DB --artifacts-destination DIR"
  echo "mlflow-gunicorn: $mlflow server --host 127.0.0.1 --port P --backend-store-uri postgresql://…/DB --artifacts-destination DIR --workers 4 --gunicorn-opts=--timeout 120"
} >"$state/commands.txt"
reference
for n in "${sizes[@]}"; do
  log "size $n: ferroflow"
  measure_size ferroflow "$n"
  if [[ ",$mlflow_sizes_csv," == *",$n,"* ]]; then
    log "size $n: mlflow-gunicorn"
    measure_size mlflow-gunicorn "$n"
  fi
done
python3 -c 'import json; print(json.dumps({"measure":"end","loadavg_end":open("/proc/loadavg").read().split()[:3]}))' | record

python3 "$here/scale_report.py" "$raw" "$state/commands.txt" >"$state/scale.md"
mkdir -p "$(dirname "$scale_out")"
cp "$state/scale.md" "$scale_out"
cat "$scale_out"
log "raw results: $raw; table written to $scale_out"
