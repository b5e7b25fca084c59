"""Concurrent duplicate requests against a live gunicorn (several processes, several threads
each) on a real PostgreSQL: what deduplicates them must be a database constraint, since a
check-then-insert lets two requests both pass the check.

- the same SendGrid event batch posted by many clients at once is stored once per event;
- the same Idempotency-Key sent by many clients at once stores one message, and every client
  gets that message.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import threading
import urllib.error
import urllib.request
from collections import Counter

from mailservice.models import IdempotencyKey, Message, TrackingEvent
from tests.servers.base import ALIAS, OPENER, RealServersTestCase
from tests.webhooks.payloads import SENDGRID_URL, WEBHOOK_SECRET, sendgrid_event

CLIENTS = 8
ROUNDS = 5
EVENTS = 20


def request(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with OPENER.open(req, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def all_at_once(count: int, call) -> list:
    """`call()` from `count` threads released together; their results in order."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(n: int) -> None:
        barrier.wait()
        try:
            results[n] = call()
        except Exception as error:  # reported in the assertion, not lost in a thread
            results[n] = error

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


class ConcurrentRequestsOnPostgresTests(RealServersTestCase):
    needs = ("postgres",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        env = cls.child_environment(
            FIRST_WORKING_EMAIL_BACKENDS="sendgrid",
            ANYMAIL_SENDGRID_API_KEY="SG.fake-key",
            ANYMAIL_WEBHOOK_SECRET=WEBHOOK_SECRET,
            MAILSERVICE_API_RATE_LIMIT="0",
        )
        cls.env = env
        cls.web, cls.url = cls.start_gunicorn(env)

    def setUp(self):
        super().setUp()
        output = self.manage(
            "create_api_key", f"race-{self._testMethodName[-20:]}", "--scopes", "send,read", env=self.env
        )
        self.key = re.findall(r"smt_\S+", output)[-1]

    def test_the_same_webhook_batch_posted_at_once_is_stored_once(self):
        auth = {"Authorization": "Basic " + base64.b64encode(WEBHOOK_SECRET.encode()).decode()}
        for round_ in range(ROUNDS):
            events = [
                sendgrid_event(
                    "delivered", f"r{n}@example.com", f"id-{round_}-{n}", sg_event_id=f"evt-{round_}-{n}"
                )
                for n in range(EVENTS)
            ]
            body = json.dumps(events).encode()
            answers = all_at_once(CLIENTS, functools.partial(request, self.url + SENDGRID_URL, body, auth))
            statuses = Counter(a[0] if isinstance(a, tuple) else repr(a) for a in answers)
            self.assertEqual(
                statuses, Counter({200: CLIENTS}), f"round {round_}: {answers}\n{self.web.output()}"
            )
        stored = TrackingEvent.objects.using(ALIAS)
        per_event = Counter(stored.values_list("event_id", flat=True))
        self.assertEqual({e: n for e, n in per_event.items() if n != 1}, {}, "events stored more than once")
        self.assertEqual(len(per_event), ROUNDS * EVENTS)

    def test_the_same_idempotency_key_sent_at_once_stores_one_message(self):
        body = json.dumps({"to": "jane@example.com", "subject": "Once", "text": "Only once"}).encode()
        for round_ in range(ROUNDS):
            headers = {"Authorization": f"Bearer {self.key}", "Idempotency-Key": f"race-{round_}"}
            answers = all_at_once(
                CLIENTS, functools.partial(request, self.url + "/api/messages", body, headers)
            )
            statuses = Counter(a[0] if isinstance(a, tuple) else repr(a) for a in answers)
            self.assertEqual(
                statuses, Counter({202: CLIENTS}), f"round {round_}: {answers}\n{self.web.output()}"
            )
            ids = {json.loads(answer[1])["id"] for answer in answers}
            self.assertEqual(len(ids), 1, f"round {round_}: {ids}")
        self.assertEqual(Message.objects.using(ALIAS).count(), ROUNDS)
        self.assertEqual(IdempotencyKey.objects.using(ALIAS).count(), ROUNDS)
