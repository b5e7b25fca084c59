"""The suppression list, shared by every provider: addresses no message is sent to."""
from __future__ import annotations

import logging

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
    deleted, _ = Suppression.objects.filter(address=normalize_email(address)).delete()
    if deleted:
        logger.info("suppression removed", extra={"reason": "api"})
    return bool(deleted)
