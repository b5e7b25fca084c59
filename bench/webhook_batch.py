"""Recording a 1,000-event SendGrid webhook post through the webhook view, against Anymail's own
parsing of the same post (the limit: what no recording can go below).

A temporary SQLite database holds sent messages with one recipient per event; each round posts the
events to the real view (`/anymail/sendgrid/tracking/`, Django's test client, basic auth) on
fresh data, and times Anymail's parse-only pass over the same body. `--per-event` adds the same
events recorded one at a time (what a plain per-event signal receiver would do; slow: about 20 s
a round); `--profile` prints a cProfile of one more post. docs/benchmarks.md has the results.
Run: .venv/bin/python bench/webhook_batch.py [--events 1000] [--rounds 9] [--per-event] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
AUTH = {"HTTP_AUTHORIZATION": "Basic YmVuY2g6c2VjcmV0"}  # bench:secret
URL = "/anymail/sendgrid/tracking/"
RECIPIENTS_PER_MESSAGE = 5
PARSE_REPEATS = 5


def setup_django() -> None:
    """Django on a throwaway SQLite file, with only the SendGrid tracking endpoint answering."""
    workdir = tempfile.mkdtemp(prefix="smtest-bench-")
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "smtest.settings",
            "DATABASE_URL": f"sqlite:///{workdir}/bench.sqlite3",
            "CACHE_URL": "locmemcache://",
            "ANYMAIL_WEBHOOK_SECRET": "bench:secret",
            "SECRET_KEY": "bench-" + "k" * 50,  # required with DEBUG off
            # Tracking endpoints answer only for configured providers (docs/webhooks.md).
            "MAILSERVICE_WEBHOOK_PROVIDERS": "sendgrid",
            "LOG_LEVEL": "WARNING",
            # As in production: DEBUG makes Django log every query with its parameters quoted,
            # which costs more than some of the queries themselves.
            "DEBUG": "0",
            "SECURE_SSL_REDIRECT": "0",
            "ALLOWED_HOSTS": "testserver",
        }
    )
    import django
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    django.setup()
    call_command("migrate", verbosity=0)
    setup_test_environment()


def fresh_data(tag: str, count: int) -> bytes:
    """An empty event log, `count` recipients of sent messages (RECIPIENTS_PER_MESSAGE each), and
    SendGrid's post reporting 90 % of them delivered and 10 % bounced over the last minute, with
    the fields SendGrid really sends."""
    from mailservice.models import Message, Recipient, Suppression, TrackingEvent

    TrackingEvent.objects.all().delete()
    Suppression.objects.all().delete()
    Message.objects.all().delete()
    messages = Message.objects.bulk_create(
        Message(from_email="a@example.com", subject="s", text="t", status="sent")
        for _ in range(-(-count // RECIPIENTS_PER_MESSAGE))
    )
    Recipient.objects.bulk_create(
        Recipient(
            message=messages[i // RECIPIENTS_PER_MESSAGE],
            kind="to",
            position=i % RECIPIENTS_PER_MESSAGE,
            address=f"u{i}@example.net",
            email=f"u{i}@example.net",
            status="sent",
            provider_message_id=f"{tag}-{i}",
        )
        for i in range(count)
    )
    now = int(time.time())
    events = []
    for i in range(count):
        event = {
            "email": f"u{i}@example.net",
            "timestamp": now - i % 60,
            "smtp-id": f"<{tag}-{i}@example.com>",
            "sg_event_id": f"{tag}-evt-{i}",
            "sg_message_id": f"{tag}.filter-{i}",
            "anymail_id": f"{tag}-{i}",
            "category": ["bench"],
            "ip": "192.0.2.1",
            "tls": 1,
        }
        if i % 10 == 0:
            event.update(event="bounce", type="bounce", status="5.1.1", reason="550 5.1.1 No such user")
        else:
            event.update(event="delivered", response="250 2.0.0 OK")
        events.append(event)
    return json.dumps(events).encode()


def timed(call: Callable[[], object]) -> float:
    """Seconds `call` takes, starting from a collected heap so that no round pays for the
    garbage of the one before."""
    gc.collect()
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def time_post(client, body: bytes, count: int) -> float:
    from mailservice.models import TrackingEvent

    responses = []
    elapsed = timed(lambda: responses.append(client.post(URL, body, content_type="application/json", **AUTH)))
    assert responses[0].status_code == 200 and responses[0].json()["stored"] == count, responses[0].content
    assert TrackingEvent.objects.count() == count
    return elapsed


def time_parse_only(body: bytes, count: int) -> float:
    """Anymail's own SendGrid view reading the same body into events (no authentication, no
    signal, nothing recorded): the median of PARSE_REPEATS runs, as one is short enough for a
    hiccup of the machine to double it."""
    from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
    from django.test import RequestFactory

    request = RequestFactory().post(URL, body, content_type="application/json")
    view = SendGridTrackingWebhookView()
    assert len(view.parse_events(request)) == count
    return statistics.median(timed(lambda: view.parse_events(request)) for _ in range(PARSE_REPEATS))


def time_per_event(body: bytes, count: int) -> float:
    """The same events recorded one call each (parsed beforehand, not timed)."""
    from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
    from django.test import RequestFactory

    from mailservice.models import TrackingEvent
    from mailservice.services.tracking import tracking_events_record

    request = RequestFactory().post(URL, body, content_type="application/json")
    events = SendGridTrackingWebhookView().parse_events(request)
    elapsed = timed(lambda: [tracking_events_record(provider="sendgrid", events=[event]) for event in events])
    assert TrackingEvent.objects.count() == count
    return elapsed


def profile(run: Callable[[], object]) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(run)
    stats = pstats.Stats(profiler).strip_dirs()
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--per-event", action="store_true", help="also record the events one at a time (slow)"
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one more post")
    args = parser.parse_args()
    setup_django()
    import django
    from django.test import Client

    client = Client()
    posts, parses, per_event = [], [], []
    for round_no in range(args.rounds):
        body = fresh_data(f"b{round_no}", args.events)
        posts.append(time_post(client, body, args.events))
        parses.append(time_parse_only(body, args.events))
        if args.per_event:
            per_event.append(time_per_event(fresh_data(f"p{round_no}", args.events), args.events))
    if args.profile:
        body = fresh_data("profile", args.events)
        profile(lambda: time_post(client, body, args.events))

    print(
        f"{args.events} SendGrid events per post, {args.rounds} rounds (medians), SQLite, "
        f"Python {sys.version.split()[0]}, Django {django.get_version()}"
    )
    report("recorded through the webhook view", posts, args.events)
    report("Anymail parse-only, same body", parses, args.events)
    if per_event:
        report("one event at a time (no view)", per_event, args.events)
    # Each round's post against the parsing timed right after it, so that the machine's speed,
    # which may drift during a run, is the same on both sides of the ratio.
    ratio = statistics.median(post / parse for post, parse in zip(posts, parses, strict=True))
    print(
        f"ratio recording / parse-only = {ratio:.1f}x (median of the rounds' ratios); "
        f"the post takes {statistics.median(posts) / 10:.1%} of SendGrid's 10 s timeout"
    )


def report(label: str, seconds: list[float], events: int) -> None:
    median, low, high = statistics.median(seconds) * 1000, min(seconds) * 1000, max(seconds) * 1000
    print(
        f"  {label:34} {median:7.1f} ms per post  {events * 1000 / median:8,.0f} events/s  "
        f"(rounds {low:.1f}-{high:.1f} ms)"
    )


if __name__ == "__main__":
    main()
