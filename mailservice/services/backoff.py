"""When a deferred message is tried again (docs/delivery.md, "Retries"): the delivery retry's
schedule, kept apart from the sending that judges an outcome so the formula has one home."""

from __future__ import annotations

import random

from mailservice import conf


def retry_delay(*, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before retry number `attempt` (1-based): exponential, capped, with jitter that
    shortens each delay by up to MAILSERVICE_RETRY_JITTER so retries of an outage spread out."""
    base = conf.retry_base_delay() * (2 ** max(attempt - 1, 0))
    delay = min(base, conf.retry_max_delay())
    jitter = conf.retry_jitter()
    if jitter:
        delay *= 1 - jitter * (rng or random).random()
    return delay
