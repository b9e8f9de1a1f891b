#!/usr/bin/env bash
# A throwaway S3-compatible server (MinIO, built from Go modules) for the artifact tests.
#
#   eval "$(e2e/setup/s3.sh)"   # build when missing, start, create the bucket; the last stdout
#                               # lines are `export FERROFLOW_E2E_S3_…=…` (see below)
#   e2e/setup/s3.sh stop        # stop it (the data directory stays, start reuses it)
#   e2e/setup/s3.sh status      # exit 0 when it answers
#   e2e/setup/s3.sh build       # only build (or find) the binary; prints its path
#
# Why MinIO, and how: it is a real S3 server (SigV4, multipart uploads, ListObjectsV2), and the
# only one we can get here without container images or release downloads: the Go module proxy
# serves its source. MinIO tags releases as RELEASE.<date>, not semver, and this proxy refuses
# to resolve such tags, so we pin the pseudo-version the proxy answers for @latest (the final
# commit of the now source-only repository). Its go.mod has no replace directives, so a plain
# `go install module@version` builds it (go.sum checks against the checksum database). The
# binary is cached in ${FERROFLOW_CACHE:-~/.cache/ferroflow}/minio/bin-<key>, keyed by the
# version, the build flags and the Go version: the cold build takes minutes on 2 cores, the
# warm path none.
#
# The server listens on 127.0.0.1 only, on a free port chosen at its first start (kept while it
# runs; FERROFLOW_S3_PORT picks one), keeps its data in ${FERROFLOW_E2E_STATE:-/tmp/ferroflow-e2e}/s3,
# and has fixed test credentials: it is for tests, never for data anyone wants to keep.
# Idempotent: starting a running server only checks it answers and the bucket exists.
# Everything except the export lines goes to stderr. The exported names are our own (not
# AWS_*), so that only the servers the tests point at S3 see them:
#
#   FERROFLOW_E2E_S3_ENDPOINT  http://127.0.0.1:<port>
#   FERROFLOW_E2E_S3_BUCKET    ferroflow-e2e
#   FERROFLOW_E2E_S3_ACCESS_KEY_ID / FERROFLOW_E2E_S3_SECRET_ACCESS_KEY / FERROFLOW_E2E_S3_REGION
set -euo pipefail

MINIO_MODULE=github.com/minio/minio
MINIO_VERSION="${FERROFLOW_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
BUILD_FLAGS=(-trimpath -ldflags "-s -w")

state="${FERROFLOW_E2E_STATE:-/tmp/ferroflow-e2e}"
s3dir="$state/s3"
data="$s3dir/data"
pidfile="$s3dir/minio.pid"
portfile="$s3dir/port"
logfile="$s3dir/minio.log"
cache="${FERROFLOW_CACHE:-$HOME/.cache/ferroflow}/minio"
bucket="${FERROFLOW_E2E_S3_BUCKET_NAME:-ferroflow-e2e}"
access_key=ferroflow
secret_key=ferroflow-e2e-secret
region=us-east-1
start_timeout="${FERROFLOW_S3_START_TIMEOUT:-60}"

