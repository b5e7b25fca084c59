"""The production stack end to end, on loopback: what docs/deployment.md describes, each piece a
real process configured through the environment alone, takes a burst of messages over HTTP while
one RQ worker is killed, and loses nothing.

- throwaway PostgreSQL and Redis (tests/servers/real.py); `migrate` and `collectstatic` into a
  temporary STATIC_ROOT;
- gunicorn with deploy/gunicorn.conf.py, DEBUG off, the Redis cache, TASKS_BACKEND=rq, SendGrid
  pointed at the local ESP (tests/esp_server.py), which answers in LATENCY seconds and counts the
  requests for each message;
- two RQ workers and the recovery pass (the unit files' commands), with a short lease so a killed
  worker's messages come back within the run; an API key from `manage.py create_api_key`.

MESSAGES are posted through POST /api/messages by CLIENTS threads. Once the provider has received
half of them, the RQ worker whose work horse is delivering a batch is SIGKILLed with its horse
(RQ puts the horse in a process group of its own, so both groups are killed); the other worker
and the recovery pass carry on. Then `/metrics` is scraped, and Redis is stopped under `/readyz`.

The class runs the stack once and keeps what it saw; each test checks one thing of it.
bench/production_stack.py measures the same stack (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

from django.db import connections
from django.db.models import Count

from mailservice.models import DeliveryAttempt, Message
from tests.e2e.processes import OPENER, Process, free_port
from tests.esp_server import FakeProvider
from tests.servers.base import ALIAS, RealServersTestCase
from tests.servers.clients import post_burst
from tests.servers.stack import (
    horses,
    proc_stat,
    production_environment,
    provider_connections,
    start_processes,
)

MESSAGES = 1000
CLIENTS = 8
LATENCY = 0.05  # seconds the provider takes to answer a send, like a real ESP
WEB_CONCURRENCY = 2
LEASE_SECONDS = 20
DELIVERY_TIMEOUT = 300.0  # seconds to wait for every message to be sent
TEXT = "Hello, this is a message of the production stack's acceptance test. " * 3


def get(url: str, token: str = "") -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with OPENER.open(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample of a Prometheus text exposition."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def kill_with_horse(worker: Process) -> None:
    """SIGKILL an RQ worker and its work horse at once: its process group and the horse's."""
    groups = {worker.popen.pid}
    for pid in horses(worker):
        stat = proc_stat(pid)
        if stat:
            groups.add(stat[2])
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    worker.popen.wait(timeout=10)


