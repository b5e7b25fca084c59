"""Handing a message to the task queue. The queue is only a wake-up call: losing a task delays
a message until the recovery pass, it never loses it."""
from __future__ import annotations

import logging
import uuid
from datetime import datetime

from django.db import transaction
from django.utils import timezone

logger = logging.getLogger(__name__)


def enqueue_delivery(*, message_id: uuid.UUID | str, run_after: datetime | None = None) -> None:
    """Enqueue the delivery task now; `run_after` defers it where the backend supports that."""
    from mailservice.tasks import deliver_message

    task = deliver_message
    if run_after is not None and run_after > timezone.now():
        if not task.get_backend().supports_defer:
            # e.g. the immediate backend: the recovery pass enqueues it once it is due.
            return
        task = task.using(run_after=run_after)
    task.enqueue(str(message_id))


def enqueue_on_commit(*, message_id: uuid.UUID | str, run_after: datetime | None) -> None:
    """Enqueue once the row is committed, so no worker looks for a message that is not there."""

    def enqueue() -> None:
        try:
            enqueue_delivery(message_id=message_id, run_after=run_after)
        except Exception:
            # The message is stored; recovery will enqueue it again after the grace period.
            logger.exception("delivery enqueue failed", extra={"message_id": str(message_id)})

    transaction.on_commit(enqueue)
