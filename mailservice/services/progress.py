"""Moving recipients forward on provider events, never back, and their messages with them
(docs/webhooks.md, "Statuses"). Used when events are recorded and when early events are linked
late; a batch of any size costs a fixed number of queries."""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from anymail.signals import EventType
from django.utils import timezone

from mailservice.models import Message, Recipient
from mailservice.statuses import FINAL_RECIPIENT_STATUSES, RecipientStatus, advances, summarize

logger = logging.getLogger(__name__)

# What each normalized Anymail event does to a recipient. Events absent here (queued, sent,
# deferred, opened, clicked, unsubscribed, ...) are recorded without changing any status.
EVENT_STATUS = {
    EventType.DELIVERED: RecipientStatus.DELIVERED,
    EventType.BOUNCED: RecipientStatus.BOUNCED,
    EventType.REJECTED: RecipientStatus.REJECTED,
    EventType.FAILED: RecipientStatus.FAILED,
    EventType.COMPLAINED: RecipientStatus.COMPLAINED,
}


def recipients_advance(changes: Iterable[tuple[int | None, str, datetime]]) -> int:
    """Move recipients forward (never back) by (recipient id, event type, when) in time order,
    then re-summarize their messages. Returns how many recipients changed.

    Writes are grouped by the value written: one UPDATE per new recipient status and one per
    new message status, not a CASE per row (which costs Django milliseconds per row to build)."""
    targets: dict[int, RecipientStatus] = {}
    for recipient_id, event_type, _when in sorted(changes, key=lambda change: change[2]):
        new = EVENT_STATUS.get(event_type)
        if new is None or recipient_id is None:
            continue
        current = targets.get(recipient_id)
        if current is None or advances(current, new):
            targets[recipient_id] = new
    if not targets:
        return 0
    now = timezone.now()
    by_status: dict[RecipientStatus, list[int]] = defaultdict(list)
    message_ids = set()
    for pk, message_id, status in (
        Recipient.objects.select_for_update().filter(pk__in=list(targets)).values_list("pk", "message_id", "status")
    ):
        if advances(status, targets[pk]):
            by_status[targets[pk]].append(pk)
            message_ids.add(message_id)
    for status, pks in by_status.items():
        Recipient.objects.filter(pk__in=pks).update(status=status, updated_at=now)
    if message_ids:
        _summarize_messages(message_ids, now=now)
    return sum(len(pks) for pks in by_status.values())


def _summarize_messages(message_ids: set, *, now: datetime) -> None:
    statuses: dict = defaultdict(list)
    for message_id, status in Recipient.objects.filter(message_id__in=message_ids).values_list("message_id", "status"):
        statuses[message_id].append(status)
    changes: dict[tuple[str, bool], list] = defaultdict(list)
    for message_id, old, finished_at in Message.objects.filter(pk__in=message_ids).values_list(
        "pk", "status", "finished_at"
    ):
        new = summarize(statuses[message_id])
        finishes = finished_at is None and all(s in FINAL_RECIPIENT_STATUSES for s in statuses[message_id])
        changes[(new, finishes)].append(message_id)
        if old != new:
            logger.info(
                "message %s -> %s by provider event",
                old,
                new,
                extra={"message_id": str(message_id), "status": str(new)},
            )
    for (status, finishes), pks in changes.items():
        fields = {"status": status, "updated_at": now, **({"finished_at": now} if finishes else {})}
        Message.objects.filter(pk__in=pks).update(**fields)
