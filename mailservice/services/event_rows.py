"""Tracking events as rows of the TrackingEvent table: one row per event id (the provider's own,
or a hash of the raw event), and each row's values as the database takes them, for the one
insert statement of a post (services/tracking.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from anymail.signals import AnymailTrackingEvent, EventType
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field
from django.utils import timezone

from mailservice.addresses import normalize_email
from mailservice.models import TrackingEvent
from mailservice.services.storable import MAX_TEXT, CheckedEvent
from mailservice.tracking_rules import TrackingRules, rules_for

# Columns of one inserted TrackingEvent, in the order `RowValues` gives them.
COLUMNS = (
    "provider",
    "event_id",
    "event_type",
    "timestamp",
    "recipient",
    "provider_message_id",
    "message",
    "message_recipient",
    "description",
    "mta_response",
    "raw",
    "created_at",
)


@dataclass
class EventRow:
    """One event on its way into the table; `pk` is set once the insert has stored it."""

    event: AnymailTrackingEvent
    event_id: str
    email: str
    raw_json: str
    status_type: str  # what moves the recipient; see TrackingRules.status_event_type
    provider_message_id: str
    message_id: UUID | None = None
    recipient_id: int | None = None
    pk: int | None = None


def event_rows(provider: str, events: Iterable[CheckedEvent]) -> tuple[list[EventRow], int]:
    """One row per event id, and how many events repeated an id already in the batch (the same
    event twice in a batch is one row and one duplicate)."""
    rules = rules_for(provider)
    rows: dict[str, EventRow] = {}
    duplicates = 0
    for checked in events:
        event_id = _event_id(provider, rules, checked)
        if event_id in rows:
            duplicates += 1
            continue
        event = checked.event
        rows[event_id] = EventRow(
            event=event,
            event_id=event_id,
            email=normalize_email(event.recipient) if event.recipient else "",
            raw_json=checked.raw_json,
            provider_message_id=str(event.message_id or "")[:255],
            status_type=rules.status_event_type(event.event_type, event.esp_event),
        )
    return list(rows.values()), duplicates


def _event_id(provider: str, rules: TrackingRules, checked: CheckedEvent) -> str:
    """The provider's own event id, or (for an ESP whose events have none) a hash of the raw
    event, so the same event posted twice has the same id. The hash's input must never change:
    events stored before would no longer be recognized."""
    event = checked.event
    if event.event_id and rules.has_event_ids:
        return str(event.event_id)[:255]
    canonical = json.dumps(json.loads(checked.raw_json), sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(f"{provider}\0{canonical}".encode()).hexdigest()


class RowValues:
    """A row's values as the database takes them, in COLUMNS order. Only dates and the message's
    UUID need adapting (the rest is text and integers already), each distinct value once: the
    events of a post share seconds and messages."""

    def __init__(self, connection: BaseDatabaseWrapper, provider: str) -> None:
        meta = TrackingEvent._meta
        self.provider = provider
        self.timestamp = _memoized(meta.get_field("timestamp"), connection)
        self.message = _memoized(meta.get_field("message"), connection)
        self.created_at = meta.get_field("created_at").get_db_prep_save(timezone.now(), connection)

    def __call__(self, row: EventRow) -> list[Any]:
        event = row.event
        return [
            self.provider,
            row.event_id,
            str(event.event_type or EventType.UNKNOWN)[:50],
            self.timestamp(event.timestamp),
            row.email[:320],
            row.provider_message_id,
            self.message(row.message_id),
            row.recipient_id,
            str(event.description or "")[:MAX_TEXT],
            str(event.mta_response or "")[:MAX_TEXT],
            row.raw_json,
            self.created_at,
        ]


def _memoized(model_field: Field, connection: BaseDatabaseWrapper) -> Callable[[Any], Any]:
    """The field's value as the database takes it, computed once per distinct value."""
    return functools.lru_cache(maxsize=None)(lambda value: model_field.get_db_prep_save(value, connection))
