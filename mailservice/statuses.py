"""Status names shared by the worker, the API and the admin, and how a message's status follows
its recipients (docs/delivery.md, "Statuses")."""

from collections.abc import Iterable

from django.db import models


class RecipientStatus(models.TextChoices):
    QUEUED = "queued"
    SENDING = "sending"
    DEFERRED = "deferred"  # every provider failed; retried with backoff
    SENT = "sent"  # a provider took it; delivery reports may follow
    DELIVERED = "delivered"
    FAILED = "failed"
    REJECTED = "rejected"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    SUPPRESSED = "suppressed"  # dropped before sending: the address is on the suppression list
    CANCELLED = "cancelled"  # called back before any provider took it (API or operator)


class MessageStatus(models.TextChoices):
    QUEUED = "queued"
    SENDING = "sending"
    DEFERRED = "deferred"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    REJECTED = "rejected"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"
    PARTIALLY_DELIVERED = "partially_delivered"  # all recipients final, with different outcomes


FINAL_RECIPIENT_STATUSES = frozenset(
    {
        RecipientStatus.DELIVERED,
        RecipientStatus.FAILED,
        RecipientStatus.REJECTED,
        RecipientStatus.BOUNCED,
        RecipientStatus.COMPLAINED,
        RecipientStatus.SUPPRESSED,
        RecipientStatus.CANCELLED,
    }
)
# How far a recipient that is not final has come: the message shows the least advanced one.
_PROGRESS = {
    RecipientStatus.QUEUED: 0,
    RecipientStatus.SENDING: 1,
    RecipientStatus.DEFERRED: 1,
    RecipientStatus.SENT: 2,
}


def summarize(statuses: Iterable[str]) -> MessageStatus:
    """The message status for its recipients' statuses.

    While any recipient is not final, the least advanced of those (queued < sending/deferred <
    sent; deferred wins a tie, since it says why nothing moves). Once all are final, their shared
    outcome, or `partially_delivered` when they differ.
    """
    statuses = [RecipientStatus(status) for status in statuses]
    if not statuses:
        return MessageStatus.QUEUED
    pending = [status for status in statuses if status not in FINAL_RECIPIENT_STATUSES]
    if pending:
        least = min(pending, key=lambda status: (_PROGRESS[status], status != RecipientStatus.DEFERRED))
        return MessageStatus(least.value)
    if len(set(statuses)) == 1:
        return MessageStatus(statuses[0].value)
    return MessageStatus.PARTIALLY_DELIVERED


# Forward-only order of a recipient's status. Every failure ranks above delivered (an
# asynchronous bounce or a later complaint wins), and failures do not replace each other.
_RANK = {
    RecipientStatus.QUEUED: 0,
    RecipientStatus.SENDING: 1,
    RecipientStatus.DEFERRED: 1,
    RecipientStatus.SENT: 2,
    RecipientStatus.DELIVERED: 3,
    RecipientStatus.FAILED: 4,
    RecipientStatus.REJECTED: 4,
    RecipientStatus.BOUNCED: 4,
    RecipientStatus.COMPLAINED: 4,
    RecipientStatus.SUPPRESSED: 4,
    RecipientStatus.CANCELLED: 4,
}


def advances(current: str, new: str) -> bool:
    """True when moving a recipient from `current` to `new` is progress, never a step back:
    `delivered` never replaces a failure, and a late or out-of-order event changes nothing."""
    return _RANK[RecipientStatus(new)] > _RANK[RecipientStatus(current)]
