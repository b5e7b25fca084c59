"""The suppression list, shared by every provider: addresses no message is sent to, added by an
operator or by provider events (hard bounces, complaints, unsubscribes)."""

from __future__ import annotations

import logging

from anymail.signals import AnymailTrackingEvent, EventType
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet
from django.utils import timezone

from mailservice.addresses import normalize_email
from mailservice.models import Suppression
from mailservice.models.bulk import insert_new_rows
from mailservice.services.event_rows import EventRow
from mailservice.tracking_rules import TrackingRules, rules_for

logger = logging.getLogger(__name__)


def suppression_add(
    *, address: str, reason: str = Suppression.Reason.MANUAL, provider: str = ""
) -> tuple[Suppression, bool]:
    """Suppress `address` (an addr-spec); return the entry and whether it is new."""
    suppression, created = Suppression.objects.get_or_create(
        address=normalize_email(address), defaults={"reason": reason, "provider": provider}
    )
    if created:
        logger.info(
            "suppression added reason=%s provider=%s",
            reason,
            provider or "-",
            extra={"suppression_id": suppression.pk, "reason": str(reason), "provider": provider},
        )
    return suppression, created


def suppression_remove(*, address: str) -> bool:
    """Remove `address` from the list; False when it was not there."""
    entries = Suppression.objects.filter(address=normalize_email(address))
    return bool(suppressions_remove(entries=entries, by="api"))


def suppressions_remove(*, entries: QuerySet[Suppression], by: str) -> int:
    """Remove the given entries (the admin's selection, or one address); return how many."""
    deleted, _ = entries.delete()
    if deleted:
        logger.info("suppression removed count=%s by=%s", deleted, by, extra={"count": deleted, "reason": by})
    return deleted


def suppressions_add_for_events(
    *, provider: str, rows: list[EventRow], connection: BaseDatabaseWrapper
) -> list[str]:
    """Hard bounces, complaints and unsubscribes among newly stored events suppress the address for
    every provider; an address listed already keeps its entry. Returns the addresses added."""
    rules = rules_for(provider)
    wanted: dict[str, tuple[str, int | None]] = {}
    for row in rows:
        reason = _suppression_reason(rules, row.event)
        if reason and row.email and row.email not in wanted:
            wanted[row.email] = (reason, row.pk)
    if not wanted:
        return []
    added = _insert_new(connection, provider, wanted)
    new = [address for address in wanted if address in added]
    for address in new:
        reason = wanted[address][0]
        extra = {"reason": reason, "provider": provider}
        logger.info("suppression added reason=%s provider=%s", reason, provider, extra=extra)
    return new


def _suppression_reason(rules: TrackingRules, event: AnymailTrackingEvent) -> str | None:
    if rules.permanent_bounce(event):
        return Suppression.Reason.BOUNCED
    if event.event_type == EventType.COMPLAINED:
        return Suppression.Reason.COMPLAINED
    if event.event_type == EventType.UNSUBSCRIBED:
        return Suppression.Reason.UNSUBSCRIBED
    return None


def _insert_new(
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
