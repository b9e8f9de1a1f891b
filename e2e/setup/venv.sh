#!/usr/bin/env bash
# Creates (or reuses) the Python venv the end-to-end suite and the benchmarks run in.
#
#   eval "$(e2e/setup/venv.sh)"      # last stdout line: export FERROFLOW_VENV=...
#
# The venv lives outside the repository so that fresh clones on the same machine reuse it:
# $HOME/.cache/ferroflow/venvs/<key>, keyed by a hash of e2e/requirements.txt and of the
# interpreter's version. A checkout with other requirements gets a venv of its own instead of
# rebuilding one another run is using; venvs unused for two days are removed. Everything except
# the final export line goes to stderr. Idempotent and safe to run concurrently (flock).
#
# Environment:
#   FERROFLOW_VENV    use this folder instead (rebuilt in place when the key changes)
#   FERROFLOW_PYTHON  interpreter to build it with (default: python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/../requirements.txt"
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
venvs="$HOME/.cache/ferroflow/venvs"
venv="${FERROFLOW_VENV:-$venvs/$key}"
if [[ -z "${FERROFLOW_VENV:-}" && -d "$venvs" ]]; then
  # Other keys' venvs not used for two days: old requirements nobody runs any more.
  find "$venvs" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -mtime +2 -exec rm -rf {} + 2>/dev/null || true
fi
stamp="$venv/.ferroflow-requirements-hash"

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$key" ]] \
   && "$venv/bin/python" -c 'import mlflow, pytest' >/dev/null 2>&1; then
  log "reusing $venv (requirements hash $key)"
  touch "$venv"
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
