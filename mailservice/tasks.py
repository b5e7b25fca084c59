"""The delivery task and the one place that puts it on the task queue.

The queue only wakes workers: the Message rows say what is due, and a woken task delivers a batch
of whatever is due, whichever request accepted it. Wake-ups are coalesced through the cache, so
an accept storm does not become a storm of task rows; losing one delays messages until the
recovery pass and never loses them (docs/delivery.md, "Waking workers").
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from django.core.cache import cache
from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from mailservice import conf
from mailservice.availability import unavailable_dependency
from mailservice.compat import task
from mailservice.models import Message
from mailservice.models.messages import READY_STATUSES
from mailservice.services.delivery import message_deliver, messages_deliver
from mailservice.statuses import MessageStatus

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
    # RQ runs each round in a work horse that exits when it ends, taking a background retry with
    # it: a wake-up the queue refused is paid here, for a while, before the round returns.
    settle_owed_wake_up(timeout=OWED_SETTLE_SECONDS)
    return dict(Counter(str(message.status) for message in batch))


@task()
def deliver_message(message_id: str) -> str | None:
    """One round for one message, by id. The gateway enqueues only `deliver_due`; this task
    stays so that task rows naming it, still waiting in a queue, deliver rather than fail."""
    message = message_deliver(message_id=message_id)
    wake_for_next_due()
    return None if message is None else str(message.status)


def wake_for_next_due() -> None:
    """Wake a round for the earliest message waiting for one (scheduled, a retry, or one accepted
    while this round ran), or for the earliest lease to expire (a worker that died holding
    messages loses them then): each round leaves the next one scheduled."""
    due = Message.objects.filter(status__in=READY_STATUSES).aggregate(due=Min("next_attempt_at"))["due"]
    expires = Message.objects.filter(status=MessageStatus.SENDING).aggregate(at=Min("lease_expires_at"))["at"]
    candidates = [at for at in (due, expires) if at is not None]
    if candidates:
        wake_delivery(at=min(candidates))


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
        _back("queue")
        return True
    except Exception as error:
        # The messages are stored; this process tries again until the queue takes it (and
        # recovery wakes a round after the grace period whatever happens to this process).
        _outage("queue", error, extra={"run_after": at.isoformat() if at else None})
        _forget(key)  # not pending after all: the next accept tries again
        _owe_wake_up()
        return False


# What is out of reach now, as far as this process has seen: one WARNING when it goes, one when
# it is back, however many accepts meet it meanwhile (each would otherwise log a traceback).
_down: dict[str, float] = {}
_down_lock = threading.Lock()


def _outage(what: str, error: Exception, *, extra: dict | None = None) -> None:
    with _down_lock:
        first = what not in _down
        _down.setdefault(what, time.monotonic())
    if first:
        logger.warning(
            "delivery wake-up: the %s is out of reach (%s); messages are stored and woken once it is back",
            what,
            type(error).__name__,
            extra={"dependency": what, "error_class": type(error).__name__, **(extra or {})},
            exc_info=unavailable_dependency(error) is None,  # a traceback only for what looks like a bug
        )
    else:
        logger.debug("delivery wake-up: the %s is still out of reach", what)


def _back(what: str) -> None:
    with _down_lock:
        since = _down.pop(what, None)
    if since is not None:
        logger.warning(
            "delivery wake-up: the %s is back after %.1f s",
            what,
            time.monotonic() - since,
            extra={"dependency": what, "down_seconds": round(time.monotonic() - since, 1)},
        )


_owed = threading.Event()
_owed_lock = threading.Lock()
_retrier: threading.Thread | None = None
OWED_FIRST_PAUSE = 0.5
OWED_MAX_PAUSE = 5.0
# How long a round waits, before it returns, for a wake-up the queue refused (a Redis outage):
# the recovery pass makes up what is still owed after that.
OWED_SETTLE_SECONDS = 30.0


def _owe_wake_up() -> None:
    """Remember that a wake-up could not be enqueued, and retry it from a background thread of
    this process with growing pauses until the queue takes one: messages accepted during a
    queue outage are woken within seconds of its end, not at the next recovery pass."""
    global _retrier
    with _owed_lock:
        _owed.set()
        if _retrier is None:
            _retrier = threading.Thread(target=_pay_owed_wake_ups, name="mailservice-wake-retry", daemon=True)
            _retrier.start()


def settle_owed_wake_up(*, timeout: float) -> bool:
    """Wait up to `timeout` seconds for an owed wake-up to be paid; True when none is owed."""
    deadline = time.monotonic() + timeout
    while _owed.is_set() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _owed.is_set()


def forget_owed_wake_up() -> None:
    """Stop retrying an owed wake-up, and forget outages seen (tests; the recovery pass covers
    what is still due)."""
    _owed.clear()
    with _down_lock:
        _down.clear()


def _pay_owed_wake_ups(sleep: Callable[[float], None] = time.sleep) -> None:
    global _retrier
    pause = OWED_FIRST_PAUSE
    while True:
        sleep(pause)
        with _owed_lock:
            if not _owed.is_set():
                _retrier = None
                return
            _owed.clear()  # a failure from now on owes another
        try:
            deliver_due.enqueue()
        except Exception as error:
            _owed.set()
            pause = min(pause * 2, OWED_MAX_PAUSE)
            logger.debug("owed delivery wake-up still failing: %s", type(error).__name__)
            continue
        logger.info("owed delivery wake-up enqueued")
        _back("queue")


def _already_pending(key: str, ttl: float, *, force: bool) -> bool:
    """Mark a wake-up pending; True when one already was. A cache that fails never blocks one."""
    try:
        if force:
            cache.set(key, 1, ttl)
            pending = False
        else:
            pending = not cache.add(key, 1, ttl)
    except Exception as error:
        _outage("cache", error)  # waking anyway: the cache only coalesces
        return False
    _back("cache")
    return pending


def _forget(key: str) -> None:
    try:
        cache.delete(key)
    except Exception as error:
        _outage("cache", error)


def wake_delivery_on_commit(*, at: datetime | None = None, force: bool = False) -> None:
    """Wake once the transaction commits, so the woken worker sees the rows it is woken for."""
    transaction.on_commit(lambda: wake_delivery(at=at, force=force))
