#!/usr/bin/env bash
# Figures (not pass/fail): Comet against the floor of this machine, servers
# that do only what any server must (the examples of comet-bench):
#  publish: `sync_floor` (reads each request, writes the group's bodies in
#    place into a preallocated file, syncs once per group, answers after the
#    sync) against Comet's durable store, 1, 8 and 64 publishers of 100-byte
#    messages; the floor also writing as many pages per sync as Comet's
#    commits do (7 and 11), to show what SQLite's page writes cost there,
#    and syncing on a thread of its own as Comet's writer does; with 64
#    publishers also Comet's memory store (its HTTP and hub, no storage);
#  fanout: `fanout_floor` (writes each published message to every
#    subscriber's socket in the pass that reads the publish, one thread, no
#    task per subscriber; in the saturated scenarios also `--rounds`, which
#    batches as Comet's channel groups do: each pass over the sockets
#    writes each what was published since its last turn, publishes held
#    16 messages ahead of the slowest; and `--rounds --gather`, whose
#    outrun rounds wait up to 1 ms for 8 more publishes, as Comet's passes
#    do) against Comet's memory store and, when installed
#    (bench/compare.sh installs it), Nchan: the SSE fan-out scenarios of
#    bench/compare.sh, saturated and at a fixed rate.
# Publish runs also give the server's CPU per acknowledged publish (all its
# threads, from /proc: server_cpu_us).
# Every server runs on core 0 and the load generator on core 1, alternating,
# loopback only. Prints every run, then medians, and keeps what it printed
# in bench/results/<date>-floor.txt.
# Usage: bench/floor.sh [publish|fanout|all] [ROUNDS]
# The publish part's files go to a new directory under $TMPDIR (default
# /tmp): put TMPDIR on the file system a data directory would use.
set -euo pipefail
cd "$(dirname "$0")/.."
part=${1:-all}
rounds=${2:-3}
# `--bin` too: with `--example` alone, cargo builds only the examples.
cargo build --release -q -p comet -p comet-bench --bin comet --example sync_floor --example fanout_floor
# The code measured: the commit, and whether the sources differ from it.
revision=$(git rev-parse --short HEAD)
[ -z "$(git status --porcelain -- crates Cargo.toml Cargo.lock)" ] || revision="$revision with uncommitted changes"
comet=target/release/comet
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p bench/results
result="bench/results/$(date -u +%Y-%m-%dT%H%M%SZ)-floor.txt"
exec > >(tee "$result")
echo "bench/floor.sh $part $rounds at $revision: $(nproc) cores, Linux $(uname -r)"

pin() { if command -v taskset >/dev/null; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts SERVER-COMMAND... on core 0 listening on $port; sets $pid.
start() {
  (exec taskset -c 0 "$@" >/dev/null 2>"$work/server.log") &
  pid=$!
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "the server did not start:" >&2
  cat "$work/server.log" >&2
  exit 1
}

stop() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Starts the server LABEL names on a free port; sets $port, $pid, $target.
start_server() {
  port=$(free_port)
  target=comet
  rm -rf "$work/data"
  mkdir "$work/data"
  case $1 in
    comet) start "$comet" serve --listen "127.0.0.1:$port" --memory \
      --max-connections 19500 --retention-messages 100000 --max-store-bytes 0 ;;
    comet-durable) start "$comet" serve --listen "127.0.0.1:$port" --data-dir "$work/data/comet" ;;
    sync-floor) start target/release/examples/sync_floor "127.0.0.1:$port" "$work/data/floor.log" ;;
    sync-floor-7-pages) start target/release/examples/sync_floor "127.0.0.1:$port" "$work/data/floor.log" 7 ;;
    sync-floor-11-pages) start target/release/examples/sync_floor "127.0.0.1:$port" "$work/data/floor.log" 11 ;;
    sync-floor-writer-thread) start target/release/examples/sync_floor "127.0.0.1:$port" "$work/data/floor.log" --writer-thread ;;
    fanout-floor) start target/release/examples/fanout_floor "127.0.0.1:$port" ;;
    fanout-floor-rounds) start target/release/examples/fanout_floor "127.0.0.1:$port" --rounds ;;
    fanout-floor-gather) start target/release/examples/fanout_floor "127.0.0.1:$port" --rounds --gather ;;
    nchan)
      target=nchan
      sed "s|@DIR@|$work/data|g; s|@PORT@|$port|g" bench/nchan.conf.template >"$work/data/nginx.conf"
      start nginx -c "$work/data/nginx.conf" -p "$work/data"
      ;;
  esac
}

