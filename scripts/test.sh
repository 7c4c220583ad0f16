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

# Debian packages the tests drive: curl (the README's round trip), Chromium
# and a font for the browser tests (never a downloaded browser),
# redis-server (the Redis store's tests start their own, on free loopback
# ports; the package's own service is not needed), openssl (the
# certificates of the TLS Redis test) and Python's venv (the WebSocket
# conformance run installs `kosoku` from PyPI into one).
debian_packages=(curl chromium fonts-dejavu-core redis-server openssl python3 python3-venv)
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

# npm packages: third-party clients, playwright-core (drives the Debian
# Chromium; it downloads no browser) and TypeScript (checks comet.d.ts).
if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi

log "running the Rust test suite"
# All targets: unit and black-box tests, and the benchmarks run once each in
# test mode, so they keep building and working.
# The black-box server suites run on the durable store, what `comet serve`
# uses by default (see comet-testkit's TestStore).
cargo test --workspace --all-targets "$@"

if [ $# -eq 0 ]; then
  log "running the server suites again on the memory store (--memory)"
  COMET_TEST_STORE=memory cargo test -p comet-server -p comet-client --tests
fi

if [ $# -eq 0 ]; then
  log "checking the TypeScript declarations of comet.js"
  npx --no-install tsc --noEmit --strict --target es2022 --module es2022 \
    --moduleResolution bundler --lib es2022,dom clients/js/tests/usage.ts
  log "running the browser tests (headless Chromium)"
  # The binary built by cargo test above.
  COMET_BIN="$PWD/target/debug/comet" node --test --test-concurrency=1 clients/js/tests/
  log "running the WebSocket conformance cases (Autobahn, by kosoku)"
  scripts/autobahn/run.sh "$PWD/target/debug/comet"
fi
