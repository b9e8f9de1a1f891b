#!/usr/bin/env bash
# Artifact throughput: ferroflow vs MLflow's server, a 1 GiB file up and down through the
# proxied artifact API, side by side on one machine, artifacts on local disk.
#
#   bash e2e/bench/artifacts.sh      # setup, build, measure, table in e2e/bench/artifacts-results.md
#
# Starts `ferroflow server` (cargo build --release, or FERROFLOW_BIN=path) and MLflow's
# `mlflow server` (3.17.2 from the venv of e2e/setup/venv.sh, its default configuration) on free
# loopback ports, each with a SQLite backend store and `--artifacts-destination` a folder under
# the state directory. Then, BENCH_REPS times, for each server in turn (interleaved, so machine
# noise spreads over both):
#
#   upload    curl -T big.bin PUT /api/2.0/mlflow-artifacts/artifacts/bench/<rep>/big.bin
#             (what the mlflow client does for mlflow-artifacts: URIs; curl streams the file)
#   download  curl GET of the same URL into a file; its sha256 must equal the original's
#
# MiB/s = 1024 MiB / curl's time_total (connect included). Memory during each transfer:
# ferroflow's peak RSS is the kernel's VmHWM from /proc/<pid>/status, reset before each transfer
# (`echo 5 > /proc/<pid>/clear_refs`) so it is that transfer's peak; MLflow's is the highest sum
# of VmRSS over its process tree (CLI, uvicorn master, workers) sampled every 50 ms. The uploaded
# and downloaded copies are deleted after each repetition.
#
# Knobs (environment): BENCH_REPS (3), BENCH_FILE_MIB (1024), BENCH_OUT
# (e2e/bench/artifacts-results.md), FERROFLOW_BIN (prebuilt binary), FERROFLOW_BENCH_STATE
# (default /tmp/ferroflow-bench; the file, the artifacts and logs go in a fresh subfolder, which
# needs ~4 GiB free on a local disk). A benchmark, not a test: CI never runs it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

reps="${BENCH_REPS:-3}"
file_mib="${BENCH_FILE_MIB:-1024}"
out="${BENCH_OUT:-$here/artifacts-results.md}"
start_timeout="${BENCH_START_TIMEOUT:-180}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
state="${FERROFLOW_BENCH_STATE:-/tmp/ferroflow-bench}/artifacts-$stamp"
mkdir -p "$state"
raw="$state/raw.jsonl"
: >"$raw"
servers=(ferroflow mlflow)

log() { printf '[bench-artifacts %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v curl >/dev/null || die "curl is needed"

log "state and logs in $state"
eval "$(bash "$root/e2e/setup/venv.sh")"
mlflow="$FERROFLOW_VENV/bin/mlflow"
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true

if [[ -n "${FERROFLOW_BIN:-}" ]]; then
  ferroflow="$(cd "$(dirname "$FERROFLOW_BIN")" && pwd)/$(basename "$FERROFLOW_BIN")"
  [[ -x "$ferroflow" ]] || die "FERROFLOW_BIN=$FERROFLOW_BIN is not executable"
  ferroflow_source="prebuilt $ferroflow"
else
  log "building ferroflow (cargo build --release)"
  cargo build --release --bin ferroflow >&2
  ferroflow="${CARGO_TARGET_DIR:-$root/target}/release/ferroflow"
  ferroflow_source="commit $(git rev-parse --short HEAD)"
  if [[ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock)" ]]; then
    ferroflow_source+=" with uncommitted changes in the work tree"
  fi
  ferroflow_source+=", cargo build --release"
fi

# ---------------------------------------------------------------------------------------------
# servers

declare -A pid url
# free_port, group_alive
source "$here/lib.sh"


launch() {
  local name="$1" p artifacts="$state/artifacts-$1" cmd
  p="$(free_port)"
  mkdir -p "$artifacts"
  local common=(--host 127.0.0.1 --port "$p" --backend-store-uri "sqlite:///$state/$name.db"
    --artifacts-destination "$artifacts")
  case "$name" in
    ferroflow) cmd=("$ferroflow" server "${common[@]}") ;;
    mlflow) cmd=("$mlflow" server "${common[@]}") ;;
  esac
  log "starting $name on 127.0.0.1:$p: ${cmd[*]}"
  echo "$name: ${cmd[*]}" >>"$state/commands.txt"
  local pidfile="$state/$name.pid"
  # its own session (process group = its pid), so that stopping it reaches every worker
  # shellcheck disable=SC2016  # $$ and $0 belong to the inner bash
  setsid bash -c 'echo $$ >"$0"; cd "$1" && shift && exec "$@"' "$pidfile" "$state" "${cmd[@]}" \
    >"$state/$name.log" 2>&1 &
  until [[ -s "$pidfile" ]]; do sleep 0.05; done
  pid[$name]="$(cat "$pidfile")"
  url[$name]="http://127.0.0.1:$p"
}

