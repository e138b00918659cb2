#!/usr/bin/env bash
# End-to-end test of the container: build the image, `docker compose up --wait`, call every
# endpoint on the published port, check the user is not root, stop within the grace period,
# then remove what was created. Prints build time, image size and time to healthy.
# It runs beside a `docker compose up` of the same checkout without touching it: its own compose
# project, its own image tag and a free host port; it removes only that project and that image.
set -euo pipefail
cd "$(dirname "$0")/.."
project=lstm-serve-e2e-$$
export LSTM_SERVE_IMAGE_TAG=e2e-$$
LSTM_SERVE_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export LSTM_SERVE_PORT
compose=(docker compose -p "$project")
base=http://127.0.0.1:$LSTM_SERVE_PORT
fail() { echo "FAIL: $*" >&2; exit 1; }
cleanup() {
  "${compose[@]}" down --volumes --timeout 30 >/dev/null 2>&1 || true
  docker image rm "lstm-serve:$LSTM_SERVE_IMAGE_TAG" >/dev/null 2>&1 || true
}
trap cleanup EXIT
echo "project $project, image lstm-serve:$LSTM_SERVE_IMAGE_TAG, port $LSTM_SERVE_PORT"
# the user's image, if any: the test must leave it as it is
users_image() { docker image inspect --format '{{.Id}}' lstm-serve:latest 2>/dev/null || echo none; }
users_image_before=$(users_image)

started=$(date +%s.%N)
"${compose[@]}" build --quiet api
built=$(date +%s.%N)
"${compose[@]}" up -d --wait --wait-timeout 120 api
healthy=$(date +%s.%N)

post() { curl -sS -f -H 'content-type: application/json' -d "$2" "$base$1"; }
expect() { echo "$2" | python3 -c "import json,sys; d=json.load(sys.stdin); assert $3, d" \
  || fail "$1: $2"; echo "ok  $1"; }

expect "GET /health/live" "$(curl -sS -f $base/health/live)" 'd["status"] == "ok"'
expect "GET /health/ready" "$(curl -sS -f $base/health/ready)" 'd["status"] == "ok" and len(d["models"]) == 3'
expect "GET /models" "$(curl -sS -f $base/models)" \
  '{m["name"] for m in d["models"]} == {"sentiment", "next-word", "generate"} and all(m["metrics"] for m in d["models"])'
expect "POST /sentiment" "$(post /sentiment '{"text": "A wonderful film, moving and funny."}')" \
  'd["label"] == "positive" and abs(sum(d["probabilities"].values()) - 1) < 1e-4'
expect "POST /sentiment/batch" "$(post /sentiment/batch '{"texts": ["Great.", "Awful, boring and far too long."]}')" \
  '[r["label"] for r in d["results"]] == ["positive", "negative"]'
expect "POST /next-word" "$(post /next-word '{"text": "The history of the "}')" 'len(d["suggestions"]) == 3'
expect "POST /generate" "$(post /generate '{"prompt": "ROMEO:\n", "max_new_tokens": 40, "seed": 7}')" \
  'd["tokens"] == 40 and d["seed"] == 7'
stream=$(curl -sS -N -H 'content-type: application/json' -d '{"prompt": "JULIET:", "max_new_tokens": 5, "seed": 1}' $base/generate/stream)
echo "$stream" | grep -c '^event: token' | grep -qx 5 || fail "SSE: $stream"
grep -q '^event: done' <<<"$stream" || fail "SSE has no done event"; echo "ok  POST /generate/stream"
status=$(curl -sS -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d '{"text": ""}' $base/sentiment)
[ "$status" = 422 ] || fail "empty text gave $status"; echo "ok  422 on bad input"
# read whole, then searched: grep -q stops reading at the first match, and under pipefail the
# curl it leaves writing into a closed pipe fails the line
metrics=$(curl -sS -f $base/metrics) || fail "metrics"
grep -q lstm_serve_requests_total <<<"$metrics" || fail "metrics"; echo "ok  GET /metrics"

