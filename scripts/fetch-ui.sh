#!/usr/bin/env bash
# Fetches MLflow's web UI bundle for `ferroflow server` (never stored in this repository):
# downloads the pinned `mlflow` wheel through pip (so pip's configured index, mirror and
# certificates apply), checks its sha256 and extracts `mlflow/server/js/build` into DIR.
#
#   bash scripts/fetch-ui.sh [DIR]     # or: make ui
#
# DIR defaults to FERROFLOW_UI_DIR, else the folder the server looks in by itself:
# ${XDG_CACHE_HOME:-$HOME/.cache}/ferroflow/ui/mlflow-<version>. Idempotent: a folder already
# holding this version's bundle is kept. Everything except the last line goes to stderr; the
# last line is `export FERROFLOW_UI_DIR=DIR`. Needs python3 with pip.
set -euo pipefail

# The MLflow version whose API ferroflow implements (src/api/mod.rs MLFLOW_COMPATIBLE_VERSION)
# and the sha256 of its wheel on PyPI.
version=3.17.2
wheel_sha256=4e44c03791beb518d8b0a40b0982d958c2634d902f46d67d7907c82107f21fac

dir="${1:-${FERROFLOW_UI_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferroflow/ui/mlflow-$version}}"
python="${FERROFLOW_PYTHON:-python3}"
log() { printf 'fetch-ui.sh: %s\n' "$*" >&2; }

stamp="$dir/.ferroflow-ui-version"
if [[ -f "$dir/index.html" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
  log "MLflow $version UI already in $dir"
  echo "export FERROFLOW_UI_DIR=$dir"
  exit 0
fi

mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "downloading mlflow==$version (wheel only, no dependencies)"
"$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "mlflow==$version" >&2
wheel="$work/mlflow-$version-py3-none-any.whl"
[[ -f "$wheel" ]] || { log "error: pip did not produce $wheel"; exit 1; }
actual="$(sha256sum "$wheel" | cut -d' ' -f1)"
if [[ "$actual" != "$wheel_sha256" ]]; then
  log "error: $wheel has sha256 $actual, expected $wheel_sha256"
  exit 1
fi

log "extracting mlflow/server/js/build into $dir"
"$python" - "$wheel" "$work/build" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
prefix = "mlflow/server/js/build/"
with zipfile.ZipFile(wheel) as archive:
    members = [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]
    if not any(m == prefix + "index.html" for m in members):
        sys.exit("the wheel holds no mlflow/server/js/build/index.html")
    for member in members:
        target = member[len(prefix):]
        if target.startswith("/") or ".." in target.split("/"):
            sys.exit(f"unsafe path in the wheel: {member}")
        archive.extract(member, out)
PY
echo "$version" >"$work/build/mlflow/server/js/build/.ferroflow-ui-version"
rm -rf "$dir"
mv "$work/build/mlflow/server/js/build" "$dir"
log "done: $(find "$dir" -type f | wc -l) files"
echo "export FERROFLOW_UI_DIR=$dir"