class ProductionStackTests(RealServersTestCase):
    needs = ("postgres", "redis")
    killed: Process | None = None  # the RQ worker killed halfway, if one was delivering
    killed_at = 0.0  # time.monotonic() of the kill
    sending_at_kill: dict[str, str] = {}  # subject -> lease owner of the messages `sending` then
    stranded: set[str] = set()  # the killed batch: still held by the dead worker's lease 5 s later

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.provider = FakeProvider(delay=LATENCY, senders_killed=True)
        cls.addClassCleanup(cls.provider.close)
        cls.metrics_token = secrets.token_urlsafe(24)
        port = free_port()
        cls.url = f"http://127.0.0.1:{port}"
        cls.env = production_environment(
            cls.postgres,
            cls.redis,
            FIRST_WORKING_EMAIL_BACKENDS="sendgrid",
            # Off the sandbox's paths, which the system check sandbox.E001 refuses with DEBUG off.
            **cls.provider.anymail_environment(prefix="/esp"),
            DEFAULT_FROM_EMAIL="acceptance@example.com",
            STATIC_ROOT=str(cls.workdir / "static"),
            MAILSERVICE_METRICS_TOKEN=cls.metrics_token,
            # A killed worker's messages come back within the run (docs/delivery.md, "Leases").
            MAILSERVICE_LEASE_SECONDS=str(LEASE_SECONDS),
            MAILSERVICE_RECOVERY_GRACE="5",
            MAILSERVICE_RECOVERY_INTERVAL="2",
            WEB_CONCURRENCY=str(WEB_CONCURRENCY),
            BIND=f"127.0.0.1:{port}",
        )
        cls.manage("collectstatic", "--no-input", env=cls.env)
        output = cls.manage("create_api_key", "acceptance", "--quiet-key", env=cls.env)
        cls.api_key = output.strip().splitlines()[-1]
        cls.web, cls.workers, cls.recovery = start_processes(cls.env, cls.workdir, port, cls.addClassCleanup)
        cls.run_the_stack()

    # The run -----------------------------------------------------------------------------

    @classmethod
    def run_the_stack(cls) -> None:
        cls.static_status = get(cls.url + "/static/admin/css/base.css")[0]
        stop = threading.Event()
        killer = threading.Thread(target=cls.kill_halfway, args=(stop,), daemon=True)
        killer.start()
        try:
            burst = post_burst(cls.url, cls.api_key, MESSAGES, clients=CLIENTS, prefix="prod-", text=TEXT)
            cls.accepted, cls.refusals = burst.accepted, burst.refusals
            killer.join(timeout=120)
        finally:
            stop.set()
        if killer.is_alive():
            raise AssertionError(f"the provider never reached {MESSAGES // 2} requests: {cls.statuses()}")
        if cls.killed:
            # Still `sending` under the dead worker's lease 5 s after the kill, well inside the
            # lease (the live worker finishes a batch in about a second): the killed batch.
            time.sleep(max(0.0, cls.killed_at + 5 - time.monotonic()))
            sending = Message.objects.using(ALIAS).filter(status="sending")
            now = dict(sending.values_list("subject", "lease_owner"))
            cls.stranded = {s for s, owner in now.items() if cls.sending_at_kill.get(s) == owner}
        cls.wait_delivered()
        cls.rows = list(Message.objects.using(ALIAS).values_list("subject", "status", "possible_duplicate"))
        attempts = DeliveryAttempt.objects.using(ALIAS).values_list("provider", "outcome")
        cls.attempts = {(provider, outcome): n for provider, outcome, n in attempts.annotate(n=Count("id"))}
        cls.per_subject = cls.provider.per_subject()
        cls.metrics_without_token = get(cls.url + "/metrics")
        cls.metrics = get(cls.url + "/metrics", token=cls.metrics_token)
        cls.readyz_up = get(cls.url + "/readyz")
        cls.redis.pause()
        cls.readyz_down = get(cls.url + "/readyz")
        cls.redis.resume()  # the processes stop as they would with Redis up

    @classmethod
    def kill_halfway(cls, stop: threading.Event) -> None:
        """Once the provider has MESSAGES / 2 requests, SIGKILL the RQ worker whose work horse is
        delivering a batch (it holds connections to the provider), with its horse."""
        try:
            while cls.provider.count() < MESSAGES // 2:
                if stop.wait(0.005):
                    return
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not stop.is_set():
                busy = [
                    worker
                    for worker in cls.workers
                    if any(provider_connections(pid, cls.provider.port) for pid in horses(worker))
                ]
                if busy:
                    kill_with_horse(busy[0])
                    cls.killed, cls.killed_at = busy[0], time.monotonic()
                    sending = Message.objects.using(ALIAS).filter(status="sending")
                    cls.sending_at_kill = dict(sending.values_list("subject", "lease_owner"))
                    return
                time.sleep(0.005)
        finally:
            connections[ALIAS].close()  # this thread's connection

    @classmethod
    def statuses(cls) -> Counter:
        return Counter(dict(Message.objects.using(ALIAS).values_list("status").annotate(n=Count("id"))))

    @classmethod
    def wait_delivered(cls) -> None:
        """Until every accepted message is sent; the processes that must live checked all along."""
        alive = [worker for worker in cls.workers if worker is not cls.killed]
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while True:
            for process in (*alive, cls.recovery):
                if not process.alive():
                    raise AssertionError(f"{process.name} exited during the run:\n{process.output()}")
            if cls.web.process.poll() is not None:
                raise AssertionError(f"gunicorn exited:\n{cls.web.error_log.read_text()[-3000:]}")
            statuses = cls.statuses()
            if statuses["sent"] >= len(cls.accepted) and sum(statuses.values()) == statuses["sent"]:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not every message sent within {DELIVERY_TIMEOUT:.0f} s: {statuses}")
            time.sleep(0.25)

    # What it saw ---------------------------------------------------------------------------

    def flagged(self) -> set[str]:
        return {subject for subject, _, duplicate in self.rows if duplicate}

    def received_twice(self) -> set[str]:
        return {subject for subject, count in self.per_subject.items() if count > 1}

    def test_static_files_are_served(self):
        """collectstatic's files are served by WhiteNoise under gunicorn."""
        self.assertEqual(self.static_status, 200)

    def test_every_message_is_accepted(self):
        """Every post is answered 202 (retried at most 5 times)."""
        self.assertEqual(len(self.accepted), MESSAGES, f"refusals: {dict(self.refusals)}")

    def test_no_message_is_lost(self):
        """Every accepted message is sent and reached the provider."""
        subjects = {f"prod-{i}" for i in self.accepted}
        sent = {subject for subject, status, _ in self.rows if status == "sent"}
        lost = (subjects - sent) | (subjects - set(self.per_subject))
        self.assertEqual(sorted(lost)[:10], [], f"{len(lost)} lost")

    def test_no_message_reaches_the_provider_more_than_twice(self):
        """The killed batch may go out twice, never more."""
        self.assertLessEqual(max(self.per_subject.values(), default=0), 2)

    def test_every_duplicate_is_flagged_possible_duplicate(self):
        """A message the provider received twice is flagged possible_duplicate."""
        self.assertEqual(self.received_twice() - self.flagged(), set())

    def test_only_the_killed_batch_is_flagged(self):
        """possible_duplicate is set on the killed worker's batch and nowhere else."""
        if not self.killed:
            self.skipTest("no RQ work horse was running after the halfway point: no worker was killed")
        flagged = self.flagged()
        self.assertTrue(flagged, f"nothing flagged; {len(self.stranded)} held by the dead worker")
        self.assertEqual(flagged - self.stranded, set(), f"{len(self.stranded)} held by the dead worker")

    def test_attempts_are_one_sent_per_message_and_one_ambiguous_per_flag(self):
        """One `sent` attempt per message, one `ambiguous` per flagged message, nothing else."""
        self.assertEqual(self.attempts.get(("sendgrid", "sent"), 0), MESSAGES, self.attempts)
        self.assertEqual(self.attempts.get(("", "ambiguous"), 0), len(self.flagged()), self.attempts)
        unexpected = {key: n for key, n in self.attempts.items() if key[1] not in ("sent", "ambiguous")}
        self.assertEqual(unexpected, {})

    def test_metrics_refuse_a_scrape_without_the_token(self):
        """/metrics answers 401 without MAILSERVICE_METRICS_TOKEN."""
        self.assertEqual(self.metrics_without_token[0], 401)

    def test_metrics_add_up_with_the_database_and_the_provider(self):
        """smtest_messages{status="sent"} is N; the attempts add up with the provider's requests."""
        status, body = self.metrics
        self.assertEqual(status, 200, body[:300])
        samples = parse_metrics(body.decode())

        def value(name, **labels):
            return sum(v for m, found, v in samples if m == name and labels.items() <= found.items())

        attempts_sent = value("smtest_provider_attempts_total", provider="sendgrid", outcome="sent")
        ambiguous = value("smtest_provider_attempts_total", outcome="ambiguous")
        # The provider got every recorded `sent` attempt, plus the sends of the dead work horse
        # that were never recorded (the duplicates); the ambiguous attempts stand for those sends.
        duplicate_requests = sum(self.per_subject.values()) - len(self.per_subject)
        self.assertEqual(
            {
                "sent": value("smtest_messages", status="sent"),
                "attempts sendgrid/sent": attempts_sent,
                "ambiguous": ambiguous,
                "provider requests": sum(self.per_subject.values()),
                "smtest_delivery_seconds_count": value("smtest_delivery_seconds_count"),
                "queue depth": value("smtest_queue_depth"),
                "every attempt": value("smtest_provider_attempts_total"),
            },
            {
                "sent": MESSAGES,
                "attempts sendgrid/sent": MESSAGES,
                "ambiguous": len(self.flagged()),
                "provider requests": attempts_sent + duplicate_requests,
                "smtest_delivery_seconds_count": MESSAGES,
                "queue depth": 0,
                "every attempt": attempts_sent + ambiguous,
            },
        )

    def test_readyz_answers_200_while_redis_is_up(self):
        """/readyz is 200 with every dependency up."""
        status, body = self.readyz_up
        self.assertEqual(status, 200, body[:200])

    def test_readyz_names_redis_once_redis_stops(self):
        """/readyz answers 503 with `redis` in `down` once Redis stops."""
        status, body = self.readyz_down
        self.assertEqual(status, 503, body[:200])
        self.assertIn("redis", json.loads(body).get("down", []), body[:200])
