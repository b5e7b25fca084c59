"""Provider tracking events: stored once, linked to their message, moving statuses forward, and
feeding the suppression list that every provider shares.

A webhook post may carry up to 1,000 events (SendGrid), so events are recorded a batch at a time
with a fixed number of queries: one to find duplicates, one insert, one or two to link, and a
few to update statuses and suppressions, whatever the batch size.

An event whose data cannot be stored as it is (a recipient that is not a string, a NaN, a NUL
character) is refused by `tracking_event_problem` before anything is written, logged and
skipped; the rest of its batch is recorded (docs/webhooks.md, "Errors and retries"). Every event
that passes is stored, or the whole batch fails: none is dropped silently.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from anymail.signals import AnymailTrackingEvent, EventType
from django.db import transaction
from django.utils import timezone

from failover.providers import normalize_name

from mailservice.addresses import normalize_email
from mailservice.models import Message, Recipient, Suppression, TrackingEvent
from mailservice.services.progress import recipients_advance
from mailservice.tracking_rules import rules_for

logger = logging.getLogger(__name__)

MAX_TEXT = 2000

@dataclass
class RecordResult:
    stored: int = 0
    duplicates: int = 0
    linked: int = 0
    status_changes: int = 0
    suppressed: list[str] = field(default_factory=list)
    skipped: int = 0  # events refused by tracking_event_problem (logged, not stored)


class EventNotStorable(ValueError):
    """The event's data cannot be stored as it is; the message says why (no event content)."""


class EventsLost(RuntimeError):
    """Rows that passed every check were not in the table after the insert: a fault on our side
    (never expected); the batch is rolled back so that the provider retries it."""


