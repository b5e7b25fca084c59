"""Linking tracking events to their message and recipient (docs/webhooks.md, "Linking events to
messages"): as a post's events are recorded, by the provider message id the send recorded; and
late, for events that arrived before their send was recorded (a fast provider can report
delivery within milliseconds of accepting a message)."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime
from uuid import UUID

from django.db import transaction

from mailservice.models import Message, Recipient, TrackingEvent
from mailservice.models.bulk import update_rows
from mailservice.services.event_rows import EventRow
from mailservice.services.progress import recipients_advance
from mailservice.tracking_rules import rules_for

logger = logging.getLogger(__name__)


def tracking_events_link(rows: list[EventRow]) -> None:
    """Find each event's Recipient by the provider message id recorded at send time and its
    address: one query, as the worker records the id on every recipient (SendGrid's and
    Mandrill's own per recipient, Mailgun's per message). Events left unmatched (an address the
    message did not have; a send recorded on the message only) are looked up per message."""
    ids = {row.provider_message_id for row in rows if row.provider_message_id}
    if not ids:
        return
    found = {
        (provider_message_id, email): (message_id, recipient_id)
        for provider_message_id, email, message_id, recipient_id in Recipient.objects.filter(
            provider_message_id__in=ids
        ).values_list("provider_message_id", "email", "message_id", "pk")
    }
    unmatched = {row.provider_message_id for row in rows if (row.provider_message_id, row.email) not in found}
    unmatched.discard("")
    messages = _link_per_message(unmatched, found) if unmatched else {}
    for row in rows:
        if (row.provider_message_id, row.email) in found:
            row.message_id, row.recipient_id = found[(row.provider_message_id, row.email)]
        else:
            row.message_id = messages.get(row.provider_message_id)


def _link_per_message(ids: set[str], found: dict[tuple[str, str], tuple[UUID, int]]) -> dict[str, UUID]:
    """The messages whose own provider id is one of `ids`, adding their recipients to `found`
    where no recipient-level match is there already."""
    messages: dict[str, UUID] = {}
    for provider_message_id, message_id, email, recipient_id in Message.objects.filter(
        provider_message_id__in=ids
    ).values_list("provider_message_id", "pk", "recipients__email", "recipients__pk"):
        messages[provider_message_id] = message_id
        if recipient_id is not None:
            found.setdefault((provider_message_id, email), (message_id, recipient_id))
    return messages


def tracking_events_link_late(*, messages: list[Message]) -> Counter:
    """Link events that arrived before the worker recorded these messages' provider ids (a fast
    provider can report delivery within milliseconds) and apply them, with a fixed number of
    queries for the whole batch. Returns how many events each message had linked."""
    if not messages:
        return Counter()
    by_id = {message.pk: message for message in messages}
    recipients = _recipients_of(messages)
    owner_of: dict[str, Message] = {}  # provider message id -> its message
    for message in messages:
        if message.provider_message_id:
            owner_of[message.provider_message_id] = message
    for recipient in recipients:
        if recipient.provider_message_id:
            owner_of[recipient.provider_message_id] = by_id[recipient.message_id]
    if not owner_of:
        return Counter()
    events = list(
        TrackingEvent.objects.filter(message__isnull=True, provider_message_id__in=list(owner_of)).only(
            "id",
            "provider",
            "provider_message_id",
            "recipient",
            "event_type",
            "raw",
            "timestamp",
            "created_at",
        )
    )
    if not events:
        return Counter()
    # An id is one message's, so the address picks the recipient.
    recipient_of = {(recipient.message_id, recipient.email): recipient.pk for recipient in recipients}
    for event in events:
        message = owner_of[event.provider_message_id]
        event.message_id = message.pk
        event.message_recipient_id = recipient_of.get((message.pk, event.recipient))
    update_rows(events, ["message", "message_recipient"])
    recipients_advance(
        (
            e.message_recipient_id,
            rules_for(e.provider).status_event_type(e.event_type, e.raw),
            e.timestamp or e.created_at,
        )
        for e in events
    )
    linked = Counter(event.message_id for event in events)
    logger.info(
        "tracking events linked late count=%s messages=%s",
        len(events),
        len(linked),
        extra={"count": len(events), "message_ids": sorted(str(pk) for pk in linked)},
    )
    return linked


def _recipients_of(messages: list[Message]) -> list[Recipient]:
    """The worker's messages carry their recipients (services/claiming.py); others are read."""
    if all(hasattr(message, "recipients_loaded") for message in messages):
        return [recipient for message in messages for recipient in message.recipients_loaded]
    return list(
        Recipient.objects.filter(message_id__in=[m.pk for m in messages]).only(
            "id", "message_id", "email", "provider_message_id"
        )
    )


def tracking_events_link_unlinked(*, since: datetime) -> int:
    """Link events stored unlinked since `since` whose provider id a send has recorded since.

    The worker links early events when it records a send, but on a database where its
    transaction is not yet visible to a concurrent webhook (READ COMMITTED), an event can land
    in between; the recovery pass calls this to catch those. Returns events linked."""
    ids = set(
        TrackingEvent.objects.filter(message__isnull=True, created_at__gte=since)
        .exclude(provider_message_id="")
        .values_list("provider_message_id", flat=True)
    )
    if not ids:
        return 0
    by_recipient = Recipient.objects.filter(provider_message_id__in=ids)
    message_ids = set(by_recipient.values_list("message_id", flat=True))
    message_ids |= set(Message.objects.filter(provider_message_id__in=ids).values_list("pk", flat=True))
    with transaction.atomic():
        linked = tracking_events_link_late(messages=list(Message.objects.filter(pk__in=message_ids)))
    return sum(linked.values())
