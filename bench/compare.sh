#!/usr/bin/env bash
# Comet against Nchan, side by side, on this machine.
#
# Installs nginx and the Nchan module if missing, writes an equal
# configuration (one worker, a large message buffer, subscribers starting at
# the newest message), runs every scenario of `comet bench` against each
# server pinned to core 0 with the load generator on core 1, and prints one
# table with the median of RUNS runs per figure and the ratio Comet/Nchan.
# The table and the raw lines are saved under bench/results/ with the date
# and the machine's facts. Loopback only; every scenario stops by itself.
#
#   bench/compare.sh [RUNS]          (default 3)
#   ONLY=PATTERN bench/compare.sh    only the scenarios whose line (name and
#                                    arguments) contains PATTERN, e.g. ONLY=ws
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}

log() { printf '==> %s\n' "$*" >&2; }

if [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || ! command -v nginx >/dev/null; then
  log "installing nginx and Nchan"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nginx-light libnginx-mod-nchan
fi

log "building comet (release)"
cargo build --release -q -p comet
# The code measured: the commit, and whether the sources differ from it.
revision=$(git rev-parse --short HEAD)
[ -z "$(git status --porcelain -- crates Cargo.toml Cargo.lock)" ] || revision="$revision with uncommitted changes"
bin=$PWD/target/release/comet
work=$(mktemp -d)
raw="$work/raw.txt"
: >"$raw"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on $1" >&2
  return 1
}

# Starts SERVER (comet | comet-durable | nchan) on core 0; sets $base,
# $server_pid (the process to stop) and $memory_pid (the one serving).
start() {
  local port
  port=$(free_port)
  base="http://127.0.0.1:$port"
  case $1 in
    comet | comet-durable)
      local store=(--memory)
      [ "$1" = comet-durable ] && store=(--data-dir "$work/data-$RANDOM")
      taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" "${store[@]}" \
        --max-connections 19500 --retention-messages 100000 --max-store-bytes 0 \
        >/dev/null 2>"$work/comet.log" &
      server_pid=$!
      memory_pid=$server_pid
      ;;
    nchan)
      local dir="$work/nginx-$port"
      mkdir -p "$dir"
      sed "s|@DIR@|$dir|g; s|@PORT@|$port|g" bench/nchan.conf.template >"$dir/nginx.conf"
      taskset -c 0 nginx -c "$dir/nginx.conf" -p "$dir" &
      server_pid=$!
      ;;
  esac
  wait_for_port "$port"
  if [ "$1" = nchan ]; then
    memory_pid=$(pgrep -P "$server_pid" | head -1)
  fi
}

stop() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# bench SERVER SCENARIO ARGS...: one run, its line appended to $raw.
bench() {
  local server=$1 scenario=$2
  shift 2
  local target=comet
  [ "$server" = nchan ] && target=nchan
  start "$server"
  local extra=()
  [ "$scenario" = idle ] && extra=(--server-pid "$memory_pid")
  local line
  line=$(taskset -c 1 "$bin" bench "$scenario" --target "$target" --server "$base" "${extra[@]}" "$@")
  stop
  echo "$server $line" | tee -a "$raw" >&2
}

scenarios=(
  "idle|--connections 10000 --transport sse"
  "fanout|--subscribers 1000 --messages 2000 --transport sse"
  "fanout|--subscribers 10000 --messages 200 --concurrency 500 --transport sse"
  "fanout|--subscribers 10000 --messages 60 --rate 4 --concurrency 500"
  "fanout|--subscribers 1000 --messages 400 --rate 40"
  "idle|--connections 10000 --transport ws"
  "fanout|--subscribers 1000 --messages 2000 --transport ws"
  "fanout|--subscribers 10000 --messages 200 --concurrency 500 --transport ws"
  "channels|--subscribers 1000 --messages 50"
  "longpoll|--clients 1000 --rate 20 --duration 10s"
  "publish|--publishers 8 --duration 10s"
)

for run in $(seq 1 "$runs"); do
  log "run $run of $runs"
  for entry in "${scenarios[@]}"; do
    [[ "$entry" == *"${ONLY:-}"* ]] || continue
    scenario=${entry%%|*}
    read -r -a args <<<"${entry#*|}"
    for server in comet nchan; do
      bench "$server" "$scenario" "${args[@]}"
    done
  done
  if [[ "publish|--publishers" == *"${ONLY:-}"* ]]; then
    bench comet-durable publish --publishers 8 --duration 10s
    bench comet-durable publish --publishers 64 --duration 10s
  fi
done

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p bench/results
result="bench/results/$stamp.md"
python3 bench/summarize.py "$raw" "$runs" \
  "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r)" \
  "$(nginx -v 2>&1 | cut -d/ -f2), Nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null)" \
  "$revision" | tee "$result"
{
  echo
  echo '## Raw lines'
  echo
  echo '```text'
  cat "$raw"
  echo '```'
} >>"$result"
log "saved $result"
