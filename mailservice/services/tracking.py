"""Provider tracking events: stored once, linked to their message, moving statuses forward, and
feeding the suppression list that every provider shares.

A webhook post may carry up to 1,000 events (SendGrid), so events are recorded a batch at a time
with a fixed number of queries whatever the batch size: one to link them (two when some match no
recipient), one insert that also says which events are new (split only by the database's
parameter limit), and a few to update statuses and suppressions (docs/webhooks.md, "Batches and
performance").

An event whose data cannot be stored as it is (a recipient that is not a string, a NaN, a NUL
character) is refused by `tracking_event_checked` before anything is written, logged and
skipped; the rest of its batch is recorded (docs/webhooks.md, "Errors and retries"). Every event
that passes is stored, or the whole batch fails: none is dropped silently.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from anymail.signals import AnymailTrackingEvent, EventType
from django.db import connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, QuerySet
from django.utils import timezone

from failover.providers import normalize_name
from mailservice.addresses import normalize_email
from mailservice.models import Message, Recipient, Suppression, TrackingEvent
from mailservice.models.bulk import insert_new_rows
from mailservice.services.progress import recipients_advance
from mailservice.tracking_rules import TrackingRules, rules_for

logger = logging.getLogger(__name__)

MAX_TEXT = 2000
# The raw event as stored: strict JSON (no NaN), compact, non-ASCII kept as it is.
RAW_JSON = json.JSONEncoder(allow_nan=False, default=str, ensure_ascii=False, separators=(",", ":"))
# Columns of one inserted TrackingEvent, in the order `_RowValues` gives them.
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
class RecordResult:
    stored: int = 0
    duplicates: int = 0
    linked: int = 0
    status_changes: int = 0
    suppressed: list[str] = field(default_factory=list)
    skipped: int = 0  # events refused by tracking_event_checked (logged, not stored)


class EventNotStorable(ValueError):
    """The event's data cannot be stored as it is; the message says why (no event content)."""


class EventsLost(RuntimeError):
    """Rows that passed every check were not in the table after the insert: a fault on our side
    (never expected); the batch is rolled back so that the provider retries it."""


@dataclass(frozen=True)
class CheckedEvent:
    """An event that can be stored, with its raw provider event as the JSON text to store. The
    webhook view checks every event of a post (to name a bad one by its position) and passes
    these on, so that recording neither checks nor serializes an event a second time."""

    event: AnymailTrackingEvent
    raw_json: str


