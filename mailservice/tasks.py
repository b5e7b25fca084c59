"""The delivery task and the one place that puts it on the task queue.

The queue only wakes workers: the Message rows say what is due, and a woken task delivers a batch
of whatever is due, whichever request accepted it. Wake-ups are coalesced through the cache, so
an accept storm does not become a storm of task rows; losing one delays messages until the
recovery pass and never loses them (docs/delivery.md, "Waking workers").
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from datetime import datetime

from django.core.cache import cache
from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from mailservice import conf
from mailservice.compat import task
from mailservice.models import Message
from mailservice.models.messages import READY_STATUSES
from mailservice.services.delivery import message_deliver, messages_deliver

logger = logging.getLogger(__name__)

WAKE_KEY = "mailservice:delivery-wakeup"
# How long a wake-up counts as pending without its task starting: after this, the next accept
# enqueues another, so a lost task costs seconds, not the recovery grace period.
WAKE_PENDING_SECONDS = 10


@task()
def deliver_due() -> dict[str, int]:
    """Deliver one batch of whatever is due. A full batch wakes another worker before sending,
    so idle workers join in; every round then schedules the wake-up for the next due message."""
    _forget(WAKE_KEY)  # from now on, an accept wakes a new round instead of counting on this one
    size = conf.batch_size()

    def claimed(batch: list[Message]) -> None:
        if len(batch) >= size:
            wake_delivery()

    batch = messages_deliver(limit=size, claimed=claimed)
    # Every round leaves the next one scheduled: a full batch's woken round may end before this
    # one records its retries or releases (at most one wake-up per second is enqueued).
    wake_for_next_due()
    return dict(Counter(str(message.status) for message in batch))


@task()
def deliver_message(message_id: str) -> str | None:
    """One round for one message: what versions before batched rounds enqueued per message.
    Task rows they left in the queue still deliver; new code wakes `deliver_due`."""
    message = message_deliver(message_id=message_id)
    wake_for_next_due()
    return None if message is None else str(message.status)


def wake_for_next_due() -> None:
    """Wake a round for the earliest message waiting for one (scheduled, a retry, or one accepted
    while this round ran): each round leaves the next one scheduled."""
    due = Message.objects.filter(status__in=READY_STATUSES).aggregate(due=Min("next_attempt_at"))["due"]
    if due is not None:
        wake_delivery(at=due)


def wake_delivery(*, at: datetime | None = None, force: bool = False) -> bool:
    """Enqueue `deliver_due` now, or at `at` where the backend can defer, unless a wake-up for
    the same moment is already pending (`force` enqueues anyway). True when one was enqueued.
    Never raises: the messages are stored either way, and the recovery pass wakes a lost round."""
    now = timezone.now()
    delivery, key, ttl = deliver_due, WAKE_KEY, float(WAKE_PENDING_SECONDS)
    try:
        if at is not None and at > now:
            if not delivery.get_backend().supports_defer:
                return False  # e.g. the immediate backend: the recovery pass wakes it once due
            second = math.ceil(at.timestamp())  # one wake-up per second of due times at most
            key, ttl = f"{WAKE_KEY}:{second}", second - now.timestamp() + WAKE_PENDING_SECONDS
            delivery = delivery.using(run_after=datetime.fromtimestamp(second, tz=at.tzinfo))
        if _already_pending(key, ttl, force=force):
            return False
        delivery.enqueue()
        return True
    except Exception:
        # The messages are stored; recovery wakes a round for them after the grace period.
        logger.exception("delivery wake-up failed", extra={"run_after": at.isoformat() if at else None})
        _forget(key)  # not pending after all: the next accept tries again
        return False


def _already_pending(key: str, ttl: float, *, force: bool) -> bool:
    """Mark a wake-up pending; True when one already was. A cache that fails never blocks one."""
    try:
        if force:
            cache.set(key, 1, ttl)
            return False
        return not cache.add(key, 1, ttl)
    except Exception:
        logger.exception("delivery wake-up: the cache failed; waking anyway")
        return False


def _forget(key: str) -> None:
    try:
        cache.delete(key)
    except Exception:
        logger.exception("delivery wake-up: the cache failed")


def wake_delivery_on_commit(*, at: datetime | None = None, force: bool = False) -> None:
    """Wake once the transaction commits, so the woken worker sees the rows it is woken for."""
    transaction.on_commit(lambda: wake_delivery(at=at, force=force))
