#!/usr/bin/env python3
"""Publish one Herald notification straight into Redis with FCALL herald_publish.

    python3 -m pip install -r requirements.txt      # the `redis` package (redis-py)
    REDIS_URL=redis://127.0.0.1:6379 python3 publish.py alice
    python3 publish.py alice '{"type":"billing.invoice","title":"Invoice ready"}' invoice-2041

Arguments: USER [NOTIFICATION_JSON] [IDEMPOTENCY_KEY]
Environment: REDIS_URL (default redis://127.0.0.1:6379); HERALD_USER and
IDEMPOTENCY_KEY stand in for the missing arguments.

Prints the new entry id on stdout. Exits 1 when Herald refuses the
notification (HERALD_INVALID / HERALD_TOO_LARGE), 2 on a usage error, 3 when
Redis cannot be reached or fails otherwise.
"""

import json
import os
import sys

import redis


def main(argv: list[str]) -> int:
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    user = argv[1] if len(argv) > 1 else os.environ.get("HERALD_USER")
    if not user:
        print(
            "usage: publish.py USER [NOTIFICATION_JSON] [IDEMPOTENCY_KEY]  (or set HERALD_USER)",
            file=sys.stderr,
        )
        return 2
    if len(argv) > 2:
        notification = argv[2]
    else:
        # type and title are required; body, url, icon, priority and data optional.
        notification = json.dumps(
            {
                "type": "order.shipped",
                "title": "Your order has shipped",
                "body": "Order #991 is on its way.",
                "url": "/orders/991",
                "priority": "normal",
                "data": {"order": 991},
            },
            separators=(",", ":"),
        )
    idempotency_key = argv[3] if len(argv) > 3 else os.environ.get("IDEMPOTENCY_KEY", "")

    # Every key of a user carries the hash tag {u:<user>}; the function takes
    # the user's base key and derives the others from it.
    key = f"herald:{{u:{user}}}"
    args = [notification, idempotency_key] if idempotency_key else [notification]

    client = redis.Redis.from_url(
        redis_url, decode_responses=True, socket_connect_timeout=5, socket_timeout=10
    )
    try:
        # Same as client.execute_command("FCALL", "herald_publish", 1, key, *args).
        entry_id = client.fcall("herald_publish", 1, key, *args)
    except redis.ResponseError as e:
        message = str(e)
        if message.startswith(("HERALD_INVALID ", "HERALD_TOO_LARGE ")):
            print(f"herald refused the notification: {message}", file=sys.stderr)
            return 1
        if "Function not found" in message:
            print(
                f"{message}: no Herald gateway has loaded its function library "
                "into this Redis yet (start one)",
                file=sys.stderr,
            )
            return 3
        print(f"publish failed: {message}", file=sys.stderr)
        return 3
    except redis.RedisError as e:
        print(f"publish failed: {e}", file=sys.stderr)
        return 3
    finally:
        client.close()
    if entry_id is None:
        # Not an error: the user's preferences turn this category off in-app.
        print(f"not stored: {user}'s preferences turn this category off in-app", file=sys.stderr)
        return 0
    print(entry_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