# The CPU time process PID has used, all its threads, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Runs one measurement: LABEL SCENARIO ARGS...; records "LABEL|SCENARIO ARGS|line".
# A publish run also gets the server's CPU per acknowledged publish, in
# microseconds, over the whole run (server_cpu_us).
run() {
  local label=$1 scenario=$2
  start_server "$label"
  local line before
  before=$(cpu_ticks "$pid")
  line=$(pin 1 "$comet" bench "$scenario" --target "$target" --server "http://127.0.0.1:$port" "${@:3}")
  if [ "$scenario" = publish ]; then
    line="$line $(python3 -c 'import sys; used, acked, hz = map(int, sys.argv[1:]); print(f"server_cpu_us={used * 1e6 / hz / max(acked, 1):.2f}")' \
      "$(($(cpu_ticks "$pid") - before))" "$(grep -oE 'acknowledged=[0-9]+' <<<"$line" | cut -d= -f2)" "$(getconf CLK_TCK)")"
  fi
  stop
  echo "$label $line"
  echo "$label|$scenario ${*:3}|$line" >>"$work/lines"
}

# Medians of each FIGURE per label and measurement, and whether any run
# lost, repeated or reordered a message.
medians() {
  python3 - "$work/lines" "$@" <<'EOF'
import statistics, sys
from collections import defaultdict
runs = defaultdict(lambda: defaultdict(list))
incomplete = 0
for line in open(sys.argv[1]):
    label, what, text = line.rstrip("\n").split("|", 2)
    for word in text.split():
        key, _, value = word.partition("=")
        if key in sys.argv[2:]:
            runs[what][(label, key)].append(float(value))
        if key in ("missing", "duplicated", "out_of_order") and float(value) != 0:
            incomplete += 1
for what, figures in runs.items():
    print(f"{what}:")
    for (label, key), values in figures.items():
        runs_text = ", ".join(f"{v:g}" for v in values)
        print(f"  {label:20} {key:17} {statistics.median(values):>13,.2f}  (runs: {runs_text})")
print("every message delivered once, in order, in every run" if incomplete == 0
      else f"{incomplete} figures of missing, duplicated or reordered messages are not zero")
EOF
}

if [ "$part" != fanout ]; then
  echo "== publish: durable store against the sync floor"
  for round in $(seq "$rounds"); do
    for publishers in 1 8 64; do
      labels=(comet-durable sync-floor sync-floor-writer-thread)
      [ "$publishers" = 8 ] && labels+=(sync-floor-7-pages)
      [ "$publishers" = 64 ] && labels+=(sync-floor-11-pages comet)
      for label in "${labels[@]}"; do
        run "$label" publish --publishers "$publishers" --duration 6s
      done
    done
  done
fi

if [ "$part" != publish ]; then
  echo "== fanout: Comet against the fan-out floor (and Nchan)"
  servers=(comet fanout-floor)
  if command -v nginx >/dev/null && [ -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
    servers+=(nchan)
  fi
  scenarios=(
    "--subscribers 1000 --messages 2000"
    "--subscribers 10000 --messages 200 --concurrency 500"
    "--subscribers 1000 --messages 400 --rate 40"
    "--subscribers 10000 --messages 60 --rate 4 --concurrency 500"
  )
  for round in $(seq "$rounds"); do
    for scenario in "${scenarios[@]}"; do
      read -r -a args <<<"$scenario"
      labels=("${servers[@]}")
      [[ $scenario == *--rate* ]] || labels+=(fanout-floor-rounds fanout-floor-gather)
      for server in "${labels[@]}"; do
        run "$server" fanout "${args[@]}"
      done
    done
  done
fi

echo "== medians of $rounds"
medians publishes_per_s server_cpu_us deliveries_per_s p50_ms p99_ms
