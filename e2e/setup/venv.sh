#!/usr/bin/env bash
# Creates (or reuses) the Python venv the end-to-end suite and the benchmarks run in.
#
#   eval "$(e2e/setup/venv.sh)"      # last stdout line: export FERROFLOW_VENV=...
#
# The venv lives outside the repository (default $HOME/.cache/ferroflow/venv) so that fresh
# clones on the same machine reuse it. It is keyed by a hash of e2e/requirements.txt and of the
# interpreter's version: when either changes it is rebuilt from scratch. Everything except the
# final export line goes to stderr. Idempotent and safe to run concurrently (flock).
#
# Environment:
#   FERROFLOW_VENV    where the venv lives (default $HOME/.cache/ferroflow/venv)
#   FERROFLOW_PYTHON  interpreter to build it with (default: python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/../requirements.txt"
venv="${FERROFLOW_VENV:-$HOME/.cache/ferroflow/venv}"
python="${FERROFLOW_PYTHON:-python3}"

log() { printf 'venv.sh: %s\n' "$*" >&2; }

if ! command -v "$python" >/dev/null 2>&1; then
  log "no $python found; installing Debian's python3"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq python3 python3-venv >&2
fi

# A venv is only usable when `python -m venv` works with ensurepip (Debian splits it out).
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  log "$python lacks venv/ensurepip; installing python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq python3-venv >&2
fi

key="$( { cat "$req"; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)"
stamp="$venv/.ferroflow-requirements-hash"

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$key" ]] \
   && "$venv/bin/python" -c 'import mlflow, pytest' >/dev/null 2>&1; then
  log "reusing $venv (requirements hash $key)"
else
  log "building $venv (requirements hash $key); this takes a few minutes"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --no-input --progress-bar off -r "$req" >&2
  "$venv/bin/python" -c 'import mlflow; print("mlflow", mlflow.__version__)' >&2
  echo "$key" >"$stamp"
  log "done"
fi

echo "export FERROFLOW_VENV=$venv"
