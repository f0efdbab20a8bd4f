#!/usr/bin/env bash
# End-to-end check of docs/PUBLISHING.md and examples/publish/.
#
# Starts a throwaway redis-server and `herald serve` (engine redis) on free
# loopback ports, opens an SSE stream for user alice, publishes through every
# documented path (redis-cli, Python, Node, HTTP with curl) and checks that
# each returned id arrives on the stream, that invalid notifications and an
# unreachable Redis make the examples exit non-zero, and that the HTTP error
# codes are the documented ones.
#
#   cargo build --bin herald && bash tests/examples/run.sh
#
# Needs: redis-server and redis-cli (Debian: redis-server), curl, python3
# with venv (or pip --user), node >= 18.19 and npm (reaches the npm registry
# and PyPI for `npm ci` and `pip install`).
# Environment: HERALD_BIN (default target/debug/herald), REDIS_SERVER
# (default /usr/bin/redis-server), REDIS_CLI (default redis-cli), PYTHON
# (default python3), KEEP_TMP=1 keeps the temp dir with the logs.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
EXAMPLES=$ROOT/examples/publish
HERALD_BIN=${HERALD_BIN:-$ROOT/target/debug/herald}
REDIS_SERVER=${REDIS_SERVER:-/usr/bin/redis-server}
export REDIS_CLI=${REDIS_CLI:-redis-cli}
PYTHON=${PYTHON:-python3}
USER_ID=alice
# auth.secret needs 32 bytes or more: 24 random bytes are 48 hex digits.
SECRET=examples-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
INVALID='{"type":"Not A Type","title":"refused"}'

TMP=$(mktemp -d "${TMPDIR:-/tmp}/herald-examples.XXXXXX")
PIDS=()
passed=0
failed=0

log() { printf '%s\n' "$*" >&2; }

pass() {
  passed=$((passed + 1))
  printf 'PASS %s\n' "$1"
}

fail() {
  failed=$((failed + 1))
  printf 'FAIL %s: %s\n' "$1" "$2"
}

# Stops every process this script started: TERM, a bounded wait, then KILL.
cleanup() {
  local pid i reversed=()
  # Newest first: the stream, then herald, then redis-server.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    reversed+=("${PIDS[i]}")
  done
  for pid in "${reversed[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${reversed[@]}"; do
    for i in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "process $pid did not stop within 5 s of SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  if [[ ${KEEP_TMP:-0} == 1 ]]; then
    log "logs kept in $TMP"
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
  log "error: $*"
  for f in "$TMP"/redis.log "$TMP"/herald.log "$TMP"/sse.err; do
    [[ -s $f ]] && { log "--- tail of $f"; tail -n 30 "$f" >&2; }
  done
  printf 'examples: %d passed, %d failed\n' "$passed" $((failed + 1))
  exit 1
}

free_port() {
  "$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# wait_until SECONDS COMMAND...: polls COMMAND every 0.1 s until it succeeds.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS >= deadline)) && return 1
    sleep 0.1
  done
}

for tool in curl node npm "$PYTHON" "$REDIS_CLI"; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
[[ -x $REDIS_SERVER ]] || die "$REDIS_SERVER not found (apt-get install redis-server)"
[[ -x $HERALD_BIN ]] || die "$HERALD_BIN not found (cargo build --bin herald, or set HERALD_BIN)"

# --- redis-server --------------------------------------------------------
REDIS_PORT=$(free_port) || die "no free port"
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
"$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
redis_up() { [[ $("$REDIS_CLI" -p "$REDIS_PORT" PING 2>/dev/null) == PONG ]]; }
wait_until 10 redis_up || die "redis-server did not answer PING on port $REDIS_PORT within 10 s"

# --- herald serve --------------------------------------------------------
HTTP_PORT=$(free_port) || die "no free port"
BASE=http://127.0.0.1:$HTTP_PORT
HERALD__ENGINE__KIND=redis \
  HERALD__ENGINE__REDIS_URL=$REDIS_URL \
  HERALD__AUTH__SECRET=$SECRET \
  HERALD__SERVER__LISTEN=127.0.0.1:$HTTP_PORT \
  HERALD__LOG__LEVEL=info \
  "$HERALD_BIN" serve >"$TMP/herald.log" 2>&1 &
HERALD_PID=$!
PIDS+=("$HERALD_PID")
ready() {
  kill -0 "$HERALD_PID" 2>/dev/null || die "herald serve exited during start-up"
  [[ $(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "$BASE/readyz") == 200 ]]
}
wait_until 20 ready || die "GET /readyz did not answer 200 within 20 s"

token() { HERALD__AUTH__SECRET=$SECRET "$HERALD_BIN" token "$@"; }
USER_TOKEN=$(token --sub "$USER_ID") || die "herald token --sub $USER_ID failed"
PUBLISHER_TOKEN=$(token --sub backend --publisher) || die "herald token --publisher failed"

