"""RQ workers ride out Redis outages (docs/deployment.md, "Outages"): `manage.py rqworker`, with
no flag beyond the unit file's, waits for a stopped Redis and takes jobs again once it is back,
whether Redis stops under a running worker or is down when the worker starts, and SIGTERM still
stops a worker that is waiting for Redis, at once and cleanly.

Redis really stops here (SIGTERM, as `systemctl stop redis-server` does) and starts again on the
same port, empty, as a server without persistence comes back."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter

import redis

from mailservice.models import Message
from tests.e2e.processes import Process, wait_until
from tests.servers.base import ALIAS, RealServersTestCase
from tests.servers.stack import QUEUE_DB

# How long Redis stays away: longer than the first steps of the workers' backoff (1, 2 s).
OUTAGE = 5.0
LOST = re.compile(r"RQ (worker|scheduler) (\w+): Redis unreachable")
BACK = re.compile(r"RQ (worker|scheduler) (\w+): Redis reachable again")
SCHEDULER_STARTED = re.compile(r"Scheduler for default started")


class RqOutageTests(RealServersTestCase):
    needs = ("postgres", "redis")
    provider_per_test = True

    def setUp(self):
        super().setUp()
        self.addCleanup(self.redis.resume)  # whatever a test leaves, the next one finds Redis up

    # Helpers -------------------------------------------------------------------------------

    def start_worker(self, env: dict[str, str]) -> Process:
        return self.start_rq_worker("rqworker", env=env)

    def log(self, worker: Process) -> str:
        return worker.log_path.read_text(errors="replace")

    def wait_for_log(self, worker: Process, pattern: re.Pattern, count: int = 1) -> None:
        def seen():
            self.assertTrue(worker.alive(), f"the worker exited:\n{worker.output()}")
            return len(pattern.findall(self.log(worker))) >= count

        wait_until(seen, timeout=30, what=f"{count} × {pattern.pattern!r} in the worker's log")

    def statuses(self) -> Counter:
        return Counter(Message.objects.using(ALIAS).values_list("status", flat=True))

    def seed_and_wait_sent(self, env: dict[str, str], count: int, prefix: str, worker: Process) -> None:
        self.child("seed", str(count), "--prefix", prefix, env=env)

        def sent():
            self.assertTrue(worker.alive(), f"the worker exited:\n{worker.output()}")
            subjects = self.provider.per_subject()
            return sum(n for subject, n in subjects.items() if subject.startswith(prefix)) >= count

        wait_until(sent, timeout=30, what=f"{count} messages {prefix}* sent; statuses {self.statuses()}")

    def queue_redis(self) -> redis.Redis:
        connection = redis.Redis.from_url(self.redis.url_for(QUEUE_DB), socket_timeout=2)
        self.addCleanup(connection.close)
        return connection

    def registered_workers(self) -> set[str]:
        return {key.decode().rsplit(":", 1)[1] for key in self.queue_redis().smembers("rq:workers")}

    def outage_lines(self, worker: Process) -> dict[str, Counter]:
        text = self.log(worker)
        return {
            "lost": Counter(kind for kind, _ in LOST.findall(text)),
            "back": Counter(kind for kind, _ in BACK.findall(text)),
        }

    # Tests -----------------------------------------------------------------------------------

    def test_a_running_worker_rides_out_a_redis_restart(self):
        """A running rqworker waits while Redis is stopped and restarted on the same port, registers
        again, and delivers the messages accepted afterwards."""
        env = self.sending_environment()
        worker = self.start_worker(env)
        self.seed_and_wait_sent(env, 3, "before-", worker)

        self.redis.pause()
        self.wait_for_log(worker, LOST, count=2)  # the worker and its scheduler
        time.sleep(OUTAGE)
        self.assertTrue(worker.alive(), worker.output())
        self.redis.resume()

        self.seed_and_wait_sent(env, 3, "after-", worker)
        self.wait_for_log(worker, BACK, count=2)
        name = next(name for kind, name in LOST.findall(self.log(worker)) if kind == "worker")
        wait_until(lambda: name in self.registered_workers(), timeout=10, what="the worker registered again")
        self.assertTrue(self.queue_redis().exists("rq:scheduler-lock:default"), "the scheduler's lock")
        self.assertEqual(
            self.outage_lines(worker),
            {"lost": Counter(worker=1, scheduler=1), "back": Counter(worker=1, scheduler=1)},
        )
        self.assertNotIn("quitting", self.log(worker))
        self.assertEqual(self.statuses(), Counter({"sent": 6}))

    def test_a_worker_started_while_redis_is_down_waits_for_it(self):
        """An rqworker started with Redis stopped keeps waiting for it, then delivers once it starts."""
        env = self.sending_environment()
        self.redis.pause()
        worker = self.start_worker(env)
        self.wait_for_log(worker, LOST)
        time.sleep(OUTAGE)
        self.assertTrue(worker.alive(), worker.output())
        self.redis.resume()

        self.seed_and_wait_sent(env, 3, "late-", worker)
        self.assertEqual(self.outage_lines(worker), {"lost": Counter(worker=1), "back": Counter(worker=1)})
        self.assertEqual(len(self.registered_workers()), 1)

    def test_a_worker_busy_when_redis_stops_keeps_taking_jobs(self):
        """A worker whose horse is sending when Redis stops survives the outage and takes new jobs."""
        self.provider.delay = 0.3  # 6 messages one at a time: about 2 s of sending
        env = self.sending_environment(MAILSERVICE_BATCH_SIZE="6", MAILSERVICE_SEND_CONCURRENCY="1")
        worker = self.start_worker(env)
        self.child("seed", "6", "--prefix", "busy-", env=env)
        wait_until(lambda: self.provider.count() >= 1, timeout=30, what="the worker to start sending")

        self.redis.pause()
        time.sleep(OUTAGE)  # the horse ends its batch while Redis is away
        self.assertTrue(worker.alive(), worker.output())
        self.redis.resume()

        self.seed_and_wait_sent(env, 3, "after-", worker)
        self.assertNotIn("quitting", self.log(worker))

    def test_sigterm_stops_a_worker_waiting_for_redis(self):
        """SIGTERM to a worker waiting for Redis stops it and its scheduler within seconds, exit 0."""
        worker = self.start_worker(self.sending_environment())
        self.wait_for_log(worker, SCHEDULER_STARTED)
        self.redis.pause()
        self.wait_for_log(worker, LOST, count=2)

        started = time.monotonic()
        worker.popen.send_signal(signal.SIGTERM)  # the main process only, as KillMode=mixed does
        wait_until(lambda: not worker.alive(), timeout=10, what="the worker to exit")
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(worker.popen.returncode, 0, worker.output())
        with self.assertRaises(ProcessLookupError):  # nothing left of it: the scheduler has gone too
            os.killpg(worker.popen.pid, 0)
