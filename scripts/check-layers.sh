#!/usr/bin/env bash
# Checks the architecture invariants of ARCHITECTURE.md against the real
# dependency graph: each layer depends only on the layers below it.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
forbid() {
  local crate=$1 pattern=$2 why=$3
  local tree found
  # A failing `cargo tree` (a renamed crate, a broken manifest) is a failed
  # check, never an empty graph.
  if ! tree=$(cargo tree -p "$crate" -e normal --prefix none --format '{p}'); then
    echo "layer check: cannot read the dependencies of $crate" >&2
    status=1
    return
  fi
  found=$(awk '{print $1}' <<<"$tree" | grep -E "^(${pattern})$" | sort -u || true)
  if [ -n "$found" ]; then
    echo "layer violation: $crate depends on $(echo "$found" | tr '\n' ' ')($why)" >&2
    status=1
  fi
}

forbid comet-protocol 'tokio|hyper|axum|http|comet-store|comet-hub|comet-server' \
  "the wire format crate does no I/O and knows no runtime"
forbid comet-store 'hyper|axum|http|comet-hub|comet-server' \
  "storage knows nothing of HTTP or the hub"
forbid comet-store-disk 'hyper|axum|http|comet-hub|comet-server' \
  "storage knows nothing of HTTP or the hub"
forbid comet-store-redis 'hyper|axum|http|comet-hub|comet-server' \
  "storage knows nothing of HTTP or the hub"
forbid comet-hub 'hyper|axum|http|comet-server|comet-store-disk|comet-store-redis' \
  "the hub knows nothing of HTTP"
forbid comet-auth 'tokio|hyper|axum|http|comet-store|comet-store-disk|comet-hub|comet-server' \
  "authorization decides from tokens and rules alone, with no I/O of requests"
forbid comet-client 'comet-store|comet-store-disk|comet-hub|comet-server|axum' \
  "the client knows the server only through HTTP and the wire vocabulary"
forbid comet-bench 'comet-protocol|comet-store|comet-hub|comet-server' \
  "the load generator talks to servers over HTTP only, like any client"
forbid comet-server 'comet' \
  "the server library does not depend on the binary"

if [ $status -eq 0 ]; then
  echo "layers: ok"
fi
exit $status
