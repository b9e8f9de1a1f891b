#!/usr/bin/env bash
# Makes sure Debian's chromium is installed for the browser tests (e2e/tests/test_ui.py drive it
# through Playwright's executable_path; Playwright's own browser download is not used).
#
#   eval "$(e2e/setup/chromium.sh)"   # last stdout line: export FERROFLOW_CHROMIUM=/usr/bin/chromium
#
# Installs the `chromium` package when missing (needs root). Everything except the final export
# line goes to stderr.
set -euo pipefail

log() { printf 'chromium.sh: %s\n' "$*" >&2; }

chromium="$(command -v chromium || true)"
if [[ -z "$chromium" ]]; then
  log "chromium not found; installing Debian's chromium package"
  if [[ "$(id -u)" -ne 0 ]]; then
    log "error: installing chromium needs root (apt-get install -y chromium)"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq chromium >&2
  chromium="$(command -v chromium)"
fi
log "using $("$chromium" --version 2>/dev/null || echo "$chromium")"
echo "export FERROFLOW_CHROMIUM=$chromium"
