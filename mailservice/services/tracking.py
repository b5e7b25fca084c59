"""Provider tracking events: stored once, linked to their message, moving statuses forward, and
feeding the suppression list that every provider shares.

A webhook post may carry up to 1,000 events (SendGrid), so events are recorded a batch at a time
with a fixed number of queries whatever the batch size: one to link them (two when some match no
recipient), one insert that also says which events are new (split only by the database's
parameter limit), and a few to update statuses and suppressions (docs/webhooks.md, "Batches and
performance").

An event whose data cannot be stored as it is (a recipient that is not a string, a NaN, a NUL
character) is refused by `storable_event` before anything is written, logged and skipped; the
rest of its batch is recorded (docs/webhooks.md, "Errors and retries"). Every event that passes
is stored, or the whole batch fails: none is dropped silently.

The steps live beside this module: services/storable.py (what can be stored), event_rows.py (an
event's id and its row), linking.py, progress.py and suppressions.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from anymail.signals import AnymailTrackingEvent
from django.db import connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet
from django.utils import timezone

from failover.providers import normalize_name
from mailservice.models import TrackingEvent
from mailservice.models.bulk import insert_new_rows
from mailservice.services.event_rows import COLUMNS, EventRow, RowValues, event_rows
from mailservice.services.linking import tracking_events_link
from mailservice.services.progress import recipients_advance
from mailservice.services.storable import CheckedEvent, EventNotStorable, storable_event
from mailservice.services.suppressions import suppressions_add_for_events

logger = logging.getLogger(__name__)


@dataclass
class RecordResult:
    stored: int = 0
    duplicates: int = 0
    linked: int = 0
    status_changes: int = 0
    suppressed: list[str] = field(default_factory=list)
    skipped: int = 0  # events refused by storable_event (logged, not stored)


class EventsLost(RuntimeError):
    """Rows that passed every check were not in the table after the insert: a fault on our side
    (never expected); the batch is rolled back so that the provider retries it."""


def tracking_events_record(
    *, provider: str, events: Sequence[AnymailTrackingEvent | CheckedEvent]
) -> RecordResult:
    """Store new events, link them, move recipients forward and add suppressions, atomically.

    Events not checked yet are checked here; those that cannot be stored are logged and skipped.
    A failure after that rolls the whole batch back and is raised, so the post is answered 5xx
    and the provider retries it."""
    result = RecordResult()
    provider = normalize_name(provider)
    rows, result.duplicates = event_rows(provider, _checked(provider, events, result))
    if not rows:
        return result
    connection = connections[router.db_for_write(TrackingEvent)]
    with transaction.atomic(using=connection.alias):
        tracking_events_link(rows)
        _insert(connection, provider, rows)
        new = [row for row in rows if row.pk is not None]
        result.stored, result.duplicates = len(new), result.duplicates + len(rows) - len(new)
        result.linked = sum(1 for row in new if row.message_id)
        result.status_changes = _advance_recipients(new)
        result.suppressed = suppressions_add_for_events(provider=provider, rows=new, connection=connection)
    logger.info(
        "tracking events recorded provider=%s stored=%s duplicates=%s linked=%s status_changes=%s "
        "suppressed=%s",
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
            yield storable_event(event)
        except EventNotStorable as err:
            result.skipped += 1
            logger.warning(
                "tracking event skipped provider=%s index=%s reason=%s",
                provider,
                index,
                err,
                extra={"provider": provider, "reason": str(err)},
            )


def _insert(connection: BaseDatabaseWrapper, provider: str, rows: list[EventRow]) -> None:
    """Insert the rows, setting `pk` on those stored now; a row already in the table (posted
    before, or by a concurrent post) keeps `pk` None. Any other row missing afterwards raises
    EventsLost: a row the database drops without a word (as SQLite's INSERT OR IGNORE does with
    one its JSON check refuses) must fail the batch (docs/webhooks.md, "Errors and retries")."""
    values = RowValues(connection, provider)
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


def _advance_recipients(rows: list[EventRow]) -> int:
    now = timezone.now()
    return recipients_advance((row.recipient_id, row.status_type, row.event.timestamp or now) for row in rows)
