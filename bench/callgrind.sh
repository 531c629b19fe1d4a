#!/usr/bin/env bash
# Instructions per request of one larder binary on one route, counted by callgrind: steady
# where wrk's req/s are noisy, so it tells what a layer or a change costs (bench/README.md).
#
#   bench/callgrind.sh target/release/larder /healthz
#   bench/callgrind.sh /tmp/larder-old /protected --auth     # with a bearer token
#   bench/callgrind.sh target/release/larder /items/1 --item  # with item 1 created first
#
# Runs the server under valgrind at the default settings (log level info: the access log is
# on) with a fresh SQLite database, warms it, counts 8 s of wrk -t1 -c4 load, and prints the
# instructions per request (every thread's) and the output file for callgrind_annotate.
set -euo pipefail
bin=$(realpath "$1"); path=$2; auth=${3:-}
dir=$(mktemp -d /tmp/larder-callgrind.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LARDER_DATABASE_URL="sqlite://$dir/larder.db" LARDER_BIND="127.0.0.1:$port" \
  valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" "$bin" serve > "$dir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -sf "127.0.0.1:$port/healthz" > /dev/null && break; sleep 0.5; done
headers=()
if [ "$auth" = "--auth" ] || [ "$auth" = "--item" ]; then
  curl -sf -X POST "127.0.0.1:$port/users" -H 'content-type: application/json' \
    -d '{"email":"callgrind@example.com","password":"plum-kettle-seventeen"}' > /dev/null
  token=$(curl -sf -X POST "127.0.0.1:$port/auth/token" \
    -d 'username=callgrind@example.com&password=plum-kettle-seventeen' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
  if [ "$auth" = "--auth" ]; then
    headers=(-H "Authorization: Bearer $token")
  else
    curl -sf -X POST "127.0.0.1:$port/items" -H "Authorization: Bearer $token" \
      -H 'content-type: application/json' -d '{"name":"callgrind","price":1.5}' > /dev/null
  fi
fi
wrk -t1 -c4 -d3s "${headers[@]}" "http://127.0.0.1:$port$path" > /dev/null
callgrind_control -z "$server" > /dev/null 2>&1
requests=$(wrk -t1 -c4 -d8s "${headers[@]}" "http://127.0.0.1:$port$path" | awk '/requests in/ {print $1}')
callgrind_control -d "$server" > /dev/null 2>&1
total=$(callgrind_annotate "$dir/callgrind.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$path: $requests requests, $((total / requests)) instructions per request ($dir/callgrind.out.1)"
