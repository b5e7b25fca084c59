"""How many sends a worker process keeps in flight (docs/delivery.md, "Batches and concurrency"):
the controller a round's dispatch asks before starting another sender thread
(services/dispatch.py), one per worker process, so what one round learned about the provider
carries over to the next."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

# How often the number of sends in flight is reconsidered.
CONTROL_GAP = 0.1
# Provider pushback (a 429, or 5xx for OVERLOAD_SHARE of the sends) halves the sends in flight
# at most this often.
CUT_GAP = 1.0
OVERLOAD_SHARE = 0.3
THROTTLED, FAILING = "throttled", "failing"
# Below this process CPU use (share of one core) the sends mostly wait on the provider: the
# number in flight doubles. Above it, one more or one fewer is tried, kept while it sends more.
IDLE_BELOW = 0.3
# A change of rate smaller than this share is noise.
RATE_NOISE = 0.03


class Concurrency:
    """How many sends a worker process keeps in flight, between 1 and `ceiling`
    (MAILSERVICE_SEND_CONCURRENCY). While the process has CPU to spare its sends wait on the
    provider, so the number doubles; near a full core it climbs by one at a time for as long as
    that sends more per second, and turns back when it sends fewer (threads contending for the
    interpreter). A provider pushing back (a 429, or 5xx for a large share of the sends) halves
    it. A provider answering in 200 ms is driven by the ceiling within half a second; one
    answering at once, by two or three."""

    def __init__(
        self,
        ceiling: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ):
        self.ceiling = max(1, ceiling)
        self.target = 1
        self.rate = 0.0  # sends finished per second in the last round
        self._clock, self._cpu = clock, cpu
        self._window: tuple[float, float, int] | None = None  # (time, cpu, sends finished)
        self._last_cut = -math.inf
        self._throttled = False  # a 429 since the last look
        self._answers = 0  # sends finished since the last look…
        self._failing = 0  # …and how many of them met a 5xx
        self._direction = 1
        self._last_rate: float | None = None
        self._lock = threading.Lock()

    def answered(self, pushback: str | None) -> None:
        """One send finished; `pushback` is THROTTLED (a 429), FAILING (a 5xx) or None."""
        self._answers += 1
        if pushback == THROTTLED:
            self._throttled = True
        elif pushback == FAILING:
            self._failing += 1

    def adjust(self, *, finished: int, saturated: bool) -> int:
        """Reconsider the target. `finished`: sends finished so far in this round; `saturated`:
        work was waiting for a sender all along (only then does the rate say anything)."""
        with self._lock:  # rounds may run in several threads of one process (the immediate queue)
            return self._adjust(finished=finished, saturated=saturated)

    def _adjust(self, *, finished: int, saturated: bool) -> int:
        now, cpu = self._clock(), self._cpu()
        window = self._window
        if window is None or not saturated or finished < window[2]:
            self._window = (now, cpu, finished)  # a new round, or idle senders: start afresh
            return self.target
        started, cpu_started, finished_before = window
        if now - started < CONTROL_GAP:
            return self.target
        self._window = (now, cpu, finished)
        used = (cpu - cpu_started) / (now - started)
        rate = (finished - finished_before) / (now - started)
        throttled, failing, answers = self._throttled, self._failing, self._answers
        self._throttled, self._failing, self._answers = False, 0, 0
        # A 429 is a request to slow down; a few 5xx among many answers are the provider's
        # everyday errors (the next provider takes those messages), a large share is overload.
        if throttled or (answers and failing / answers >= OVERLOAD_SHARE):
            if now - self._last_cut >= CUT_GAP:
                self._last_cut, self._last_rate, self._direction = now, None, 1
                self.target = max(1, self.target // 2)
                return self.target
        if now - self._last_cut < CUT_GAP:
            return self.target
        if used < IDLE_BELOW:
            self._last_rate, self._direction = None, 1
            self.target = min(self.ceiling, self.target * 2)
            return self.target
        if self._last_rate is not None:
            if rate < self._last_rate * (1 - RATE_NOISE):
                self._direction = -self._direction  # the last step made it worse: go back
            elif rate <= self._last_rate * (1 + RATE_NOISE):
                self._last_rate = max(rate, self._last_rate)
                return self.target  # no better, no worse: stay
        self._last_rate = rate
        self.target = min(self.ceiling, max(1, self.target + self._direction))
        return self.target
