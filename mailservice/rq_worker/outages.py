"""Which errors mean Redis is away, and waiting for it to come back: the backoff, the stop that
ends a wait, and one log line per change (Redis lost; still lost every REPORT_EVERY seconds;
back). Used by the worker and the scheduler process alike."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis.exceptions

logger = logging.getLogger(__name__)

# The backoff between attempts to reach Redis: FIRST_DELAY seconds, doubling up to MAX_DELAY,
# short enough that a worker is back at work within seconds of Redis (one PING per attempt).
FIRST_DELAY = 1.0
MAX_DELAY = 5.0
# While Redis stays away, one "still unreachable" line every REPORT_EVERY seconds.
REPORT_EVERY = 60.0
# A wait checks this often whether the process was told to stop.
STOP_CHECK_EVERY = 0.2

OUTAGE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# Connection errors by redis-py's classes that waiting does not cure.
CONFIGURATION_ERRORS = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)


def is_redis_outage(error: BaseException) -> bool:
    """Whether `error` says Redis cannot be reached now (down, restarting, loading its data,
    too slow), as opposed to a misconfiguration or a bug."""
    return isinstance(error, OUTAGE_ERRORS) and not isinstance(error, CONFIGURATION_ERRORS)


def backoff_delay(attempt: int, *, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> float:
    """Seconds to wait before attempt `attempt` (0 for the first) to reach Redis again."""
    return min(cap, first * 2 ** min(attempt, 32))


def _never() -> bool:
    return False


class RedisWait:
    """One process's view of Redis: whether it is reachable, the backoff while it is not, and
    the log lines (Redis lost; still lost every REPORT_EVERY seconds; back)."""

    def __init__(
        self,
        who: str,
        *,
        extra: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ):
        self.who = who
        self.extra = extra or {}
        self._clock, self._sleep = clock, sleep
        self._down_since: float | None = None
        self._next_report = 0.0
        self._attempt = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def lost(self, error: BaseException) -> None:
        """Redis failed us: log it, unless it is already known to be away."""
        if self.down:
            return
        self._down_since = self._clock()
        self._next_report = self._down_since + REPORT_EVERY
        logger.warning(
            "%s: Redis unreachable (%s); waiting for it, retrying with backoff up to %g s",
            self.who,
            error,
            MAX_DELAY,
            extra=self.extra,
        )

    def back(self) -> None:
        """Redis answered again: log how long it was away."""
        if not self.down:
            return
        seconds = self._clock() - self._down_since
        self._down_since = None
        self._attempt = 0
        logger.warning(
            "%s: Redis reachable again after %.1f s; back at work",
            self.who,
            seconds,
            extra={**self.extra, "redis_down_seconds": round(seconds, 1)},
        )

    def wait(
        self, error: BaseException, probe: Callable[[], object], *, stopping: Callable[[], bool] = _never
    ) -> bool:
        """After `error`, call `probe` with backoff until it no longer fails for want of Redis.
        True once it succeeds; False as soon as `stopping()` is true. Other errors propagate."""
        self.lost(error)
        while True:
            if not self._pause(backoff_delay(self._attempt), stopping):
                return False
            self._attempt += 1
            try:
                probe()
            except Exception as failure:
                if not is_redis_outage(failure):
                    raise
                self._report(failure)
                continue
            self.back()
            return True

    def _pause(self, seconds: float, stopping: Callable[[], bool]) -> bool:
        deadline = self._clock() + seconds
        while not stopping():
            left = deadline - self._clock()
            if left <= 0:
                return True
            self._sleep(min(left, STOP_CHECK_EVERY))
        return False

    def _report(self, error: BaseException) -> None:
        moment = self._clock()
        if self._down_since is None or moment < self._next_report:
            return
        self._next_report = moment + REPORT_EVERY
        seconds = moment - self._down_since
        logger.warning(
            "%s: Redis still unreachable after %d s (%s)",
            self.who,
            seconds,
            error,
            extra={**self.extra, "redis_down_seconds": round(seconds, 1)},
        )

    def stop_step(self, step: Callable[[], object], *, undone: str, left: str) -> None:
        """Run `step`, a part of stopping that writes to Redis. If Redis is unreachable, stop
        without it, with a log line naming what is `undone` and what is `left` to expire."""
        try:
            step()
        except Exception as error:
            if not is_redis_outage(error):
                raise
            logger.warning(
                "%s: stopped without %s, Redis is unreachable; %s", self.who, undone, left, extra=self.extra
            )
