"""What the tests in tests/servers/ run in child processes, each a separate Django process
configured from its environment alone (smtest.settings, DATABASE_URL, CACHE_URL, …):

    python -m tests.servers.child seed N [--prefix m-]       accept N messages (subjects m-0 …)
    python -m tests.servers.child deliver [--go FILE] [--idle S]
        deliver batches (mailservice.services.delivery.messages_deliver) until none was claimable
        for S seconds; with --go, wait for FILE to exist first, so several workers start at once
    python -m tests.servers.child send N [--prefix x-]       send N emails through the failover backend

Each prints one JSON line on stdout with what it did.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    seed = sub.add_parser("seed")
    seed.add_argument("count", type=int)
    seed.add_argument("--prefix", default="m-")
    deliver = sub.add_parser("deliver")
    deliver.add_argument("--go", type=Path)
    deliver.add_argument("--idle", type=float, default=2.0)
    send = sub.add_parser("send")
    send.add_argument("count", type=int)
    send.add_argument("--prefix", default="x-")
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smtest.settings")
    import django

    django.setup()
    result = {"seed": _seed, "deliver": _deliver, "send": _send}[args.command](args)
    print(json.dumps(result), flush=True)
    return 0


def _seed(args) -> dict:
    from mailservice.schemas import MessageIn
    from mailservice.services.messages import message_accept
    from mailservice.validation import check_message

    ids = []
    for n in range(args.count):
        body = {"to": f"r{n}@example.com", "subject": f"{args.prefix}{n}", "text": "x"}
        message, _ = message_accept(draft=check_message(MessageIn.model_validate(body)))
        ids.append(str(message.pk))
    return {"seeded": len(ids)}


def _deliver(args) -> dict:
    from django.db import close_old_connections

    from mailservice.services.delivery import messages_deliver, new_worker_id

    worker = new_worker_id()
    if args.go:
        while not args.go.exists():
            time.sleep(0.01)
    batches = delivered = 0
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < args.idle:
        close_old_connections()
        batch = messages_deliver(worker=worker)
        if batch:
            batches += 1
            delivered += len(batch)
            idle_since = time.monotonic()
        else:
            time.sleep(0.05)
    return {"worker": worker, "batches": batches, "messages": delivered}


def _send(args) -> dict:
    from django.core.mail import EmailMessage

    from mailservice.compat import mail_connection

    connection = mail_connection()
    tried = []
    for n in range(args.count):
        message = EmailMessage(
            subject=f"{args.prefix}{n}", body="x", to=[f"r{n}@example.com"], connection=connection
        )
        message.send()
        tried.append([[attempt.provider, str(attempt.outcome)] for attempt in message.failover_attempts])
    return {"tried": tried}


if __name__ == "__main__":
    sys.exit(main())
