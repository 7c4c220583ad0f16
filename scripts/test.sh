#!/usr/bin/env bash
# Runs every Comet test on a fresh Debian machine with the Rust toolchain,
# installing what the tests need first (Debian packages with apt-get, npm
# packages from package-lock.json). Safe to run again: installed things are
# not installed twice.
#
#   scripts/test.sh            everything
#   scripts/test.sh -p comet-hub   extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

# Debian packages the tests drive: curl (the README's round trip).
debian_packages=(curl)
missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm packages: third-party clients the tests run against the server.
if [ ! -d node_modules/eventsource ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi

log "running the test suite"
# All targets: unit and black-box tests, and the benchmarks run once each in
# test mode, so they keep building and working.
cargo test --workspace --all-targets "$@"
