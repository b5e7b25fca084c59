"""The suppression list, shared by every provider: addresses no message is sent to."""

from __future__ import annotations

import logging

from django.db.models import QuerySet

from mailservice.addresses import normalize_email
from mailservice.models import Suppression

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
    return bool(
        suppressions_remove(entries=Suppression.objects.filter(address=normalize_email(address)), by="api")
    )


def suppressions_remove(*, entries: QuerySet[Suppression], by: str) -> int:
    """Remove the given entries (the admin's selection, or one address); return how many."""
    deleted, _ = entries.delete()
    if deleted:
        logger.info("suppression removed count=%s by=%s", deleted, by, extra={"count": deleted, "reason": by})
    return deleted