# A user whose preferences turn everything off in-app: a publish to them is
# answered with nil, which the examples must not report as a failure.
QUIET_USER=quiet-$$
QUIET_TOKEN=$(token --sub "$QUIET_USER") || die "herald token --sub $QUIET_USER failed"
[[ $(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -X PUT "$BASE/v1/preferences" \
  -H "Authorization: Bearer $QUIET_TOKEN" -H 'Content-Type: application/json' \
  -d '{"default": {"in_app": false, "push": false}}') == 200 ]] ||
  die "could not store $QUIET_USER's preferences"

# --- the SSE stream ------------------------------------------------------
SSE=$TMP/sse.out
curl -sS -N -H 'Accept: text/event-stream' \
  "$BASE/v1/events?access_token=$USER_TOKEN" >"$SSE" 2>"$TMP/sse.err" &
SSE_PID=$!
PIDS+=("$SSE_PID")
# The stream's first `unread` event is sent once its live subscription is
# confirmed: from then on every publish reaches it.
stream_open() { grep -q '^event: unread' "$SSE"; }
wait_until 10 stream_open || die "the SSE stream did not open within 10 s"

seen_on_stream() { grep -qxF "id: $1" "$SSE"; }

# check_published NAME ID: the id looks right and reaches the stream.
check_published() {
  local name=$1 id=$2
  if [[ ! $id =~ ^[0-9]+-[0-9]+$ ]]; then
    fail "$name" "expected an entry id on stdout, got '${id}'"
  elif ! kill -0 "$SSE_PID" 2>/dev/null && ! seen_on_stream "$id"; then
    fail "$name" "the SSE stream ended before $id arrived"
  elif wait_until 10 seen_on_stream "$id"; then
    pass "$name (id $id on the stream)"
  else
    fail "$name" "id $id did not arrive on the SSE stream within 10 s"
  fi
}

# run_example NAME COMMAND...: publishes a valid notification, then checks
# that an invalid one and an unreachable Redis give a non-zero exit.
run_example() {
  local name=$1 out status
  shift
  out=$(REDIS_URL=$REDIS_URL timeout 60 "$@" "$USER_ID" 2>"$TMP/$name.err")
  status=$?
  if ((status != 0)); then
    fail "$name publish" "exit $status: $(cat "$TMP/$name.err")"
  else
    check_published "$name publish" "$out"
  fi

  out=$(REDIS_URL=$REDIS_URL timeout 60 "$@" "$QUIET_USER" 2>"$TMP/$name.quiet.err")
  status=$?
  if ((status != 0)); then
    fail "$name dropped" "exit $status for a notification the user's preferences drop: $(cat "$TMP/$name.quiet.err")"
  elif [[ -n $out ]] || ! grep -q "^not stored: " "$TMP/$name.quiet.err"; then
    fail "$name dropped" "expected nothing on stdout and 'not stored: …' on stderr, got '$out' / $(cat "$TMP/$name.quiet.err")"
  elif [[ $("$REDIS_CLI" -p "$REDIS_PORT" EXISTS "herald:{u:$QUIET_USER}:inbox") != 0 ]]; then
    fail "$name dropped" "$QUIET_USER's history is not empty: the dropped notification was stored"
  else
    pass "$name dropped by preferences (exit 0, nothing stored)"
  fi

  REDIS_URL=$REDIS_URL timeout 60 "$@" "$USER_ID" "$INVALID" >"$TMP/$name.invalid.out" 2>"$TMP/$name.invalid.err"
  status=$?
  if ((status == 0)); then
    fail "$name invalid" "exit 0 for an invalid notification (stdout: $(cat "$TMP/$name.invalid.out"))"
  elif ((status == 124)); then
    fail "$name invalid" "timed out"
  elif ! grep -q HERALD_INVALID "$TMP/$name.invalid.err"; then
    fail "$name invalid" "exit $status without the HERALD_INVALID reply: $(cat "$TMP/$name.invalid.err")"
  else
    pass "$name invalid (exit $status: $(head -n 1 "$TMP/$name.invalid.err"))"
  fi

  REDIS_URL=redis://127.0.0.1:$DEAD_PORT timeout 30 "$@" "$USER_ID" >/dev/null 2>"$TMP/$name.down.err"
  status=$?
  if ((status == 0 || status == 124)); then
    fail "$name redis down" "exit $status when Redis is unreachable"
  else
    pass "$name redis down (exit $status)"
  fi
}

# A loopback port nothing listens on.
DEAD_PORT=$(free_port) || die "no free port"

# --- redis-cli -----------------------------------------------------------
run_example shell bash "$EXAMPLES/publish.sh"

# --- Python --------------------------------------------------------------
PY=
if "$PYTHON" -m venv "$TMP/venv" >"$TMP/venv.log" 2>&1 &&
  "$TMP/venv/bin/python" -m pip install -q --disable-pip-version-check \
    -r "$EXAMPLES/requirements.txt" >>"$TMP/venv.log" 2>&1; then
  PY=$TMP/venv/bin/python
