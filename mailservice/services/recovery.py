"""Recovery: no accepted message waits forever. A pass re-enqueues delivery for messages whose
task was lost or whose worker died (expired lease), drops expired idempotency keys, and links
tracking events that arrived before their send was recorded (docs/delivery.md)."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from mailservice import conf
from mailservice.models import IdempotencyKey, Message
from mailservice.services.linking import tracking_events_link_unlinked
from mailservice.tasks import enqueue_delivery_on_commit

logger = logging.getLogger(__name__)

# Events that arrived unlinked this recently are retried by each recovery pass: long enough to
# cover a send whose bookkeeping raced its own webhook, short enough to keep the pass cheap.
UNLINKED_EVENT_WINDOW = 3600.0


def message_recover(*, now: datetime | None = None, limit: int | None = None) -> int:
    """Enqueue a delivery task for every message whose task was lost or whose worker died
    (expired lease); drop expired idempotency keys. Safe to run from many processes at once:
    a message gets a duplicate task at worst, and only one task can claim it."""
    now = now or timezone.now()
    grace = conf.recovery_grace()
    limit = limit or conf.recovery_batch()
    stuck = list(
        Message.objects.needs_recovery(now, grace).order_by("next_attempt_at").values_list("pk", flat=True)[:limit]
    )
    recovered = 0
    for pk in stuck:
        with transaction.atomic():
            if Message.objects.needs_recovery(now, grace).filter(pk=pk).update(enqueued_at=now):
                enqueue_delivery_on_commit(message_id=pk, run_after=None)
                recovered += 1
                logger.warning("message recovered: delivery enqueued again", extra={"message_id": str(pk)})
    expired, _ = IdempotencyKey.objects.filter(expires_at__lte=now).delete()
    linked = tracking_events_link_unlinked(since=now - timedelta(seconds=UNLINKED_EVENT_WINDOW))
    if recovered or expired or linked:
        logger.info(
            "recovery pass recovered=%s idempotency_keys_expired=%s events_linked=%s",
            recovered,
            expired,
            linked,
            extra={"recovered": recovered, "expired_keys": expired, "events_linked": linked},
        )
    return recovered
