#!/usr/bin/env bash
# Publish one Herald notification straight into Redis with FCALL herald_publish,
# using redis-cli (Debian/Ubuntu: apt-get install redis-tools).
#
#   REDIS_URL=redis://127.0.0.1:6379 ./publish.sh alice
#   ./publish.sh alice '{"type":"billing.invoice","title":"Invoice ready"}' invoice-2041
#
# Arguments: USER [NOTIFICATION_JSON] [IDEMPOTENCY_KEY]
# Environment: REDIS_URL (default redis://127.0.0.1:6379); HERALD_USER and
# IDEMPOTENCY_KEY stand in for the missing arguments; REDIS_CLI names the
# redis-cli binary.
#
# Prints the new entry id on stdout. Exits 1 when Herald refuses the
# notification (HERALD_INVALID / HERALD_TOO_LARGE), 2 on a usage error, 3 when
# Redis cannot be reached or fails otherwise.
set -uo pipefail

redis_url=${REDIS_URL:-redis://127.0.0.1:6379}
redis_cli=${REDIS_CLI:-redis-cli}
user=${1:-${HERALD_USER:-}}
notification=${2:-'{"type":"order.shipped","title":"Your order has shipped","body":"Order #991 is on its way.","url":"/orders/991","priority":"normal","data":{"order":991}}'}
idempotency_key=${3:-${IDEMPOTENCY_KEY:-}}

if [[ -z $user ]]; then
  echo "usage: $0 USER [NOTIFICATION_JSON] [IDEMPOTENCY_KEY]  (or set HERALD_USER)" >&2
  exit 2
fi

# Every key of a user carries the hash tag {u:<user>}; the function takes the
# user's base key and derives the others from it.
args=(FCALL herald_publish 1 "herald:{u:${user}}" "$notification")
[[ -n $idempotency_key ]] && args+=("$idempotency_key")

# redis-cli exits 0 even when the server answers with an error reply, so the
# reply itself is checked: an entry id looks like 1732460000000-0.
reply=$("$redis_cli" -u "$redis_url" --no-auth-warning "${args[@]}" 2>&1)
status=$?
if [[ $status -eq 0 && $reply =~ ^[0-9]+-[0-9]+$ ]]; then
  echo "$reply"
  exit 0
fi
# A nil reply (empty in raw mode) is not an error: the user's preferences
# turn this category off in-app, so nothing was stored.
if [[ $status -eq 0 && -z $reply ]]; then
  echo "not stored: ${user}'s preferences turn this category off in-app" >&2
  exit 0
fi
case $reply in
  HERALD_INVALID\ * | HERALD_TOO_LARGE\ *)
    echo "herald refused the notification: $reply" >&2
    exit 1
    ;;
  *"Function not found"*)
    echo "$reply: no Herald gateway has loaded its function library into this Redis yet (start one)" >&2
    exit 3
    ;;
  *)
    echo "publish failed: ${reply:-redis-cli exited with status $status}" >&2
    exit 3
    ;;
esac