uid=$("${compose[@]}" exec -T api id -u)
[ "$uid" != 0 ] || fail "the container runs as root"; echo "ok  runs as uid $uid"
"${compose[@]}" exec -T api grep -q libtcmalloc /proc/1/maps || fail "tcmalloc is not loaded"
echo "ok  tcmalloc loaded"
# the HTTP process (pid 1) never imports torch: the engines, forked from the server that loaded
# the weights, compute
! "${compose[@]}" exec -T api grep -q libtorch /proc/1/maps || fail "the HTTP process loaded torch"
echo "ok  the HTTP process holds no torch"
owner=$("${compose[@]}" exec -T api stat -c '%U %a' /app/artifacts/sentiment/model.safetensors)
[ "$owner" = "root 644" ] || fail "a checkpoint file is '$owner', expected root-owned 644"
echo "ok  checkpoints root-owned and world-readable"
page=$(curl -sS -f $base/) || fail "the playground page"
grep -q '<title>' <<<"$page" || fail "the playground page"; echo "ok  GET / (playground)"

image=$("${compose[@]}" images -q api | head -n1)
size=$(docker image inspect "$image" --format '{{.Size}}')
echo "image $((size / 1048576)) MiB; the final stage's own layers:"
docker history --format '  {{.Size}}\t{{.CreatedBy}}' "$image" | sed '/useradd/q' | cut -c1-110
# the checkpoints are one layer: no RUN in the final stage rewrites them (a chmod -R there
# copied all 56 MB into a second layer)
own_layers=$(docker history --no-trunc --format '{{.CreatedBy}}' "$image" | sed '/useradd/q')
if grep -q 'chmod' <<<"$own_layers"; then
  fail "a layer of the image runs chmod: $(docker history --format '{{.Size}} {{.CreatedBy}}' "$image")"
fi
echo "ok  no chmod layer"
# SIGTERM while a long generation is in flight: it must still be answered in full (200; all
# 2,000 tokens, or fewer with the finish reason saying why when the request deadline came first)
inflight=$(mktemp)
curl -sS -o "$inflight" -w '%{http_code}' -H 'content-type: application/json' \
  -d '{"prompt": "KING:", "max_new_tokens": 2000, "seed": 3}' $base/generate > "$inflight.status" &
curl_pid=$!
sleep 0.3
stop_started=$(date +%s.%N)
"${compose[@]}" stop --timeout 40 api  # the compose file's stop_grace_period
stopped=$(date +%s.%N)
# said before the checks, so that a failing run still tells how long the stop took
python3 -c "print(f'stopped {$stopped - $stop_started:.1f} s after SIGTERM, a 2,000-token generation in flight')"
wait "$curl_pid" || true
code=$(docker inspect "$("${compose[@]}" ps -aq api)" --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || fail "exit code $code after SIGTERM (137: killed at the end of the grace period)"
[ "$(cat "$inflight.status")" = 200 ] || fail "in-flight request during shutdown: $(cat "$inflight.status") $(cat "$inflight")"
grep -q -e '"tokens":2000' -e '"finish_reason":"time_limit"' "$inflight" \
  || fail "in-flight generation was cut short: $(cat "$inflight")"
echo "ok  an in-flight request finished during graceful shutdown"
rm -f "$inflight" "$inflight.status"
python3 - "$started" "$built" "$healthy" "$stop_started" "$stopped" "$size" <<'PY'
import sys
start, built, healthy, stop0, stop1, size = map(float, sys.argv[1:])
print(f"build {built - start:.1f} s, image {size / 2**20:.0f} MiB, up to healthy {healthy - built:.1f} s, "
      f"stop {stop1 - stop0:.1f} s (grace 40 s)")
assert stop1 - stop0 < 40, "did not stop within the grace period"
PY
[ "$(users_image)" = "$users_image_before" ] || fail "lstm-serve:latest changed during the test"
echo "ok  lstm-serve:latest left as it was ($users_image_before)"
echo "docker end-to-end test passed"
