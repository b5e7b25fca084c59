"""PostgreSQL restarted (`pg_ctl restart -m fast`) in the middle of a stream of POST /api/messages
to gunicorn with persistent, health-checked connections (docs/api.md, "When the gateway is
unavailable"):

- no answer is a 500: a request that meets the restart answers 503 with Retry-After;
- each client retries a 503 with the same Idempotency-Key until it is accepted, so every message
  is stored exactly once, and every 202's message id is in the database afterwards;
- the answers add up: one 202 per message, every other answer a 503.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter

from django.db import connections

from mailservice.models import IdempotencyKey, Message
from tests.e2e.processes import wait_until
from tests.servers.base import ALIAS, RealServersTestCase
from tests.servers.clients import Answer, post_message

CLIENTS = 4
# Messages accepted before the restart, and again after it, so both sides of it are exercised.
BEFORE = 40
AFTER = 40
# A client waits this long before retrying a 503, shorter than its Retry-After to keep the test
# short; a real client waits Retry-After seconds.
RETRY_PAUSE = 0.05
# How long one message may keep answering 503 before the test gives up on it.
RETRY_FOR = 20.0


class Burst:
    """CLIENTS threads, each sending one message after another until stopped; a 503 is retried
    with the same Idempotency-Key until it is accepted (or RETRY_FOR runs out)."""

    def __init__(self, url: str, api_key: str):
        self.url, self.api_key = url, api_key
        self.answers: list[Answer] = []  # every answer, retries included
        self.accepted: dict[str, Answer] = {}  # Idempotency-Key -> the 202
        self.given_up: list[str] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(n,), daemon=True) for n in range(CLIENTS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=RETRY_FOR + 30)

    def accepted_count(self) -> int:
        with self.lock:
            return len(self.accepted)

    def client(self, n: int) -> None:
        count = 0
        while not self.stopping.is_set():
            count += 1
            key = f"restart-{n}-{count}"
            body = {"to": f"c{n}.m{count}@example.com", "subject": f"Message {count}", "text": "Hi"}
            self.send_until_accepted(key, json.dumps(body).encode())

    def send_until_accepted(self, key: str, body: bytes) -> None:
        deadline = time.monotonic() + RETRY_FOR
        while True:
            answer = post_message(self.url, self.api_key, key, body)
            with self.lock:
                self.answers.append(answer)
                if answer.status == 202:
                    self.accepted[key] = answer
            if answer.status == 202:
                return
            if answer.status != 503 or time.monotonic() > deadline:
                with self.lock:
                    self.given_up.append(key)
                return
            time.sleep(RETRY_PAUSE)


class DatabaseRestartTests(RealServersTestCase):
    needs = ("postgres",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env = cls.child_environment(
            FIRST_WORKING_EMAIL_BACKENDS="sendgrid",
            ANYMAIL_SENDGRID_API_KEY="SG.fake-key",
            MAILSERVICE_API_RATE_LIMIT="0",
            # The wake-up after each accept writes a task row to the restarting database too.
            TASKS_BACKEND="database",
            # As on a server: each gunicorn thread keeps its connection, checked before reuse.
            DATABASE_CONN_MAX_AGE="60",
            DATABASE_CONN_HEALTH_CHECKS="1",
        )
        cls.web, cls.url = cls.start_gunicorn(cls.env, workers=2, threads=4)

    def setUp(self):
        super().setUp()
        output = self.manage("create_api_key", "restart", "--scopes", "send,read", env=self.env)
        self.api_key = re.findall(r"smt_\S+", output)[-1]

    def test_a_restart_mid_burst_answers_503_with_retry_after_and_loses_no_accepted_message(self):
        """No 500; each 503 carries Retry-After; every 202's message is stored, once."""
        burst = Burst(self.url, self.api_key)
        burst.start()
        try:
            wait_until(lambda: burst.accepted_count() >= BEFORE, timeout=30, what="before the restart")
            self.postgres.restart()
            after = burst.accepted_count() + AFTER
            wait_until(lambda: burst.accepted_count() >= after, timeout=30, what="after the restart")
        finally:
            burst.stop()
        connections[ALIAS].close()  # this process's connection did not survive the restart

        statuses = Counter(answer.status for answer in burst.answers)
        report = f"answers by status: {dict(statuses)}\n{self.web.output()}"
        odd = [answer for answer in burst.answers if answer.status not in (202, 503)]
        self.assertEqual(odd, [], report)
        self.assertEqual(burst.given_up, [], report)
        self.assertGreater(statuses[503], 0, "no request met the restart: " + report)
        for answer in (answer for answer in burst.answers if answer.status == 503):
            self.assertIsNotNone(answer.retry_after, answer)
            self.assertTrue(1 <= int(answer.retry_after) <= 5, answer)
            self.assertEqual([error["field"] for error in json.loads(answer.body)["errors"]], [None], answer)

        # The counts add up: one 202 per message sent, every other answer a 503.
        self.assertEqual(statuses[202], len(burst.accepted))
        self.assertEqual(statuses[202] + statuses[503], len(burst.answers))
        ids = {json.loads(answer.body)["id"] for answer in burst.accepted.values()}
        self.assertEqual(len(ids), len(burst.accepted), "two messages were answered with one id")
        stored = Message.objects.using(ALIAS)
        found = {str(pk) for pk in stored.filter(pk__in=ids).values_list("pk", flat=True)}
        self.assertEqual(found, ids, "a 202 was lost")
        self.assertEqual(stored.count(), len(ids), "a message was stored twice or without a 202")
        self.assertEqual(IdempotencyKey.objects.using(ALIAS).count(), len(ids))
