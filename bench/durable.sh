#!/usr/bin/env bash
# Figures for the durable store (not pass/fail):
#  1. acknowledged publishes/s and acknowledgement latency with 1, 16 and 64
#     concurrent publishers, durable store against memory store;
#  2. start-up time of `comet serve` with 1,000,000 retained messages, after
#     a clean stop and after `kill -9`.
# The server runs on core 0 and the load generator on core 1 (taskset), both
# on loopback. Usage: bench/durable.sh [SECONDS_PER_RUN] [publish|startup|all]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
part=${2:-all}
cargo build --release -q -p comet -p comet-store-disk --example fill
bin=target/release/comet
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# Runs a command on one core (when taskset exists).
pin() { if command -v taskset >/dev/null; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
on_core_0=()
command -v taskset >/dev/null && on_core_0=(taskset -c 0)

# Starts `comet serve ARGS` on core 0; sets $pid and $base.
start_server() {
  local fifo="$work/out.$RANDOM"
  mkfifo "$fifo"
  # exec, so that $! is the server itself and signals reach it.
  (exec "${on_core_0[@]}" "$bin" serve --listen 127.0.0.1:0 "$@" >"$fifo" 2>"$work/server.log") &
  pid=$!
  if ! read -r line <"$fifo"; then
    echo "the server did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
  fi
  base=${line#listening on }
}

if [ "$part" != startup ]; then
echo "== publish: $seconds s per run, 100-byte messages, one channel"
for store in memory durable; do
  if [ "$store" = memory ]; then start_server --memory; else start_server --data-dir "$work/publish"; fi
  for publishers in 1 16 64; do
    printf '%-8s ' "$store"
    pin 1 "$bin" bench publish --server "$base" --publishers "$publishers" --duration "${seconds}s"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
fi

[ "$part" = publish ] && exit 0
echo "== start-up with 1,000,000 retained messages"
target/release/examples/fill "$work/million" 1000000 1000
for stop in TERM KILL; do
  times=()
  for _ in 1 2 3 4 5; do
    started=$(date +%s%N)
    start_server --data-dir "$work/million" --retention-messages 1000000 --max-store-bytes 0
    times+=($(( ($(date +%s%N) - started) / 1000000 )))
    kill -s "$stop" "$pid"; wait "$pid" 2>/dev/null || true
  done
  sorted=($(printf '%s\n' "${times[@]}" | sort -n))
  echo "start after SIG$stop of the previous run: median ${sorted[2]} ms (min ${sorted[0]}, max ${sorted[4]}; runs: ${times[*]})"
done