elif "$PYTHON" -m pip install -q --user --disable-pip-version-check \
  -r "$EXAMPLES/requirements.txt" >>"$TMP/venv.log" 2>&1; then
  PY=$PYTHON
fi
if [[ -n $PY ]]; then
  run_example python "$PY" "$EXAMPLES/publish.py"
else
  fail python "could not install the redis package: $(tail -n 5 "$TMP/venv.log")"
fi

# --- Node ----------------------------------------------------------------
if (cd "$EXAMPLES" && npm ci --no-audit --no-fund --loglevel=error) >"$TMP/npm.log" 2>&1; then
  run_example node node "$EXAMPLES/publish.js"
else
  fail node "npm ci failed: $(tail -n 5 "$TMP/npm.log")"
fi

# --- HTTP, as in docs/PUBLISHING.md --------------------------------------
# http_publish TOKEN BODY [CONTENT_TYPE]: prints the body, then the status.
http_publish() {
  curl -sS --max-time 10 -X POST "$BASE/v1/publish" \
    -H "Authorization: Bearer $1" \
    -H "Content-Type: ${3:-application/json}" \
    -d "$2" -w '\n%{http_code}'
}
json_field() { "$PYTHON" -c 'import json, sys; r = json.load(sys.stdin)["results"][0]; print(r[sys.argv[1]])' "$1"; }

IDEM_KEY=order-991-shipped-$RANDOM
BODY='{"to":{"users":["'"$USER_ID"'"]},"notification":{"type":"order.shipped","title":"Your order has shipped","url":"/orders/991","data":{"order":991}},"idempotency_key":"'"$IDEM_KEY"'"}'
response=$(http_publish "$PUBLISHER_TOKEN" "$BODY")
status=${response##*$'\n'}
body=${response%$'\n'*}
if [[ $status != 202 ]]; then
  fail "http publish" "status $status: $body"
else
  id=$(json_field id <<<"$body")
  online=$(json_field online <<<"$body")
  if [[ $online != True ]]; then
    fail "http publish" "online is $online although alice has a stream open: $body"
  else
    check_published "http publish" "$id"
  fi
  # The same idempotency_key returns the first result and stores nothing.
  before=$("$REDIS_CLI" -p "$REDIS_PORT" XLEN "herald:{u:$USER_ID}:inbox")
  again=$(http_publish "$PUBLISHER_TOKEN" "$BODY")
  after=$("$REDIS_CLI" -p "$REDIS_PORT" XLEN "herald:{u:$USER_ID}:inbox")
  again_id=$(json_field id <<<"${again%$'\n'*}" 2>/dev/null)
  if [[ ${again##*$'\n'} == 202 && $again_id == "$id" && $before == "$after" ]]; then
    pass "http idempotent repeat (same id $id, inbox still $after entries)"
  else
    fail "http idempotent repeat" "status ${again##*$'\n'}, id $again_id (first $id), inbox $before -> $after"
  fi
fi

# The documented error statuses.
expect_status() {
  local name=$1 want=$2 response got
  shift 2
  response=$(http_publish "$@")
  got=${response##*$'\n'}
  if [[ $got == "$want" ]]; then
    pass "http $name ($want)"
  else
    fail "http $name" "expected $want, got $got: ${response%$'\n'*}"
  fi
}
VALID='{"type":"order.shipped","title":"t"}'
expect_status "bad token" 401 not-a-token '{"to":{"users":["'"$USER_ID"'"]},"notification":'"$VALID"'}'
expect_status "user token" 403 "$USER_TOKEN" '{"to":{"users":["'"$USER_ID"'"]},"notification":'"$VALID"'}'
expect_status "malformed JSON" 400 "$PUBLISHER_TOKEN" '{"to":{"users":["'"$USER_ID"'"]},"notification":'
expect_status "unknown field" 400 "$PUBLISHER_TOKEN" '{"to":{"users":["'"$USER_ID"'"]},"notification":{"type":"a","title":"t","titel":"x"}}'
expect_status "invalid field" 422 "$PUBLISHER_TOKEN" '{"to":{"users":["'"$USER_ID"'"]},"notification":'"$INVALID"'}'
BIG=$(head -c 9000 /dev/zero | tr '\0' x)
expect_status "too large" 413 "$PUBLISHER_TOKEN" '{"to":{"users":["'"$USER_ID"'"]},"notification":{"type":"a","title":"t","data":"'"$BIG"'"}}'
expect_status "wrong content type" 415 "$PUBLISHER_TOKEN" '{"to":{"users":["'"$USER_ID"'"]},"notification":'"$VALID"'}' text/plain

printf 'examples: %d passed, %d failed\n' "$passed" "$failed"
if ((failed > 0)); then
  log "--- tail of herald.log"
  tail -n 30 "$TMP/herald.log" >&2
  exit 1
fi
