"""The RQ worker's wait for Redis (mailservice/rq_worker/): its backoff, its log lines, which
errors it waits out, and the RQ versions whose internals it was written against. The worker
riding out real Redis outages is tested in tests/servers/test_rq_outage.py."""

from __future__ import annotations

import importlib.metadata

import redis
import redis.exceptions
from django.test import SimpleTestCase
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq.exceptions import StopRequested

from mailservice.rq_worker import ReconnectingWorker
from mailservice.rq_worker.outages import (
    MAX_DELAY,
    REPORT_EVERY,
    STOP_CHECK_EVERY,
    RedisWait,
    backoff_delay,
    is_redis_outage,
)
from tests.servers.real import free_port

LOGGER = "mailservice.rq_worker"


class FakeClock:
    """A monotonic clock that moves only when slept on."""

    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FailingProbe:
    """Fails with `error` `times` times, then answers."""

    def __init__(self, times: int, error: Exception | None = None, clock: FakeClock | None = None):
        self.left, self.error, self.clock = times, error or redis.exceptions.ConnectionError("refused"), clock
        self.calls: list[float] = []

    def __call__(self) -> None:
        self.calls.append(self.clock.now if self.clock else 0.0)
        if self.left:
            self.left -= 1
            raise self.error


def waiting(clock: FakeClock) -> RedisWait:
    return RedisWait("RQ worker w1", extra={"rq_worker": "w1"}, clock=clock, sleep=clock.sleep)


class BackoffTests(SimpleTestCase):
    def test_backoff_doubles_from_one_second_up_to_its_cap(self):
        """Attempts wait 1, 2, 4 s, then the cap (5 s), however long Redis stays away."""
        self.assertEqual(
            [backoff_delay(n) for n in range(7)], [1, 2, 4, MAX_DELAY, MAX_DELAY, MAX_DELAY, MAX_DELAY]
        )
        self.assertEqual(backoff_delay(10_000), MAX_DELAY)


class RedisWaitTests(SimpleTestCase):
    def test_wait_retries_on_the_backoff_until_redis_answers(self):
        """Each failed attempt waits the next backoff step; the wait ends at the first answer."""
        clock = FakeClock()
        probe = FailingProbe(3, clock=clock)
        self.assertTrue(waiting(clock).wait(redis.exceptions.ConnectionError("gone"), probe))
        self.assertEqual([call - 1000.0 for call in probe.calls], [1, 3, 7, 12])

    def test_wait_logs_lost_and_back_once_each(self):
        """A short outage is two log lines, whatever the number of attempts: lost, then back."""
        clock = FakeClock()
        with self.assertLogs(LOGGER, "INFO") as logs:
            waiting(clock).wait(redis.exceptions.ConnectionError("gone"), FailingProbe(3))
        self.assertEqual(len(logs.records), 2, logs.output)
        self.assertIn("Redis unreachable (gone)", logs.records[0].getMessage())
        self.assertIn("Redis reachable again after 12.0 s", logs.records[1].getMessage())
        self.assertEqual((logs.records[0].rq_worker, logs.records[1].redis_down_seconds), ("w1", 12.0))

    def test_wait_reports_a_long_outage_once_a_minute(self):
        """While Redis stays away, one "still unreachable" line per REPORT_EVERY seconds."""
        clock = FakeClock()
        with self.assertLogs(LOGGER, "INFO") as logs:
            waiting(clock).wait(redis.exceptions.ConnectionError("gone"), FailingProbe(52))
        still = [record.getMessage() for record in logs.records if "still unreachable" in record.getMessage()]
        self.assertEqual(REPORT_EVERY, 60)
        # Attempts fail at 1, 3, 7, 12, 17 … 252 s; Redis answers at 257 s.
        seconds = [line.split(" after ")[1].split(" ")[0] for line in still]
        self.assertEqual(seconds, ["62", "122", "182", "242"])  # the first failed attempt past each minute
        self.assertEqual(len(logs.records), 2 + len(still))

    def test_wait_ends_as_soon_as_the_process_is_told_to_stop(self):
        """A stop ends the wait within a fraction of a second, mid-backoff, without another try."""
        clock = FakeClock()
        probe = FailingProbe(100, clock=clock)
        stop_at = 1000.0 + 1 + 2 + 0.5  # during the wait before the third attempt
        result = waiting(clock).wait(
            redis.exceptions.ConnectionError("gone"), probe, stopping=lambda: clock.now >= stop_at
        )
        self.assertFalse(result)
        self.assertEqual(len(probe.calls), 2)
        self.assertLess(clock.now - stop_at, STOP_CHECK_EVERY + 1e-9)

    def test_wait_lets_other_errors_through(self):
        """An error that is not a Redis outage ends the wait with that error."""
        clock = FakeClock()
        with self.assertRaises(redis.exceptions.ResponseError):
            probe = FailingProbe(1, redis.exceptions.ResponseError("WRONGTYPE"))
            waiting(clock).wait(redis.exceptions.ConnectionError("gone"), probe)

    def test_an_outage_noted_twice_is_logged_once(self):
        """Noting the outage again while Redis is known to be away logs nothing more."""
        wait = waiting(FakeClock())
        with self.assertLogs(LOGGER, "INFO") as logs:
            wait.lost(redis.exceptions.ConnectionError("gone"))
            wait.lost(redis.exceptions.TimeoutError("slow"))
            wait.back()
            wait.back()
        self.assertEqual(len(logs.records), 2, logs.output)


class OutageErrorTests(SimpleTestCase):
    def test_connection_errors_and_timeouts_are_outages(self):
        """Refused or dropped connections, timeouts and a Redis loading its data are waited out."""
        for error in (
            redis.exceptions.ConnectionError("x"),
            redis.exceptions.TimeoutError("x"),
            redis.exceptions.BusyLoadingError("x"),
        ):
            self.assertTrue(is_redis_outage(error), error)

    def test_a_refused_password_or_a_bug_is_not_an_outage(self):
        """A wrong password and any other error end the worker as RQ would."""
        for error in (
            redis.exceptions.AuthenticationError("x"),
            redis.exceptions.AuthorizationError("x"),
            redis.exceptions.ResponseError("x"),
            ValueError("x"),
            StopRequested(),
        ):
            self.assertFalse(is_redis_outage(error), error)


class WorkerTests(SimpleTestCase):
    def test_a_worker_can_be_created_while_redis_is_down(self):
        """Creating the worker (what `manage.py rqworker` does first) does not fail without Redis."""
        connection = redis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))
        worker = ReconnectingWorker(["default"], connection=connection)
        self.assertEqual(worker.ip_address, "unknown")
        self.assertFalse(worker.redis_wait.down)

    def test_written_against_these_rq_versions(self):
        """mailservice/rq_worker/ overrides RQ's worker internals as rq 3.0 and django-rq 4.2 have
        them: read rq's worker/base.py and scheduler.py again before upgrading either."""
        versions = {name: importlib.metadata.version(name) for name in ("rq", "django-rq")}
        self.assertEqual(
            {name: version.rsplit(".", 1)[0] for name, version in versions.items()},
            {"rq": "3.0", "django-rq": "4.2"},
            versions,
        )
