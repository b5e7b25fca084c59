"""Leases: a worker claims a batch of due messages in one transaction, each with its own lease,
and gives back the ones it never handed to a provider (docs/delivery.md, "Leases").

A claim is a conditional UPDATE whose WHERE repeats the claim condition, so two workers never
both win a message. On PostgreSQL the candidates are picked with SELECT … FOR UPDATE SKIP
LOCKED, so concurrent workers take disjoint batches instead of queueing on each other's rows; on
SQLite the transaction takes the write lock when it begins (`transaction_mode=IMMEDIATE`).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import connections, router, transaction
from django.db.models import Case, F, Value, When

from failover.attempts import Outcome
from mailservice import conf
from mailservice.models import DeliveryAttempt, Message, Recipient
from mailservice.statuses import MessageStatus, RecipientStatus

logger = logging.getLogger(__name__)

ABANDONED_ERROR = "The worker's lease expired before it recorded an outcome; it may have sent the message."


def messages_claim(
    *, owner: str, now: datetime, limit: int, message_id: uuid.UUID | str | None = None
) -> list[Message]:
    """Lease up to `limit` claimable messages (due, or their lease expired), oldest due first,
    each with `recipients_loaded`: every recipient of the message, those of this round SENDING.

    A message whose previous lease expired may have been sent by the worker that died: it is
    flagged `possible_duplicate` and gets an ambiguous attempt for that round."""
    db = router.db_for_write(Message)
    lease_until = now + timedelta(seconds=conf.lease_hold_seconds())
    with transaction.atomic(using=db):
        candidates = Message.objects.using(db).claimable(now).order_by("next_attempt_at")
        if message_id is not None:
            candidates = candidates.filter(pk=message_id)
        if connections[db].features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        picked = {
            pk: (previous_owner, started is not None)
            for pk, previous_owner, started in candidates.values_list("pk", "lease_owner", "send_started_at")[
                :limit
            ]
        }
        if not picked:
            return []
        Message.objects.using(db).claimable(now).filter(pk__in=list(picked)).update(
            status=MessageStatus.SENDING,
            lease_owner=owner,
            lease_expires_at=lease_until,
            send_started_at=None,
            attempt_count=F("attempt_count") + 1,
            updated_at=now,
        )
        messages = list(
            Message.objects.using(db).filter(
                pk__in=list(picked), lease_owner=owner, status=MessageStatus.SENDING
            )
        )
        if not messages:
            return []
        ids = [message.pk for message in messages]
        Recipient.objects.using(db).filter(
            message_id__in=ids, status__in=[RecipientStatus.QUEUED, RecipientStatus.DEFERRED]
        ).update(status=RecipientStatus.SENDING, updated_at=now)
        recipients: dict[uuid.UUID, list[Recipient]] = defaultdict(list)
        for recipient in Recipient.objects.using(db).filter(message_id__in=ids):
            recipients[recipient.message_id].append(recipient)
        # A dead worker's message: handed to its senders (it may have been sent), or not.
        abandoned = [message for message in messages if picked[message.pk][0] and picked[message.pk][1]]
        untouched = [message for message in messages if picked[message.pk][0] and not picked[message.pk][1]]
        if abandoned:
            _flag_abandoned(abandoned, {m.pk: picked[m.pk][0] for m in abandoned}, db=db, now=now)
        if untouched:
            _take_over_unsent(untouched, {m.pk: picked[m.pk][0] for m in untouched}, db=db)
    for message in messages:
        message.recipients_loaded = recipients[message.pk]
    messages.sort(key=lambda message: message.next_attempt_at or now)
    if messages:
        logger.info(
            "messages claimed count=%s",
            len(messages),
            extra={"count": len(messages), "worker": owner},
        )
    return messages


def _flag_abandoned(messages: list[Message], previous: dict, *, db: str, now: datetime) -> None:
    """The last round's worker died after claiming: it may have handed the message to a provider
    before dying. Say so rather than pretend it never happened."""
    Message.objects.using(db).filter(pk__in=[m.pk for m in messages]).update(possible_duplicate=True)
    DeliveryAttempt.objects.using(db).bulk_create(
        DeliveryAttempt(
            message=message,
            round=message.attempt_count - 1,
            outcome=Outcome.AMBIGUOUS,
            error=ABANDONED_ERROR,
            created_at=now,
        )
        for message in messages
    )
    for message in messages:
        message.possible_duplicate = True
        logger.warning(
            "message lease expired, reclaimed",
            extra={
                "message_id": str(message.pk),
                "status": "sending",
                "previous_worker": previous[message.pk],
            },
        )


def _take_over_unsent(messages: list[Message], previous: dict, *, db: str) -> None:
    """The last round's worker died before handing these to a provider: nothing was sent, so
    nothing is flagged, and that round does not count."""
    Message.objects.using(db).filter(pk__in=[m.pk for m in messages]).update(
        attempt_count=F("attempt_count") - 1
    )
    for message in messages:
        message.attempt_count -= 1
    logger.info(
        "messages taken over from a stopped worker, never sent count=%s",
        len(messages),
        extra={"count": len(messages), "previous_workers": sorted(set(previous.values()))},
    )


def messages_mark_started(ids: list, *, owner: str, now: datetime) -> set:
    """Mark claimed messages as handed to the senders, in one UPDATE; returns the ids still this
    worker's (a message whose lease was lost meanwhile must not be sent)."""
    if not ids:
        return set()
    with transaction.atomic():
        mine = Message.objects.filter(pk__in=ids, lease_owner=owner, status=MessageStatus.SENDING)
        marked = mine.update(
            send_started_at=now, lease_expires_at=now + timedelta(seconds=conf.lease_hold_seconds())
        )
        if marked == len(ids):
            return set(ids)
        return set(mine.values_list("pk", flat=True))  # which ones: rare, so asked only then


def messages_renew(ids: list, *, owner: str, now: datetime) -> int:
    """Extend the leases this worker still holds among `ids`: it is alive and still working."""
    if not ids:
        return 0
    return Message.objects.filter(pk__in=ids, lease_owner=owner, status=MessageStatus.SENDING).update(
        lease_expires_at=now + timedelta(seconds=conf.lease_hold_seconds())
    )


def messages_release(messages: Iterable[Message], *, owner: str, now: datetime) -> int:
    """Give back claimed messages that were never handed to a provider (the worker is stopping):
    due again at once, this round not counted. Returns how many were still this worker's."""
    ids = [message.pk for message in messages]
    if not ids:
        return 0
    with transaction.atomic():
        held = list(
            Message.objects.filter(pk__in=ids, lease_owner=owner, status=MessageStatus.SENDING).values_list(
                "pk", flat=True
            )
        )
        if not held:
            return 0
        retried = {"then": Value(MessageStatus.DEFERRED), "attempt_count__gt": 1}
        Message.objects.filter(pk__in=held).update(
            status=Case(When(**retried), default=Value(MessageStatus.QUEUED)),
            attempt_count=F("attempt_count") - 1,
            lease_owner="",
            lease_expires_at=None,
            send_started_at=None,
            next_attempt_at=now,
            updated_at=now,
        )
        Recipient.objects.filter(message_id__in=held, status=RecipientStatus.SENDING).update(
            status=RecipientStatus.QUEUED, updated_at=now
        )
    logger.warning(
        "messages released unsent count=%s", len(held), extra={"count": len(held), "worker": owner}
    )
    return len(held)
