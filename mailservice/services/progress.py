"""Moving recipients forward on provider events, never back, and their messages with them
(docs/webhooks.md, "Statuses"). Used when events are recorded and when early events are linked
late; a batch of any size costs a fixed number of queries."""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

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
# The forward-only rule, asked once per pair of statuses instead of once per recipient: a
# 1,000-event post asks it 2,000 times, each converting both names to statuses.
_advances = functools.lru_cache(maxsize=None)(advances)


def recipients_advance(changes: Iterable[tuple[int | None, str, datetime]]) -> int:
    """Move recipients forward (never back) by (recipient id, event type, when) in time order,
    then re-summarize their messages. Returns how many recipients changed.

    One read takes every recipient of the messages concerned with its message's status (locked
    where the database can), which is all the summaries need. Writes are grouped by the value
    written: one UPDATE per new recipient status and one per new message status, not a CASE per
    row (which costs Django milliseconds per row to build)."""
    targets = _targets(changes)
    if not targets:
        return 0
    now = timezone.now()
    by_status: dict[RecipientStatus, list[int]] = defaultdict(list)
    statuses: dict[Any, list[str]] = defaultdict(list)  # every recipient's status after the change
    messages: dict[Any, tuple[str, datetime | None]] = {}  # (status, finished_at) of the changed ones
    concerned = Recipient.objects.filter(pk__in=list(targets)).values("message_id")
    siblings = Recipient.objects.select_for_update().filter(message_id__in=concerned).order_by()
    for pk, message_id, status, *message in siblings.values_list(
        "pk", "message_id", "status", "message__status", "message__finished_at"
    ):
        new = targets.get(pk)
        if new is not None and _advances(status, new):
            by_status[new].append(pk)
            messages[message_id] = tuple(message)
            status = new
        statuses[message_id].append(status)
    for status, pks in by_status.items():
        Recipient.objects.filter(pk__in=pks).update(status=status, updated_at=now)
    _summarize_messages(messages, statuses, now=now)
    return sum(len(pks) for pks in by_status.values())


def _targets(changes: Iterable[tuple[int | None, str, datetime]]) -> dict[int, RecipientStatus]:
    """The status each recipient should reach, applying its events in time order."""
    targets: dict[int, RecipientStatus] = {}
    for recipient_id, event_type, _when in sorted(changes, key=lambda change: change[2]):
        new = EVENT_STATUS.get(event_type)
        if new is None or recipient_id is None:
            continue
        current = targets.get(recipient_id)
        if current is None or _advances(current, new):
            targets[recipient_id] = new
    return targets


def _summarize_messages(
    messages: dict[Any, tuple[str, datetime | None]], statuses: dict[Any, list[str]], *, now: datetime
) -> None:
    """Each message's status from its recipients' (`statuses`, by message id); `messages` holds
    the status and finished_at each changed message had."""
    changes: dict[tuple[str, bool], list] = defaultdict(list)
    for message_id, (old, finished_at) in messages.items():
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
