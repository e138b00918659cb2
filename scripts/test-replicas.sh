#!/usr/bin/env bash
# End-to-end test of the replicas profile (deploy/compose/replicas.yml): 2 replicas behind HAProxy.
# Checks that both replicas serve a mixed load (each one's /metrics), that a session key keeps a
# typing session on one replica, that stopping a replica in the middle of the load fails no request
# (the balancer retries on the other), that the stopped replica comes back into rotation, that SSE
# passes through token by token, and that x-request-id is kept. Uses its own project name, image
# tag and port, and removes only what it created, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
project=lstm-serve-replicas-e2e
export LSTM_SERVE_IMAGE_TAG=e2e LSTM_SERVE_REPLICAS=2
export LSTM_SERVE_PORT=${LSTM_SERVE_REPLICAS_TEST_PORT:-18380}
compose=(docker compose -p "$project" -f deploy/compose/replicas.yml)
base=http://127.0.0.1:$LSTM_SERVE_PORT
load=(python3 scripts/replicas_load.py)
work=$(mktemp -d)
fail() { echo "FAIL: $*" >&2; "${compose[@]}" logs --tail 40 balancer >&2 || true; exit 1; }
cleanup() {
  "${compose[@]}" down --rmi all --volumes --timeout 40 >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

if (exec 3<>"/dev/tcp/127.0.0.1/$LSTM_SERVE_PORT") 2>/dev/null; then
  echo "FAIL: port $LSTM_SERVE_PORT is in use; set LSTM_SERVE_REPLICAS_TEST_PORT" >&2; exit 1
fi
started=$(date +%s)
"${compose[@]}" build --quiet
"${compose[@]}" up -d --wait --wait-timeout 180
echo "ok  up: 2 replicas and the balancer healthy ($(($(date +%s) - started)) s with the build)"

replicas() { "${compose[@]}" ps -q api | sort; }
# Requests a replica answered on the model routes matching $2, from its own /metrics.
served() {
  docker exec "$1" python -c '
import re, sys, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:8000/metrics", timeout=5).read().decode()
pattern = re.compile(r"^lstm_serve_requests_total\{.*route=\"(%s)\".*\} (\S+)$" % sys.argv[1])
print(int(sum(float(m.group(2)) for m in map(pattern.match, text.splitlines()) if m)))
' "$2"
}
routes='/sentiment|/next-word|/generate'
# Replicas the balancer sees UP in its least-connections backend (stats CSV: name, status in column 18).
up_in_balancer() {
  "${compose[@]}" exec -T balancer python -c '
import csv, io, urllib.request
rows = csv.reader(io.StringIO(urllib.request.urlopen("http://127.0.0.1:8404/stats;csv", timeout=5).read().decode()))
print(sum(1 for row in rows if row[0] == "least_connections" and row[1].startswith("api") and row[17] == "UP"))
'
}
wait_for_balancer() {
  for _ in $(seq 60); do [ "$(up_in_balancer)" = "$1" ] && return 0; sleep 1; done
  fail "the balancer does not see $1 replicas UP (sees $(up_in_balancer))"
}
wait_for_balancer 2
mapfile -t ids < <(replicas)
[ "${#ids[@]}" = 2 ] || fail "expected 2 replicas, found ${#ids[@]}"

# 1. a mixed load reaches both replicas
before=("$(served "${ids[0]}" "$routes")" "$(served "${ids[1]}" "$routes")")
"${load[@]}" load --base "$base" --requests 120 --concurrency 4 --seconds 60 >"$work/a.json" \
  || fail "mixed load: $(cat "$work/a.json")"
a=$(( $(served "${ids[0]}" "$routes") - before[0] )); b=$(( $(served "${ids[1]}" "$routes") - before[1] ))
[ "$a" -gt 0 ] && [ "$b" -gt 0 ] || fail "both replicas should serve: $a and $b requests"
[ $((a + b)) = 120 ] || fail "the replicas counted $((a + b)) requests, 120 were sent"
echo "ok  mixed load, 120 requests, 0 failed: the replicas served $a and $b ($(cat "$work/a.json"))"

# 2. a session key keeps a typing session on one replica (its prefix-state cache)
before=("$(served "${ids[0]}" /next-word)" "$(served "${ids[1]}" /next-word)")
text=""
for word in the history of the city was written by; do
  text="$text$word "
  curl -sS -f -o /dev/null -H 'content-type: application/json' -H 'x-session-key: typist-1' \
    -d "{\"text\": \"$text\"}" "$base/next-word" || fail "next-word with a session key"
done
a=$(( $(served "${ids[0]}" /next-word) - before[0] )); b=$(( $(served "${ids[1]}" /next-word) - before[1] ))
{ [ "$a" = 8 ] && [ "$b" = 0 ]; } || { [ "$a" = 0 ] && [ "$b" = 8 ]; } \
  || fail "a session's 8 requests were split $a / $b across the replicas"
echo "ok  X-Session-Key: all 8 requests of a typing session went to one replica"

# 3. stop a replica in the middle of the load: no request may fail
# (the load runs until told to stop, so it spans the stop and the comeback on a machine of any
# speed: 400 requests once took 1.6 s, over before the replica was stopped)
"${load[@]}" load --base "$base" --until "$work/stop-load" --concurrency 4 --seconds 300 \
  --session-prefix s >"$work/b.json" &
load_pid=$!
sleep 1
kill -0 "$load_pid" 2>/dev/null || fail "the load ended before a replica was stopped: $(cat "$work/b.json")"
docker stop --time 35 "${ids[0]}" >/dev/null
echo "ok  stopped replica ${ids[0]:0:12} while the load ran"
wait_for_balancer 1
docker start "${ids[0]}" >/dev/null
wait_for_balancer 2
echo "ok  it came back: the balancer sees 2 replicas UP again"
sleep 1  # requests to both again
touch "$work/stop-load"
wait "$load_pid" || fail "requests failed while a replica stopped: $(cat "$work/b.json")"
echo "ok  0 failed while a replica stopped and came back ($(cat "$work/b.json"))"
before=$(served "${ids[0]}" "$routes")
"${load[@]}" load --base "$base" --requests 60 --concurrency 4 --seconds 60 >"$work/c.json" \
  || fail "load after the restart: $(cat "$work/c.json")"
back=$(( $(served "${ids[0]}" "$routes") - before ))
[ "$back" -gt 0 ] || fail "the restarted replica served none of 60 requests"
echo "ok  the restarted replica serves again ($back of 60 requests)"

# 4. SSE through the balancer, token by token: the events arrive spread out, not in one piece
"${load[@]}" stream --base "$base" --tokens 24 >"$work/sse.json" || fail "SSE: $(cat "$work/sse.json")"
python3 - "$work/sse.json" <<'PY' || fail "SSE was not streamed token by token: $(cat "$work/sse.json")"
import json, sys
times = json.load(open(sys.argv[1]))["token_ms"]
assert len(times) == 24, times
assert len({round(t) for t in times}) >= 6 and times[-1] - times[0] >= 5, times
PY
echo "ok  SSE through the balancer: 24 token events over $(python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['token_ms']; print(round(t[-1]-t[0]))" "$work/sse.json") ms"

# 5. x-request-id: the client's is kept (the load checked every answer); without one, the balancer's
id=$(curl -sS -f -o /dev/null -D - "$base/health/live" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-request-id" {print $2}')
[[ "$id" == *-* ]] || fail "a request without x-request-id should get the balancer's id, got '$id'"
echo "ok  x-request-id kept from the client, or set by the balancer ($id)"
echo "replicas end-to-end test passed in $(($(date +%s) - started)) s"
