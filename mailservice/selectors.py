"""Reads for the API and the admin. Nothing here writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from django.db.models import Prefetch, QuerySet

from failover.backends import FirstWorkingEmailBackend
from mailservice.addresses import normalize_email
from mailservice.models import (
    ApiKey,
    DeliveryAttempt,
    Message,
    Recipient,
    Suppression,
    Template,
    TrackingEvent,
)
from mailservice.services.templates import template_identity

# Listing never needs the bodies and attachments, which may be megabytes per row.
HEAVY_FIELDS = ("text", "html", "attachments", "merge_data", "merge_global_data")


def message_get(*, message_id: str, sent_by: ApiKey | None = None) -> Message | None:
    """The message with its recipients, attempts and events; None for an unknown or malformed id,
    or, with `sent_by`, for a message another key sent (the API answers both 404)."""
    try:
        pk = uuid.UUID(str(message_id))
    except ValueError:
        return None
    messages = Message.objects.all() if sent_by is None else Message.objects.filter(api_key=sent_by)
    return (
        messages.defer(*HEAVY_FIELDS)
        .prefetch_related(
            Prefetch("recipients", queryset=Recipient.objects.order_by("kind", "position")),
            Prefetch("attempts", queryset=DeliveryAttempt.objects.order_by("id")),
            Prefetch("events", queryset=TrackingEvent.objects.order_by("timestamp", "id")),
        )
        .filter(pk=pk)
        .first()
    )


def message_list(
    *,
    status: str | None = None,
    recipient: str | None = None,
    since: datetime | None = None,
    sent_by: ApiKey | None = None,
) -> QuerySet[Message]:
    """Newest first, optionally by status, by a recipient's address, or accepted since a time;
    with `sent_by`, only the messages that API key sent."""
    messages = Message.objects.defer(*HEAVY_FIELDS).prefetch_related(
        Prefetch("recipients", queryset=Recipient.objects.order_by("kind", "position"))
    )
    if sent_by is not None:
        messages = messages.filter(api_key=sent_by)
    if status:
        messages = messages.filter(status=status)
    if recipient:
        messages = messages.filter(
            pk__in=Recipient.objects.filter(email=normalize_email(recipient)).values("message_id")
        )
    if since:
        messages = messages.filter(created_at__gte=since)
    return messages.order_by("-created_at", "-pk")


def suppression_list(*, address: str | None = None) -> QuerySet[Suppression]:
    suppressions = Suppression.objects.order_by("-created_at", "-pk")
    if address:
        suppressions = suppressions.filter(address=normalize_email(address))
    return suppressions


def template_list(*, name: str | None = None, language: str | None = None) -> QuerySet[Template]:
    """By name, then language (the default first); optionally one name, one language (a
    canonical tag: schemas.TemplateFilters). Without the sources, which may be large."""
    templates = Template.objects.defer("subject", "text", "html").order_by("name", "language")
    if name is not None:
        templates = templates.filter(name=name)
    if language is not None:
        templates = templates.filter(language=language)
    return templates


def template_get(*, name: str, language: str = "") -> Template | None:
    """The template of this name in exactly this language, or None; no fallback (what a message
    gets is template_resolve's, in services/templates.py). InvalidRequest on `name` or
    `language` when they are not well formed."""
    name, language = template_identity(name=name, language=language)
    return Template.objects.filter(name=name, language=language).first()


def provider_states() -> list[dict]:
    """Each provider of the failover chain with its state and last error, times as datetimes."""
    rows = FirstWorkingEmailBackend().provider_states()
    return [
        {
            **row,
            "active_until": _from_epoch(row.get("active_until")),
            "last_failure_at": _from_epoch(row.get("last_failure_at")),
            "next_probe_at": _from_epoch(row.get("next_probe_at")),
            "retry_after_until": _from_epoch(row.get("retry_after_until")),
        }
        for row in rows
    ]


def _from_epoch(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value else None