def tracking_event_checked(event: AnymailTrackingEvent) -> CheckedEvent:
    """The event ready to store, or EventNotStorable naming the field at fault (never its content)."""
    if event.recipient is not None:
        if not isinstance(event.recipient, str):
            raise EventNotStorable(f"the recipient is a {type(event.recipient).__name__}, not a string")
        _check_text("recipient", event.recipient)
    for name in ("message_id", "event_id", "event_type"):
        value = getattr(event, name, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise EventNotStorable(f"the {name} is a {type(value).__name__}, not a string")
        _check_text(name, str(value))
    if event.timestamp is not None and not isinstance(event.timestamp, datetime):
        raise EventNotStorable("the timestamp is not a date")
    for name in ("description", "mta_response"):
        value = getattr(event, name, None)
        if value is not None:
            _check_text(name, str(value))
    return CheckedEvent(event, _raw_json(event.esp_event))


def _check_text(name: str, value: str) -> None:
    # NUL and lone surrogates are refused by PostgreSQL's text and jsonb (and by UTF-8); an
    # ASCII string (known without reading it) has no surrogate.
    if "\x00" in value:
        raise EventNotStorable(f"the {name} contains a NUL character")
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise EventNotStorable(f"the {name} is not valid Unicode") from None


def _suppression_reason(rules: TrackingRules, event: AnymailTrackingEvent) -> str | None:
    if rules.permanent_bounce(event):
        return Suppression.Reason.BOUNCED
    if event.event_type == EventType.COMPLAINED:
        return Suppression.Reason.COMPLAINED
    if event.event_type == EventType.UNSUBSCRIBED:
        return Suppression.Reason.UNSUBSCRIBED
    return None


def tracking_events_record(
    *, provider: str, events: Sequence[AnymailTrackingEvent | CheckedEvent]
) -> RecordResult:
    """Store new events, link them, move recipients forward and add suppressions, atomically.

    Events not checked yet are checked here; those that cannot be stored are logged and skipped.
    A failure after that rolls the whole batch back and is raised, so the post is answered 5xx
    and the provider retries it."""
    result = RecordResult()
    provider = normalize_name(provider)
    rows = _unique_rows(provider, _checked(provider, events, result), result)
    if not rows:
        return result
    connection = connections[router.db_for_write(TrackingEvent)]
    with transaction.atomic(using=connection.alias):
        _link(rows)
        _insert(connection, provider, rows)
        new = [row for row in rows if row.pk is not None]
        result.stored, result.duplicates = len(new), result.duplicates + len(rows) - len(new)
        result.linked = sum(1 for row in new if row.message_id)
        result.status_changes = _advance_recipients(new)
        result.suppressed = _suppress(connection, provider, new)
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


def _checked(
    provider: str, events: Sequence[AnymailTrackingEvent | CheckedEvent], result: RecordResult
) -> Iterator[CheckedEvent]:
    """The events in their checked form: the webhook view's, or checked here for events that
    reach recording another way (Anymail's signal sent by other code)."""
    for index, event in enumerate(events):
        if isinstance(event, CheckedEvent):
            yield event
            continue
        try:
            yield tracking_event_checked(event)
        except EventNotStorable as err:
            result.skipped += 1
            logger.warning(
                "tracking event skipped provider=%s index=%s reason=%s",
                provider,
                index,
                err,
                extra={"provider": provider, "reason": str(err)},
            )


@dataclass
class _Row:
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


def _unique_rows(provider: str, events: Iterable[CheckedEvent], result: RecordResult) -> list[_Row]:
    """One row per event id: the same event twice in a batch is one row and one duplicate."""
    rules = rules_for(provider)
    rows: dict[str, _Row] = {}
    for checked in events:
        event_id = _event_id(provider, rules, checked)
        if event_id in rows:
            result.duplicates += 1
            continue
        event = checked.event
        rows[event_id] = _Row(
            event=event,
            event_id=event_id,
            email=normalize_email(event.recipient) if event.recipient else "",
            raw_json=checked.raw_json,
            provider_message_id=str(event.message_id or "")[:255],
            status_type=rules.status_event_type(event.event_type, event.esp_event),
        )
    return list(rows.values())


def _event_id(provider: str, rules: TrackingRules, checked: CheckedEvent) -> str:
    """The provider's own event id, or (for an ESP whose events have none) a hash of the raw
    event, so the same event posted twice has the same id. The hash's input must never change:
    events stored before would no longer be recognized."""
    event = checked.event
    if event.event_id and rules.has_event_ids:
        return str(event.event_id)[:255]
    canonical = json.dumps(json.loads(checked.raw_json), sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(f"{provider}\0{canonical}".encode()).hexdigest()


def _link(rows: list[_Row]) -> None:
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


def _insert(connection: BaseDatabaseWrapper, provider: str, rows: list[_Row]) -> None:
    """Insert the rows, setting `pk` on those stored now; a row already in the table (posted
    before, or by a concurrent post) keeps `pk` None. Any other row missing afterwards raises
    EventsLost: SQLite's INSERT OR IGNORE once dropped rows its JSON check refused without a word
    (docs/webhooks.md, "Errors and retries")."""
    values = _RowValues(connection, provider)
    by_id = {row.event_id: row for row in rows}
    inserted = insert_new_rows(
        TrackingEvent,
        COLUMNS,
        [values(row) for row in rows],
        unique=("provider", "event_id"),
        returning=("id", "event_id"),
        using=connection.alias,
    )
    for pk, event_id in inserted:
        by_id[event_id].pk = pk
    missing = [row.event_id for row in rows if row.pk is None]
    if missing:
        present = _stored(connection, provider).filter(event_id__in=missing)
        lost = len(missing) - present.count()
        if lost:
            raise EventsLost(f"{lost} of {len(rows)} {provider} tracking events were not stored")


def _stored(connection: BaseDatabaseWrapper, provider: str) -> QuerySet[TrackingEvent]:
    return TrackingEvent.objects.using(connection.alias).filter(provider=provider)


class _RowValues:
    """A row's values as the database takes them, in COLUMNS order. Only dates and the message's
    UUID need adapting (the rest is text and integers already), each distinct value once: the
    events of a post share seconds and messages, and adapting a date costs about 10 µs."""

    def __init__(self, connection: BaseDatabaseWrapper, provider: str) -> None:
        meta = TrackingEvent._meta
        self.provider = provider
        self.timestamp = _memoized(meta.get_field("timestamp"), connection)
        self.message = _memoized(meta.get_field("message"), connection)
        self.created_at = meta.get_field("created_at").get_db_prep_save(timezone.now(), connection)

    def __call__(self, row: _Row) -> list[Any]:
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


def _advance_recipients(rows: list[_Row]) -> int:
    now = timezone.now()
    return recipients_advance((row.recipient_id, row.status_type, row.event.timestamp or now) for row in rows)


def _suppress(connection: BaseDatabaseWrapper, provider: str, rows: list[_Row]) -> list[str]:
    """Hard bounces, complaints and unsubscribes suppress the address for every provider; an
    address listed already keeps its entry. Returns the addresses added."""
    rules = rules_for(provider)
    wanted: dict[str, tuple[str, int | None]] = {}
    for row in rows:
        reason = _suppression_reason(rules, row.event)
        if reason and row.email and row.email not in wanted:
            wanted[row.email] = (reason, row.pk)
    if not wanted:
        return []
    added = _suppress_new(connection, provider, wanted)
    new = [address for address in wanted if address in added]
    for address in new:
        reason = wanted[address][0]
        extra = {"reason": reason, "provider": provider}
        logger.info("suppression added reason=%s provider=%s", reason, provider, extra=extra)
    return new


def _suppress_new(
    connection: BaseDatabaseWrapper, provider: str, wanted: dict[str, tuple[str, int | None]]
) -> set[str]:
    """The addresses inserted now: one statement, which leaves an address listed already alone."""
    now = Suppression._meta.get_field("created_at").get_db_prep_save(timezone.now(), connection)
    values = [[address, str(reason), provider, pk, now] for address, (reason, pk) in wanted.items()]
    columns, key = ("address", "reason", "provider", "event", "created_at"), ("address",)
    inserted = insert_new_rows(
        Suppression, columns, values, unique=key, returning=key, using=connection.alias
    )
    return {address for (address,) in inserted}


def _raw_json(value: Any) -> str:
    """The raw provider event as strict JSON text that every database stores, serialized once:
    EventNotStorable for NaN or Infinity (not JSON: SQLite's JSON check refuses them,
    PostgreSQL's jsonb too), NUL characters and lone surrogates (PostgreSQL refuses both).
    Mailgun's legacy form posts are QueryDicts; objects JSON has no form for become strings."""
    if hasattr(value, "lists"):
        value = {key: values if len(values) > 1 else values[0] for key, values in value.lists()}
    try:
        text = RAW_JSON.encode(value)
    except ValueError:
        if _json_with_nan(value):
            raise EventNotStorable(
                "the event contains a number that is not finite (NaN or Infinity)"
            ) from None
        text = RAW_JSON.encode({"repr": repr(value)[:MAX_TEXT]})
    except (TypeError, RecursionError):
        text = RAW_JSON.encode({"repr": repr(value)[:MAX_TEXT]})
    if "\\u0000" in text:  # how JSON writes NUL, or a backslash before "u0000": look closer
        for string in _strings(json.loads(text)):
            _check_text("event", string)
    _check_text("event", text)  # a lone surrogate is written out as it is
    return text


def _json_with_nan(value: Any) -> bool:
    """Whether `value` is JSON but for NaN or Infinity (strict JSON refused it for one of them,
    not for a circular reference)."""
    try:
        json.dumps(value, default=str)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


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
