"""The delivery task and the one place that puts it on the task queue.

The queue is only a wake-up call: the Message row says what to do, so losing a task delays a
message until the recovery pass and never loses it (docs/delivery.md). Services decide *when* a
message is due; this module turns that into a task.
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from mailservice.compat import task
from mailservice.services.delivery import message_deliver
from mailservice.statuses import MessageStatus

logger = logging.getLogger(__name__)


@task()
def deliver_message(message_id: str) -> str | None:
    """One delivery round for the message; a deferral schedules the next round."""
    message = message_deliver(message_id=message_id)
    if message is None:
        return None
    if message.status == MessageStatus.DEFERRED and message.next_attempt_at is not None:
        enqueue_delivery(message_id=message.pk, run_after=message.next_attempt_at)
    return message.status


def enqueue_delivery(*, message_id: uuid.UUID | str, run_after: datetime | None = None) -> None:
    """Enqueue the delivery task now; `run_after` defers it where the backend supports that.
    Never raises: the message is stored either way, and the recovery pass covers a lost task."""
    try:
        delivery = deliver_message
        if run_after is not None and run_after > timezone.now():
            if not delivery.get_backend().supports_defer:
                # e.g. the immediate backend: the recovery pass enqueues it once it is due.
                return
            delivery = delivery.using(run_after=run_after)
        delivery.enqueue(str(message_id))
    except Exception:
        # The message is stored; recovery will enqueue it again after the grace period.
        logger.exception("delivery enqueue failed", extra={"message_id": str(message_id)})


def enqueue_delivery_on_commit(*, message_id: uuid.UUID | str, run_after: datetime | None) -> None:
    """Enqueue once the row is committed, so no worker looks for a message that is not there."""
    transaction.on_commit(lambda: enqueue_delivery(message_id=message_id, run_after=run_after))
