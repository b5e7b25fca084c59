"""Linking tracking events that arrived before their send was recorded: a fast provider can
report delivery within milliseconds of accepting a message (docs/webhooks.md, "Linking events to
messages")."""
from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction

from mailservice.models import Message, Recipient, TrackingEvent
from mailservice.services.progress import recipients_advance
from mailservice.tracking_rules import rules_for

logger = logging.getLogger(__name__)


def tracking_events_link_late(*, message: Message) -> int:
    """Link events that arrived before the worker recorded this message's provider ids (a fast
    provider can report delivery within milliseconds) and apply them. Returns events linked."""
    recipients = {r.email: r for r in message.recipients.only("id", "email", "provider_message_id")}
    provider_ids = {r.provider_message_id for r in recipients.values() if r.provider_message_id}
    if message.provider_message_id:
        provider_ids.add(message.provider_message_id)
    if not provider_ids:
        return 0
    events = list(
        TrackingEvent.objects.filter(message__isnull=True, provider_message_id__in=provider_ids).only(
            "id", "provider", "provider_message_id", "recipient", "event_type", "raw", "timestamp", "created_at"
        )
    )
    if not events:
        return 0
    for event in events:
        # The id is one of this message's, so the address picks the recipient.
        recipient = recipients.get(event.recipient)
        event.message_id = message.pk
        event.message_recipient_id = recipient.pk if recipient else None
    TrackingEvent.objects.bulk_update(events, ["message", "message_recipient"])
    recipients_advance(
        (
            e.message_recipient_id,
            rules_for(e.provider).status_event_type(e.event_type, e.raw),
            e.timestamp or e.created_at,
        )
        for e in events
    )
    logger.info(
        "tracking events linked late count=%s",
        len(events),
        extra={"message_id": str(message.pk), "count": len(events)},
    )
    return len(events)


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
    message_ids = set(Recipient.objects.filter(provider_message_id__in=ids).values_list("message_id", flat=True))
    message_ids |= set(Message.objects.filter(provider_message_id__in=ids).values_list("pk", flat=True))
    linked = 0
    for message in Message.objects.filter(pk__in=message_ids):
        with transaction.atomic():
            linked += tracking_events_link_late(message=message)
    return linked
