#!/usr/bin/env bash
# Figures (not pass/fail): Comet's durable store against the floor under any
# durable publish on this machine, the `sync_floor` example of comet-bench (a
# single-threaded server that only reads each request, writes the group's
# bodies in place into a preallocated file, syncs it once per group and
# answers after the sync). Both run on core 0, the load generator on core 1,
# alternating, 1, 8 and 64 publishers of 100-byte messages; the floor also
# writing as many pages per sync as Comet's commits do (7 and 11), to show
# what SQLite's page writes cost at the sync. Prints every run, then the
# medians and Comet's share of the floor.
# Usage: bench/sync-floor.sh [ROUNDS] [SECONDS_PER_RUN]
# The files go to a new directory under $TMPDIR (default /tmp): put TMPDIR on
# the file system a data directory would use.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-6}
cargo build --release -q -p comet -p comet-bench --example sync_floor
comet=target/release/comet
floor=target/release/examples/sync_floor
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

pin() { if command -v taskset >/dev/null; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }

# Starts a server on core 0 that prints "listening on ADDRESS" first; sets
# $pid and $address.
start() {
  local fifo="$work/out.$RANDOM"
  mkfifo "$fifo"
  (exec taskset -c 0 "$@" >"$fifo" 2>"$work/server.log") &
  pid=$!
  if ! read -r line <"$fifo"; then
    echo "the server did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
  fi
  address=${line#listening on }
  address=${address#http://}
  # Keep the pipe drained so the server never blocks on its output.
  cat "$fifo" >/dev/null &
}

# Runs one measurement: LABEL PUBLISHERS SERVER-COMMAND...
run() {
  local label=$1 publishers=$2
  rm -rf "$work/data"
  mkdir "$work/data"
  start "${@:3}"
  local line rate
  line=$(pin 1 "$comet" bench publish --server "http://$address" \
    --publishers "$publishers" --duration "${seconds}s")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rate=$(grep -oE 'publishes_per_s=[0-9]+' <<<"$line" | cut -d= -f2)
  echo "$label publishers=$publishers $line"
  echo "$label $publishers $rate" >>"$work/rates"
}

for round in $(seq "$rounds"); do
  echo "== round $round"
  for publishers in 1 8 64; do
    run comet "$publishers" "$comet" serve --listen 127.0.0.1:0 --data-dir "$work/data/comet"
    run floor "$publishers" "$floor" 127.0.0.1:0 "$work/data/floor.log"
    case $publishers in
      8) run floor-7-pages 8 "$floor" 127.0.0.1:0 "$work/data/floor.log" 7 ;;
      64) run floor-11-pages 64 "$floor" 127.0.0.1:0 "$work/data/floor.log" 11 ;;
    esac
  done
done

echo "== medians of $rounds (publishes/s)"
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
for publishers in 1 8 64; do
  c=$(awk -v p="$publishers" '$1 == "comet" && $2 == p { print $3 }' "$work/rates" | median)
  f=$(awk -v p="$publishers" '$1 == "floor" && $2 == p { print $3 }' "$work/rates" | median)
  echo "publishers=$publishers comet=$c floor=$f comet/floor=$(awk -v c="$c" -v f="$f" 'BEGIN { printf "%.2f", c / f }')"
done