wait_healthy() {
  local name="$1" deadline=$((SECONDS + start_timeout))
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

sampler_pid=""
cleanup() {
  local status=$?
  if [[ -n "$sampler_pid" ]]; then kill "$sampler_pid" 2>/dev/null || true; fi
  for name in "${!pid[@]}"; do stop_server "$name"; done
  rm -f "$state/big.bin" "$state/download.bin"
  rm -rf "$state"/artifacts-*
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for s in "${servers[@]}"; do launch "$s"; done
for s in "${servers[@]}"; do wait_healthy "$s"; done

# ---------------------------------------------------------------------------------------------
# memory

# tree_rss_sampler PGID OUT: samples the summed VmRSS (KiB) of the process group every 50 ms
# until killed (SIGTERM), then writes the highest sum to OUT
tree_rss_sampler() {
  python3 - "$1" "$2" <<'EOF' &
import os, signal, sys, time
pgid, out = int(sys.argv[1]), sys.argv[2]
peak = 0
def done(*_):
    with open(out, "w") as f:
        f.write(str(peak))
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
while True:
    total = 0
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            stat = open(f"/proc/{p}/stat").read()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
    peak = max(peak, total)
    time.sleep(0.05)
EOF
  sampler_pid=$!
}

status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# measure NAME KIND REP CURL-ARGS...: one timed transfer, recorded as a JSON line
measure() {
  local name="$1" kind="$2" rep="$3"
  shift 3
  local p="${pid[$name]}" peakfile="$state/peak" load_before timing hwm_reset=0
  load_before="$(cut -d' ' -f1 /proc/loadavg)"
  if [[ "$name" == ferroflow ]] && echo 5 2>/dev/null >"/proc/$p/clear_refs"; then hwm_reset=1; fi
  rm -f "$peakfile"
  tree_rss_sampler "$p" "$peakfile"
  timing="$(curl -sS --fail-with-body --max-time 1800 -H 'Expect:' -w '%{http_code} %{time_total} %{size_upload} %{size_download}' "$@")" \
    || { kill "$sampler_pid"; die "$name $kind failed: $timing"; }
  kill -TERM "$sampler_pid"; wait "$sampler_pid" 2>/dev/null || true; sampler_pid=""
  local code total up down
  read -r code total up down <<<"${timing##*$'\n'}"
  [[ "$code" == 200 ]] || die "$name $kind answered HTTP $code"
  local hwm=null
  [[ "$name" == ferroflow ]] && hwm="$(status_kib "$p" VmHWM)"
  printf '{"server":"%s","kind":"%s","rep":%s,"seconds":%s,"bytes_up":%s,"bytes_down":%s,"vmhwm_kib":%s,"hwm_reset":%s,"tree_rss_peak_kib":%s,"load1_before":%s,"load1_after":%s}\n' \
    "$name" "$kind" "$rep" "$total" "${up%.*}" "${down%.*}" "$hwm" "$hwm_reset" "$(cat "$peakfile")" \
    "$load_before" "$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$raw" >&2
}

# ---------------------------------------------------------------------------------------------
# the file and the transfers

log "writing a ${file_mib} MiB random file"
head -c "$((file_mib << 20))" /dev/urandom >"$state/big.bin"
want_sha="$(sha256sum "$state/big.bin" | cut -d' ' -f1)"
bytes=$((file_mib << 20))
{
  printf '{"facts":true,"loadavg_start":"%s","uptime_start":"%s","cores":%s,"cpu":"%s","mem_gib":%s,"kernel":"%s",' \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$(uptime)" "$(nproc)" \
    "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
    "$(awk '/^MemTotal/ {printf "%.1f", $2/1024/1024}' /proc/meminfo)" "$(uname -r)"
  printf '"mlflow":"%s","python":"%s","ferroflow":"%s (%s)","rustc":"%s","disk":"%s","file_mib":%s}\n' \
    "$("$mlflow" --version 2>/dev/null)" "$("$FERROFLOW_VENV/bin/python" --version)" \
    "$("$ferroflow" --version)" "$ferroflow_source" "$(rustc --version 2>/dev/null || echo '?')" \
    "$(df -h --output=source,fstype "$state" | tail -n1 | tr -s ' ')" "$file_mib"
} >>"$raw"

for rep in $(seq 1 "$reps"); do
  for s in "${servers[@]}"; do
    target="${url[$s]}/api/2.0/mlflow-artifacts/artifacts/bench/$rep/big.bin"
    log "rep $rep/$reps: $s upload"
    measure "$s" upload "$rep" -o /dev/null -T "$state/big.bin" -H 'Content-Type: application/octet-stream' "$target"
    stored="$state/artifacts-$s/bench/$rep/big.bin"
    [[ "$(stat -c %s "$stored")" == "$bytes" ]] || die "$s stored $(stat -c %s "$stored") bytes, not $bytes"
    log "rep $rep/$reps: $s download"
    measure "$s" download "$rep" -o "$state/download.bin" "$target"
    got_sha="$(sha256sum "$state/download.bin" | cut -d' ' -f1)"
    [[ "$got_sha" == "$want_sha" ]] || die "$s download sha256 $got_sha differs from the upload's $want_sha"
    rm -f "$state/download.bin"
    rm -rf "${state:?}/artifacts-$s/bench/$rep"
  done
done
printf '{"end":true,"loadavg_end":"%s","uptime_end":"%s"}\n' "$(cut -d' ' -f1-3 /proc/loadavg)" "$(uptime)" >>"$raw"
for s in "${servers[@]}"; do stop_server "$s"; done

# ---------------------------------------------------------------------------------------------
# report

python3 - "$raw" "$state/commands.txt" >"$state/results.md" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
commands = open(sys.argv[2]).read().strip().splitlines()
facts = next(r for r in rows if r.get("facts"))
end = next(r for r in rows if r.get("end"))
runs = [r for r in rows if "server" in r]
mib = facts["file_mib"]
def rates(server, kind):
    return [mib / r["seconds"] for r in runs if r["server"] == server and r["kind"] == kind]
def med(xs):
    return statistics.median(xs) if xs else float("nan")
ff_hwm = max(r["vmhwm_kib"] for r in runs if r["server"] == "ferroflow") / 1024
ml_rss = max(r["tree_rss_peak_kib"] for r in runs if r["server"] == "mlflow") / 1024
ff_tree = max(r["tree_rss_peak_kib"] for r in runs if r["server"] == "ferroflow") / 1024
reps = max(r["rep"] for r in runs)
out = []
p = out.append
p("# ferroflow vs MLflow: artifact throughput, 1 GiB through the proxied artifact API")
p("")
p(f"Produced by `bash e2e/bench/artifacts.sh`: {reps} repetition(s), servers interleaved within each; "
  f"throughput is the median over them. See the script's header for the method.")
p("")
p("## Machine")
p("")
p(f"- {facts['cores']} cores ({facts['cpu']}), {facts['mem_gib']} GiB memory, Linux {facts['kernel']}; "
  f"artifacts and the test file on {facts['disk']}")
p(f"- `uptime` at start: `{facts['uptime_start'].strip()}`")
p(f"- `uptime` at end: `{end['uptime_end'].strip()}` (the 2 cores are shared with other work)")
p(f"- {facts['mlflow']} (`mlflow server`, its default configuration), {facts['python']}")
p(f"- ferroflow: {facts['ferroflow']}, {facts['rustc']}")
p("")
p("## Results")
p("")
p("| measure | ferroflow | MLflow | ferroflow vs MLflow | target | met |")
p("|---|---:|---:|---:|---:|---:|")
for kind in ("upload", "download"):
    f, m = med(rates("ferroflow", kind)), med(rates("mlflow", kind))
    ok = "yes" if f >= m else "**no**"
    p(f"| {kind} of {mib} MiB: MiB/s (median) | {f:,.0f} | {m:,.0f} | {f/m:.1f}x | ≥ MLflow | {ok} |")
ok = "yes" if ff_hwm < 64 else "**no**"
p(f"| peak RSS during the transfers (MiB) | {ff_hwm:.1f} (VmHWM) | {ml_rss:,.0f} (sum over its processes, sampled) | {ml_rss/ff_hwm:.0f}x lower | < 64 MiB | {ok} |")
p("")
p("## Every transfer")
p("")
p("| rep | server | transfer | seconds | MiB/s | peak RSS (MiB) | 1-min load before → after |")
p("|---:|---|---|---:|---:|---:|---|")
for r in runs:
    peak = (f"{r['vmhwm_kib']/1024:.1f} VmHWM" + ("" if r["hwm_reset"] else " (since start)")) if r["server"] == "ferroflow" \
        else f"{r['tree_rss_peak_kib']/1024:,.0f} sampled"
    p(f"| {r['rep']} | {r['server']} | {r['kind']} | {r['seconds']:.2f} | {mib / r['seconds']:,.0f} | {peak} | {r['load1_before']} → {r['load1_after']} |")
p("")
p("Every download's sha256 equalled the uploaded file's; each server stored exactly "
  f"{mib << 20} bytes. Uploads: `curl -T` (streams the file, `Expect:` disabled); downloads: "
  "`curl -o` to a file on the same disk. MiB/s = file size ÷ curl's `time_total`.")
p("")
p("Commands:")
p("")
for c in commands:
    p(f"- `{c}`")
print("\n".join(out))
EOF
cp "$state/results.md" "$out"
cat "$out"
log "raw results: $raw; table written to $out"
