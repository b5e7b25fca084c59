"""Recording a 1,000-event SendGrid webhook post: batched (what the webhook view does) against
recording each event on its own (what a plain per-event signal receiver would do).

Both run side by side on fresh copies of the same data in a temporary SQLite database, through
the real view (`/anymail/sendgrid/tracking/`, Django's test client) for the batched path.
Run: .venv/bin/python bench/webhook_batch.py [--events 1000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="smtest-bench-")
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "smtest.settings",
            "DATABASE_URL": f"sqlite:///{workdir}/bench.sqlite3",
            "CACHE_URL": "locmemcache://",
            "ANYMAIL_WEBHOOK_SECRET": "bench:secret",
            # Tracking endpoints answer only for configured providers (docs/webhooks.md).
            "MAILSERVICE_WEBHOOK_PROVIDERS": "sendgrid",
            "LOG_LEVEL": "WARNING",
            "DEBUG": "1",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    call_command("migrate", verbosity=0)
    setup_test_environment()

    from anymail.signals import AnymailTrackingEvent
    from django.utils import timezone

    from mailservice.models import Message, Recipient, Suppression, TrackingEvent
    from mailservice.services.tracking import tracking_events_record

    def fresh_data(tag: str) -> list[dict]:
        TrackingEvent.objects.all().delete()
        Suppression.objects.all().delete()
        Message.objects.all().delete()
        message = Message.objects.create(from_email="a@example.com", subject="s", text="t", status="sent")
        Recipient.objects.bulk_create(
            Recipient(message=message, kind="to", position=i, address=f"u{i}@example.net", email=f"u{i}@example.net",
                      status="sent", provider_message_id=f"{tag}-{i}")
            for i in range(args.events)
        )
        now = int(time.time())
        return [
            {"email": f"u{i}@example.net", "timestamp": now, "event": "bounce" if i % 10 == 0 else "delivered",
             "type": "bounce", "sg_event_id": f"{tag}-evt-{i}", "anymail_id": f"{tag}-{i}"}
            for i in range(args.events)
        ]

    client = Client()
    auth = {"HTTP_AUTHORIZATION": "Basic YmVuY2g6c2VjcmV0"}  # bench:secret
    batched, per_event = [], []
    for round_no in range(args.rounds):
        events = fresh_data(f"b{round_no}")
        started = time.perf_counter()
        response = client.post("/anymail/sendgrid/tracking/", json.dumps(events), content_type="application/json", **auth)
        batched.append(time.perf_counter() - started)
        assert response.status_code == 200, response.content
        assert TrackingEvent.objects.count() == args.events

        events = fresh_data(f"p{round_no}")
        parsed = [
            AnymailTrackingEvent(event_type="bounced" if e["event"] == "bounce" else "delivered", event_id=e["sg_event_id"],
                                 message_id=e["anymail_id"], recipient=e["email"], timestamp=timezone.now(), esp_event=e)
            for e in events
        ]
        started = time.perf_counter()
        for event in parsed:
            tracking_events_record(provider="sendgrid", events=[event])
        per_event.append(time.perf_counter() - started)
        assert TrackingEvent.objects.count() == args.events

    b, p = statistics.median(batched), statistics.median(per_event)
    print(f"{args.events} SendGrid events per post, {args.rounds} rounds, SQLite, Django {django.get_version()}")
    print(f"  batched, through the webhook view   {b * 1000:8.1f} ms per post")
    print(f"  one event at a time (no view)       {p * 1000:8.1f} ms per post")
    print(f"ratio per-event / batched = {p / b:.1f}x; batched post takes {b / 10:.1%} of SendGrid's 10 s timeout")


if __name__ == "__main__":
    main()
