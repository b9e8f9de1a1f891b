#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benchmarks.
#
#   eval "$(e2e/setup/postgres.sh)"   # start (installing PostgreSQL when missing); last stdout
#                                     # line: export FERROFLOW_TEST_PG_URL=postgres://...
#   e2e/setup/postgres.sh stop        # stop it (the data directory stays, start reuses it)
#   e2e/setup/postgres.sh status      # exit 0 when it answers
#
# The cluster lives in ${FERROFLOW_E2E_STATE:-/tmp/ferroflow-e2e}/pg, listens on 127.0.0.1 port
# ${FERROFLOW_PG_PORT:-54329} only, trusts every loopback connection and runs with fsync off:
# it is for tests, never for data anyone wants to keep. Idempotent: starting a running cluster
# only checks it answers. Everything except the final export line goes to stderr.
set -euo pipefail

state="${FERROFLOW_E2E_STATE:-/tmp/ferroflow-e2e}"
port="${FERROFLOW_PG_PORT:-54329}"
pgdir="$state/pg"
data="$pgdir/data"
sockdir="$pgdir/run"
logfile="$pgdir/postgres.log"
url="postgres://postgres@127.0.0.1:$port/postgres"
start_timeout="${FERROFLOW_PG_START_TIMEOUT:-60}"

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

find_bindir() {
  # highest installed major version whose server binaries are present
  local d
  { ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true; } | sort -t/ -k4,4n | while read -r d; do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/pg_isready" ]]; then echo "$d"; fi
  done | tail -n1
}

install_postgres() {
  log "PostgreSQL server binaries not found; installing Debian's postgresql package"
  [[ "$(id -u)" -eq 0 ]] || die "installing PostgreSQL needs root (apt-get install -y postgresql)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    postgresql >&2
}

bindir="$(find_bindir)"
if [[ -z "$bindir" && "${1:-start}" == start ]]; then
  install_postgres
  bindir="$(find_bindir)"
  [[ -n "$bindir" ]] || die "apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb"
fi

# PostgreSQL refuses to run as root: as root, act as the `postgres` OS user (created by the
# Debian package); as anyone else, act as oneself.
if [[ "$(id -u)" -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || die "no 'postgres' OS user (is the postgresql package installed?)"
  as_pg() { runuser -u postgres -- "$@"; }
  pg_owner=postgres
else
  as_pg() { "$@"; }
  pg_owner="$(id -un)"
fi

is_ready() {
  "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 2 >/dev/null 2>&1
}

is_ours_running() {
  [[ -f "$data/PG_VERSION" ]] && as_pg "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1
}

stop() {
  [[ -n "$bindir" ]] || { log "PostgreSQL not installed; nothing to stop"; return 0; }
  if is_ours_running; then
    log "stopping the cluster in $data"
    as_pg "$bindir/pg_ctl" -D "$data" -m fast -w -t 60 stop >&2
  else
    log "not running ($data)"
  fi
}

start() {
  mkdir -p "$pgdir"
  chown "$pg_owner" "$pgdir" 2>/dev/null || true
  as_pg test -w "$pgdir" \
    || die "$pg_owner cannot write $pgdir (choose FERROFLOW_E2E_STATE in a directory it can reach, e.g. under /tmp)"

  if [[ -d "$data" && ! -f "$data/PG_VERSION" ]]; then
    log "removing a half-initialised data directory $data"
    rm -rf "$data"
  fi
  if [[ -f "$data/PG_VERSION" && "$(cat "$data/PG_VERSION")" != "$(basename "$(dirname "$bindir")")" ]]; then
    log "data directory $data belongs to PostgreSQL $(cat "$data/PG_VERSION"); re-creating it"
    is_ours_running && as_pg "$bindir/pg_ctl" -D "$data" -m immediate stop >&2 || true
    rm -rf "$data"
  fi
  if [[ ! -f "$data/PG_VERSION" ]]; then
    log "initdb $data ($bindir)"
    as_pg "$bindir/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C >"$pgdir/initdb.log" 2>&1 \
      || { cat "$pgdir/initdb.log" >&2; die "initdb failed"; }
    cat >>"$data/postgresql.conf" <<'EOF'

# ferroflow test cluster (e2e/setup/postgres.sh): speed over durability
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 128MB
EOF
  fi
  as_pg mkdir -p "$sockdir"

  if is_ours_running; then
    log "already running ($data)"
  else
    if is_ready; then
      die "something else already listens on 127.0.0.1:$port (set FERROFLOW_PG_PORT)"
    fi
    log "starting on 127.0.0.1:$port (log $logfile)"
    touch "$logfile" && chown "$pg_owner" "$logfile" 2>/dev/null || true
    # Port, address and socket dir on the command line so a changed FERROFLOW_PG_PORT applies.
    # pg_ctl -w waits for the postmaster itself: polling postmaster.pid after -W races with
    # the postmaster writing it and reported a starting server as dead.
    local logstart
    logstart=$(($(wc -l <"$logfile") + 1))
    if ! as_pg "$bindir/pg_ctl" -D "$data" -l "$logfile" -w -t "$start_timeout" \
      -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$sockdir" start >&2; then
      tail -n "+$logstart" "$logfile" | tail -n 50 >&2 || true
      die "PostgreSQL did not start within ${start_timeout}s (log above, from $logfile)"
    fi
  fi

  is_ready || die "PostgreSQL runs from $data but does not answer on 127.0.0.1:$port"
  log "ready: $url"
  echo "export FERROFLOW_TEST_PG_URL=$url"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) is_ready && { log "ready: $url"; exit 0; } || { log "not answering on 127.0.0.1:$port"; exit 1; } ;;
  *) die "usage: $0 [start|stop|status]" ;;
esac
