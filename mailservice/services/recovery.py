"""Recovery: no accepted message waits forever. A pass wakes delivery again for messages whose
wake-up was lost or whose worker died (expired lease), drops expired idempotency keys, and links
tracking events that arrived before their send was recorded (docs/delivery.md)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from mailservice import conf
from mailservice.models import IdempotencyKey, Message
from mailservice.services.linking import tracking_events_link_unlinked
from mailservice.tasks import wake_delivery_on_commit

logger = logging.getLogger(__name__)

# Events that arrived unlinked this recently are retried by each recovery pass: long enough to
# cover a send whose bookkeeping raced its own webhook, short enough to keep the pass cheap.
UNLINKED_EVENT_WINDOW = 3600.0


def message_recover(*, now: datetime | None = None, limit: int | None = None) -> int:
    """Wake a delivery round for the messages whose wake-up was lost or whose worker died
    (expired lease); drop expired idempotency keys. Safe to run from many processes at once:
    a duplicate wake-up at worst, and only one worker can claim a message."""
    now = now or timezone.now()
    grace = conf.recovery_grace()
    limit = limit or conf.recovery_batch()
    stuck = list(
        Message.objects.needs_recovery(now, grace)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    recovered = 0
    if stuck:
        with transaction.atomic():
            recovered = (
                Message.objects.needs_recovery(now, grace).filter(pk__in=stuck).update(enqueued_at=now)
            )
            if recovered:
                # Forced: a wake-up marked pending whose task was lost must not hold this one back.
                wake_delivery_on_commit(force=True)
        if recovered:
            logger.warning(
                "messages recovered: delivery woken again count=%s",
                recovered,
                extra={"count": recovered, "message_ids": [str(pk) for pk in stuck[:20]]},
            )
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