log() { printf 's3.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# build: prints the path of the minio binary, building it when the cache has none for this key
build() {
  command -v go >/dev/null || die "go not found on PATH (needed to build MinIO from Go modules)"
  export CGO_ENABLED=0 GOTOOLCHAIN=local
  local key out
  key=$(printf '%s\n' "$MINIO_MODULE@$MINIO_VERSION" "${BUILD_FLAGS[*]}" "$(go env GOVERSION)" | sha256sum | cut -c1-16)
  out="$cache/bin-$key"
  if [[ ! -x "$out/minio" ]]; then
    mkdir -p "$cache"
    # two callers must not build into the same folder
    exec 8>"$cache/.build.lock"
    flock 8
    if [[ ! -x "$out/minio" ]]; then
      log "building MinIO $MINIO_VERSION from Go modules into $out (cold: minutes on 2 cores)"
      local tmp="$out.tmp.$$" started=$SECONDS
      rm -rf "$tmp" && mkdir -p "$tmp"
      GOBIN="$tmp" go install "${BUILD_FLAGS[@]}" "$MINIO_MODULE@$MINIO_VERSION" >&2 \
        || { rm -rf "$tmp"; die "go install $MINIO_MODULE@$MINIO_VERSION failed"; }
      rm -rf "$out" && mv "$tmp" "$out"
      log "built in $((SECONDS - started))s"
      # keep one build: older keys are dead weight (~100 MB each)
      find "$cache" -maxdepth 1 -name 'bin-*' ! -name "bin-$key" -exec rm -rf {} +
    fi
    exec 8>&-
  fi
  echo "$out/minio"
}

running_pid() {
  local pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  # the pid may have been reused by something else since
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "minio server" || return 1
  echo "$pid"
}

endpoint() { echo "http://127.0.0.1:$(cat "$portfile")"; }

is_ready() {
  [[ -f "$portfile" ]] && curl -fsS --max-time 2 -o /dev/null "$(endpoint)/minio/health/ready" 2>/dev/null
}

# s3 METHOD PATH [curl args...]: a SigV4-signed request; prints the HTTP status
s3() {
  local method="$1" path="$2"
  shift 2
  curl -sS --max-time 30 -o "$s3dir/last-response" -w '%{http_code}' -X "$method" \
    --aws-sigv4 "aws:amz:$region:s3" --user "$access_key:$secret_key" "$@" "$(endpoint)$path"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  local minio
  minio="$(build)"
  mkdir -p "$data"
  exec 9>"$s3dir/.start.lock"
  flock 9
  if running_pid >/dev/null; then
    log "already running (pid $(running_pid), $(endpoint))"
  else
    local port="${FERROFLOW_S3_PORT:-$(free_port)}"
    echo "$port" >"$portfile"
    log "starting MinIO on 127.0.0.1:$port, data $data (log $logfile)"
    # its own session, so the shell that started it (and its Ctrl-C) does not take it down
    MINIO_ROOT_USER="$access_key" MINIO_ROOT_PASSWORD="$secret_key" MINIO_REGION="$region" \
      MINIO_BROWSER=off MINIO_UPDATE=off MINIO_CI_CD=1 \
      setsid "$minio" server --quiet --address "127.0.0.1:$port" "$data" \
      >>"$logfile" 2>&1 </dev/null 9>&- &
    echo $! >"$pidfile"
    local deadline=$((SECONDS + start_timeout))
    until is_ready; do
      running_pid >/dev/null || { tail -n 30 "$logfile" >&2; die "MinIO exited during start-up"; }
      (( SECONDS < deadline )) || { tail -n 30 "$logfile" >&2; die "MinIO not ready within ${start_timeout}s"; }
      sleep 0.2
    done
  fi
  is_ready || die "MinIO runs (pid $(running_pid)) but does not answer on $(endpoint)"

  local code
  code="$(s3 PUT "/$bucket")"
  case "$code" in
    200) log "created bucket $bucket" ;;
    409) ;; # BucketAlreadyOwnedByYou
    *) cat "$s3dir/last-response" >&2; die "creating bucket $bucket answered HTTP $code" ;;
  esac
  code="$(s3 GET "/$bucket?list-type=2&max-keys=1")"
  [[ "$code" == 200 ]] || { cat "$s3dir/last-response" >&2; die "listing bucket $bucket answered HTTP $code"; }
  log "ready: $(endpoint), bucket $bucket"
  echo "export FERROFLOW_E2E_S3_ENDPOINT=$(endpoint)"
  echo "export FERROFLOW_E2E_S3_BUCKET=$bucket"
  echo "export FERROFLOW_E2E_S3_ACCESS_KEY_ID=$access_key"
  echo "export FERROFLOW_E2E_S3_SECRET_ACCESS_KEY=$secret_key"
  echo "export FERROFLOW_E2E_S3_REGION=$region"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    log "not running ($s3dir)"
    return 0
  fi
  log "stopping MinIO (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    log "MinIO did not stop within 30 s of SIGTERM; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  build) build ;;
  status)
    if running_pid >/dev/null && is_ready; then log "ready: $(endpoint)"; exit 0; fi
    log "not answering"; exit 1 ;;
  *) die "usage: $0 [start|stop|status|build]" ;;
esac