def event_id_for(provider: str, event: AnymailTrackingEvent) -> str:
    """The provider's own event id, or (for an ESP whose events have none) a hash of the raw
    event, so the same event posted twice has the same id."""
    if event.event_id and rules_for(provider).has_event_ids:
        return str(event.event_id)[:255]
    raw = json.dumps(_jsonable(event.esp_event), sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(f"{provider}\0{raw}".encode()).hexdigest()


def suppression_reason(provider: str, event: AnymailTrackingEvent) -> str | None:
    if rules_for(provider).permanent_bounce(event):
        return Suppression.Reason.BOUNCED
    if event.event_type == EventType.COMPLAINED:
        return Suppression.Reason.COMPLAINED
    if event.event_type == EventType.UNSUBSCRIBED:
        return Suppression.Reason.UNSUBSCRIBED
    return None


def tracking_event_problem(event: AnymailTrackingEvent) -> str | None:
    """Why this event (as Anymail parsed it from the provider's post) cannot be stored, or None.
    The reason names the field, never its content."""
    try:
        _checked_event(event)
    except EventNotStorable as err:
        return str(err)
    return None


def _checked_event(event: AnymailTrackingEvent) -> Any:
    """The raw event as storable JSON, or EventNotStorable."""
    if event.recipient is not None:
        if not isinstance(event.recipient, str):
            raise EventNotStorable(f"the recipient is a {type(event.recipient).__name__}, not a string")
        _check_text("the recipient", event.recipient)
    for name in ("message_id", "event_id", "event_type"):
        value = getattr(event, name, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise EventNotStorable(f"the {name} is a {type(value).__name__}, not a string")
        _check_text(f"the {name}", str(value))
    if event.timestamp is not None and not isinstance(event.timestamp, datetime):
        raise EventNotStorable("the timestamp is not a date")
    for name in ("description", "mta_response"):
        value = getattr(event, name, None)
        if value is not None:
            _check_text(f"the {name}", str(value))
    return _storable_json(event.esp_event)


def _check_text(what: str, value: str) -> None:
    # NUL and lone surrogates are refused by PostgreSQL's text and jsonb (and by UTF-8).
    if "\x00" in value:
        raise EventNotStorable(f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise EventNotStorable(f"{what} is not valid Unicode") from None


def tracking_events_record(*, provider: str, events: Sequence[AnymailTrackingEvent]) -> RecordResult:
    """Store new events, link them, move recipients forward and add suppressions, atomically.

    Events that cannot be stored are logged and skipped (a webhook view has refused them
    already); a failure after that rolls the whole batch back and is raised, so the post is
    answered 5xx and the provider retries it."""
    result = RecordResult()
    if not events:
        return result
    provider = normalize_name(provider)
    storable: list[tuple[AnymailTrackingEvent, Any]] = []  # with its raw event as stored
    for index, event in enumerate(events):
        try:
            storable.append((event, _checked_event(event)))
        except EventNotStorable as err:
            problem = str(err)
            result.skipped += 1
            logger.warning(
                "tracking event skipped provider=%s index=%s reason=%s",
                provider,
                index,
                problem,
                extra={"provider": provider, "reason": problem},
            )
    rows = _new_rows(provider, storable, result)
    if not rows:
        return result
    with transaction.atomic():
        _link(rows)
        TrackingEvent.objects.bulk_create([row.event for row in rows], ignore_conflicts=True)
        stored = {
            event_id: pk
            for event_id, pk in TrackingEvent.objects.filter(
                provider=provider, event_id__in=[row.event.event_id for row in rows]
            ).values_list("event_id", "pk")
        }
        for row in rows:
            row.event.pk = stored.get(row.event.event_id)
        # `ignore_conflicts` is meant for the unique (provider, event_id) of a concurrent insert
        # of the same event, whose row is then found above. On SQLite, INSERT OR IGNORE also
        # drops rows that break a CHECK (a JSON column given invalid JSON): never lose one quietly.
        lost = sum(1 for row in rows if row.event.pk is None)
        if lost:
            raise EventsLost(f"{lost} of {len(rows)} {provider} tracking events were not stored")
        result.stored = len(rows)
        result.linked = sum(1 for row in rows if row.event.message_id)
        result.status_changes = _advance_recipients(rows)
        result.suppressed = _suppress(provider, rows)
    logger.info(
        "tracking events recorded provider=%s stored=%s duplicates=%s linked=%s status_changes=%s suppressed=%s",
        provider,
        result.stored,
        result.duplicates,
        result.linked,
        result.status_changes,
        len(result.suppressed),
        extra={"provider": provider, "stored": result.stored, "duplicates": result.duplicates},
    )
    return result


@dataclass
class _Row:
    event: TrackingEvent
    anymail: AnymailTrackingEvent
    email: str
    status_type: str  # what moves the recipient; see TrackingRules.status_event_type


def _new_rows(
    provider: str, events: Iterable[tuple[AnymailTrackingEvent, Any]], result: RecordResult
) -> list[_Row]:
    """One row per event not stored before (in the database or earlier in this batch); each
    event comes with its raw form as checked by `_checked_event`."""
    candidates: dict[str, tuple[AnymailTrackingEvent, Any]] = {}
    for event, raw in events:
        event_id = event_id_for(provider, event)
        if event_id in candidates:
            result.duplicates += 1
            continue
        candidates[event_id] = (event, raw)
    known = set(
        TrackingEvent.objects.filter(provider=provider, event_id__in=list(candidates)).values_list(
            "event_id", flat=True
        )
    )
    result.duplicates += len(known)
    now = timezone.now()
    rows = []
    for event_id, (event, raw) in candidates.items():
        if event_id in known:
            continue
        email = normalize_email(event.recipient) if event.recipient else ""
        rows.append(
            _Row(
                event=TrackingEvent(
                    provider=provider,
                    event_id=event_id,
                    event_type=str(event.event_type or EventType.UNKNOWN)[:50],
                    timestamp=event.timestamp if isinstance(event.timestamp, datetime) else None,
                    recipient=email[:320],
                    provider_message_id=str(event.message_id or "")[:255],
                    description=str(event.description or "")[:MAX_TEXT],
                    mta_response=str(event.mta_response or "")[:MAX_TEXT],
                    raw=raw,
                    created_at=now,
                ),
                anymail=event,
                email=email,
                status_type=rules_for(provider).status_event_type(event.event_type, event.esp_event),
            )
        )
    return rows


def _link(rows: list[_Row]) -> None:
    """Find each event's Recipient by the provider message id recorded at send time: per
    recipient (SendGrid, Mandrill) or per message (Mailgun)."""
    ids = {row.event.provider_message_id for row in rows if row.event.provider_message_id}
    if not ids:
        return
    by_recipient = {
        (r.provider_message_id, r.email): r
        for r in Recipient.objects.filter(provider_message_id__in=ids).only(
            "id", "message_id", "email", "provider_message_id", "status"
        )
    }
    unmatched = {
        row.event.provider_message_id
        for row in rows
        if row.event.provider_message_id and (row.event.provider_message_id, row.email) not in by_recipient
    }
    by_message: dict[str, str] = {}
    if unmatched:
        by_message = dict(
            Message.objects.filter(provider_message_id__in=unmatched).values_list("provider_message_id", "pk")
        )
        provider_ids_of: dict = {}
        for provider_message_id, message_pk in by_message.items():
            provider_ids_of.setdefault(message_pk, []).append(provider_message_id)
        if provider_ids_of:
            for r in Recipient.objects.filter(message_id__in=list(provider_ids_of)).only(
                "id", "message_id", "email", "provider_message_id", "status"
            ):
                for provider_message_id in provider_ids_of[r.message_id]:
                    by_recipient.setdefault((provider_message_id, r.email), r)
    for row in rows:
        recipient = by_recipient.get((row.event.provider_message_id, row.email))
        if recipient is not None:
            row.event.message_recipient = recipient
            row.event.message_id = recipient.message_id
        elif row.event.provider_message_id in by_message:
            row.event.message_id = by_message[row.event.provider_message_id]


def _advance_recipients(rows: list[_Row]) -> int:
    return recipients_advance(
        (row.event.message_recipient_id, row.status_type, row.event.timestamp or row.event.created_at)
        for row in rows
    )


def _suppress(provider: str, rows: list[_Row]) -> list[str]:
    """Hard bounces, complaints and unsubscribes suppress the address for every provider."""
    wanted: dict[str, tuple[str, int | None]] = {}
    for row in rows:
        reason = suppression_reason(provider, row.anymail)
        if reason and row.email and row.email not in wanted:
            wanted[row.email] = (reason, row.event.pk)
    if not wanted:
        return []
    existing = set(Suppression.objects.filter(address__in=list(wanted)).values_list("address", flat=True))
    new = [
        Suppression(address=address, reason=reason, provider=provider, event_id=event_pk)
        for address, (reason, event_pk) in wanted.items()
        if address not in existing
    ]
    Suppression.objects.bulk_create(new, ignore_conflicts=True)
    for suppression in new:
        logger.info(
            "suppression added reason=%s provider=%s",
            suppression.reason,
            provider,
            extra={"reason": suppression.reason, "provider": provider},
        )
    return [suppression.address for suppression in new]


def _jsonable(value):
    """The raw provider event as JSON data (Mailgun's legacy form posts are QueryDicts); objects
    JSON has no form for become strings."""
    if hasattr(value, "lists"):
        return {key: values if len(values) > 1 else values[0] for key, values in value.lists()}
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError, RecursionError):
        return {"repr": repr(value)[:MAX_TEXT]}


def _storable_json(value) -> Any:
    """The raw event as strict JSON every database stores: EventNotStorable for NaN or Infinity
    (not JSON: SQLite's JSON check refuses them, PostgreSQL's jsonb too), NUL characters and
    lone surrogates (PostgreSQL refuses both)."""
    data = _jsonable(value)
    try:
        json.dumps(data, allow_nan=False)
    except ValueError:
        raise EventNotStorable("the event contains a number that is not finite (NaN or Infinity)") from None
    for text in _strings(data):
        _check_text("the event", text)
    return data


def _strings(data) -> Iterable[str]:
    """Every string of decoded JSON, keys included."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
