#!/usr/bin/env bash
# WebSocket conformance: Autobahn's own test cases, run by `kosoku` (PyPI,
# no Docker), against `comet serve --memory`, through a proxy that drops the
# heartbeat object every Comet WebSocket opens with (drop_opening.py).
#
# Comet's WebSocket only sends: the cases that need the server to echo the
# client's messages do not apply. Groups run: 2 (pings and pongs), 3
# (reserved bits), 4 (opcodes), 7 (closing). Groups left out: 1, 5, 6, 9, 10
# (echo of text, fragmented and UTF-8 messages, performance), 12 and 13
# (permessage-deflate, not offered). In the groups run, the cases that send
# a data frame before what they test expect it echoed; Comet closes such a
# connection with 1003 (a receive-only transport, API.md), and that is what
# is checked for them.
#
#   scripts/autobahn/run.sh [path/to/comet]     (default: target/debug/comet)
set -euo pipefail
cd "$(dirname "$0")/../.."
comet="${1:-target/debug/comet}"
work="target/autobahn"
mkdir -p "$work"

if [ ! -x "$work/venv/bin/kosoku" ]; then
  echo "==> installing kosoku (Autobahn's cases without Docker) in $work/venv" >&2
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet --disable-pip-version-check kosoku==0.1.0
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
server_port=$(free_port)
proxy_port=$(free_port)
"$comet" serve --memory --listen "127.0.0.1:$server_port" --heartbeat 3600s \
  >"$work/server.log" 2>&1 &
server=$!
python3 scripts/autobahn/drop_opening.py "$proxy_port" "$server_port" >"$work/proxy.log" 2>&1 &
proxy=$!
trap 'kill $server $proxy 2>/dev/null || true' EXIT
# Both must accept connections before the first case.
wait_for_port() {
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on $1" >&2
  exit 1
}
wait_for_port "$server_port"
wait_for_port "$proxy_port"

rm -rf "$work/report"
"$work/venv/bin/kosoku" -i '2.*' -i '3.*' -i '4.*' -i '7.*' -o "$work/report" \
  "ws://127.0.0.1:$proxy_port/ws/autobahn" >"$work/kosoku.log" 2>&1 || true

python3 - "$work/report/index.json" <<'PY'
import json, sys
# Cases that send a data frame before what they test: closed with 1003.
SEND_DATA_FIRST = {"3.2", "3.3", "3.4", "4.1.3", "4.1.4", "4.1.5", "4.2.3",
                   "4.2.4", "4.2.5", "7.1.1", "7.1.5"}
results = next(iter(json.load(open(sys.argv[1])).values()))
passed, closed_for_data, failed = [], [], []
for case, result in sorted(results.items(), key=lambda item: [int(p) for p in item[0].split(".")]):
    ok = result["behavior"] in ("OK", "INFORMATIONAL") and result["behaviorClose"] in ("OK", "INFORMATIONAL")
    if case in SEND_DATA_FIRST:
        (closed_for_data if result.get("remoteCloseCode") == 1003 else failed).append(case)
    elif ok:
        passed.append(case)
    else:
        failed.append(f'{case} ({result["behavior"]}/{result["behaviorClose"]})')
print(f"WebSocket conformance (Autobahn groups 2, 3, 4, 7): {len(passed)} cases passed, "
      f"{len(closed_for_data)} sending data first closed with 1003 as they should be, "
      f"{len(failed)} failed")
if len(passed) + len(closed_for_data) < 60:
    sys.exit(f"too few cases ran ({len(results)}): see target/autobahn/kosoku.log")
if failed:
    sys.exit("failed: " + ", ".join(failed))
PY
