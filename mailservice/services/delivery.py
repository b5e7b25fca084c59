"""Delivery: claim a message with a lease, send it outside any transaction through the failover
backend, record each provider attempt, and move the message on (sent, deferred or failed).

The Message row is the source of truth. A claim is a lease (`lease_owner`, `lease_expires_at`)
taken atomically; a worker that dies leaves the lease to expire, and the recovery pass hands the
message to a new task. Every outcome is recorded only by the lease's owner.
"""
from __future__ import annotations

import logging
import random
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.mail import EmailMessage
from django.db import connections, router, transaction
from django.db.models import F
from django.utils import timezone

from failover.attempts import Attempt, Outcome
from failover.errors import refuses_recipients
from failover.exceptions import AllProvidersFailed, AmbiguousSendError
from mailservice import conf
from mailservice.addresses import normalize_email
from mailservice.compat import mail_connection
from mailservice.composing import build_email
from mailservice.models import DeliveryAttempt, Message, Recipient, Suppression
from mailservice.services.linking import tracking_events_link_late
from mailservice.statuses import FINAL_RECIPIENT_STATUSES, MessageStatus, RecipientStatus, summarize

logger = logging.getLogger(__name__)

# Anymail's per-recipient statuses that refuse the address (`failed` fails it; the rest: sent).
ANYMAIL_REJECTED = {"rejected", "invalid"}
MAX_ERROR = 1000


def _now(fixed: datetime | None) -> datetime:
    return fixed or timezone.now()


def new_worker_id() -> str:
    return secrets.token_hex(8)


def retry_delay(*, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before retry number `attempt` (1-based): exponential, capped, with jitter that
    shortens each delay by up to MAILSERVICE_RETRY_JITTER so retries of an outage spread out."""
    base = conf.retry_base_delay() * (2 ** max(attempt - 1, 0))
    delay = min(base, conf.retry_max_delay())
    jitter = conf.retry_jitter()
    if jitter:
        delay *= 1 - jitter * (rng or random).random()
    return delay


# Claiming ----------------------------------------------------------------------------------


def message_claim(*, message_id: uuid.UUID | str, owner: str, now: datetime | None = None) -> Message | None:
    """Take the lease on a claimable message (due, or its lease expired); None if it is not.

    Row locks with SKIP LOCKED where the database has them; elsewhere (SQLite) a conditional
    UPDATE whose WHERE repeats the claim condition, so two workers never both win.
    """
    now = _now(now)
    lease_until = now + timedelta(seconds=conf.lease_seconds())
    db = router.db_for_write(Message)
    with transaction.atomic(using=db):
        candidates = Message.objects.using(db).claimable(now).filter(pk=message_id)
        if connections[db].features.has_select_for_update_skip_locked:
            current = candidates.get_locked()
        else:
            current = candidates.first()
        if current is None:
            return None
        abandoned_by = current.lease_owner  # non-empty: a previous worker never finished
        claimed = candidates.update(
            status=MessageStatus.SENDING,
            lease_owner=owner,
            lease_expires_at=lease_until,
            attempt_count=F("attempt_count") + 1,
            updated_at=now,
        )
        if not claimed:
            return None
        Recipient.objects.using(db).filter(
            message_id=message_id, status__in=[RecipientStatus.QUEUED, RecipientStatus.DEFERRED]
        ).update(status=RecipientStatus.SENDING, updated_at=now)
        message = Message.objects.using(db).get(pk=message_id)
        if abandoned_by:
            # The last round's worker died after claiming: it may have handed the message to a
            # provider before dying. Say so rather than pretend it never happened.
            message.possible_duplicate = True
            message.save(update_fields=["possible_duplicate"])
            DeliveryAttempt.objects.using(db).create(
                message=message,
                round=message.attempt_count - 1,
                outcome=Outcome.AMBIGUOUS,
                error="The worker's lease expired before it recorded an outcome; it may have sent the message.",
                created_at=now,
            )
            logger.warning(
                "message lease expired, reclaimed",
                extra={"message_id": str(message_id), "status": "sending", "previous_worker": abandoned_by},
            )
    logger.info(
        "message sending round=%s", message.attempt_count, extra={"message_id": str(message_id), "status": "sending"}
    )
    return message


# Delivering --------------------------------------------------------------------------------


@dataclass
class _Result:
    """What one round came to, applied to the row by _finish()."""

    recipient_status: RecipientStatus  # for every recipient of this round
    error: str = ""
    provider: str = ""
    provider_message_id: str = ""
    per_recipient: dict[str, tuple[RecipientStatus, str]] = field(default_factory=dict)  # email -> status, id
    next_attempt_at: datetime | None = None
    attempts: list[Attempt] = field(default_factory=list)


def message_deliver(
    *,
    message_id: uuid.UUID | str,
    worker: str | None = None,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> Message | None:
    """One delivery round. Returns the message as it ends, or None when it was not claimable
    (delivered already, not due yet, or another worker holds it). A deferred message's next
    round is due at `next_attempt_at`; the delivery task (mailservice/tasks.py) enqueues it, and
    the recovery pass finds it when this is called from elsewhere."""
    owner = worker or new_worker_id()
    message = message_claim(message_id=message_id, owner=owner, now=now)
    if message is None:
        return None
    recipients = list(message.recipients.filter(status=RecipientStatus.SENDING))
    recipients = _drop_suppressed(message, recipients, now=_now(now))
    if not recipients:
        # Nobody left to send to (all suppressed): no provider is asked.
        return _finish(message, owner, _Result(recipient_status=RecipientStatus.SUPPRESSED), [], now=now)
    result = _send(message, recipients, now=now, rng=rng)
    return _finish(message, owner, result, recipients, now=now)


def _drop_suppressed(message: Message, recipients: list[Recipient], *, now: datetime) -> list[Recipient]:
    emails = {recipient.email for recipient in recipients}
    suppressed = set(Suppression.objects.filter(address__in=emails).values_list("address", flat=True))
    if not suppressed:
        return recipients
    Recipient.objects.filter(message=message, email__in=suppressed, status=RecipientStatus.SENDING).update(
        status=RecipientStatus.SUPPRESSED, error="The address is on the suppression list.", updated_at=now
    )
    logger.info(
        "message recipients suppressed count=%s",
        sum(1 for r in recipients if r.email in suppressed),
        extra={"message_id": str(message.pk)},
    )
    return [recipient for recipient in recipients if recipient.email not in suppressed]


def _send(message: Message, recipients: list[Recipient], *, now: datetime | None, rng) -> _Result:
    """Send outside any transaction; turn every outcome into a _Result. Never raises."""
    try:
        email = build_email(message, recipients)
    except Exception as error:  # stored data that cannot become an email will not improve
        logger.exception("message build failed", extra={"message_id": str(message.pk)})
        return _Result(RecipientStatus.FAILED, error=f"The message could not be built: {type(error).__name__}")
    try:
        connection = mail_connection()
        sent = connection.send_messages([email])
    except AllProvidersFailed as error:
        return _deferred(message, str(error), list(error.attempts), now=now, rng=rng)
    except AmbiguousSendError as error:
        # FIRST_WORKING_EMAIL_FAILOVER_ON_AMBIGUOUS is off: a duplicate is worse than a loss here.
        return _Result(RecipientStatus.FAILED, error=str(error), attempts=list(error.attempts))
    except Exception as error:
        attempts = list(getattr(email, "failover_attempts", None) or [])
        last = attempts[-1] if attempts else None
        described = last.error if last and last.error else f"{type(error).__name__}: {error}"
        if last is not None and last.outcome in (Outcome.MESSAGE_ERROR, Outcome.LOCAL_ERROR):
            # The failover backend judged the message itself (refused, or no provider's backend
            # could encode it): final, whichever provider is asked.
            status = RecipientStatus.REJECTED if refuses_recipients(error) else RecipientStatus.FAILED
            return _Result(status, error=described, attempts=attempts)
        # Not a verdict on the message (no chain configured, a bug in a backend): try again later.
        logger.exception("message send error", extra={"message_id": str(message.pk)})
        return _deferred(message, described.splitlines()[0][:MAX_ERROR], attempts, now=now, rng=rng)
    attempts = list(getattr(email, "failover_attempts", None) or [])
    if not sent:
        return _Result(RecipientStatus.FAILED, error="The provider sent nothing (cancelled before sending).", attempts=attempts)
    return _sent(email, attempts)


def _sent(email: EmailMessage, attempts: list[Attempt]) -> _Result:
    provider = getattr(email, "failover_provider", None) or ""
    status = getattr(email, "anymail_status", None)
    message_id = ""
    per_recipient: dict[str, tuple[RecipientStatus, str]] = {}
    if status is not None:
        ids = status.message_id
        if isinstance(ids, str):
            message_id = ids
        elif ids:
            message_id = ",".join(sorted(str(i) for i in ids))[:255]
        for address, recipient_status in (status.recipients or {}).items():
            outcome = (
                RecipientStatus.REJECTED if recipient_status.status in ANYMAIL_REJECTED
                else RecipientStatus.FAILED if recipient_status.status == "failed"
                else RecipientStatus.SENT
            )
            per_recipient[normalize_email(address)] = (outcome, str(recipient_status.message_id or ""))
    return _Result(
        RecipientStatus.SENT,
        provider=provider,
        provider_message_id=message_id,
        per_recipient=per_recipient,
        attempts=attempts,
    )


def _deferred(message: Message, error: str, attempts: list[Attempt], *, now: datetime | None, rng) -> _Result:
    now = _now(now)
    deadline = message.deadline()
    if now >= deadline:
        return _Result(
            RecipientStatus.FAILED,
            error=f"No provider took the message within the maximum age ({int(conf.max_age())} s); last error: {error}",
            attempts=attempts,
        )
    next_at = min(now + timedelta(seconds=retry_delay(attempt=message.attempt_count, rng=rng)), deadline)
    return _Result(RecipientStatus.DEFERRED, error=error, next_attempt_at=next_at, attempts=attempts)


def _finish(
    message: Message, owner: str, result: _Result, recipients: list[Recipient], *, now: datetime | None
) -> Message:
    """Record the attempts and, if this worker still holds the lease, the outcome."""
    now = _now(now)
    with transaction.atomic():
        _record_attempts(message, result.attempts, now=now)
        if not _release_lease(message, owner, now=now):
            logger.warning(
                "message lease lost before finishing; outcome kept as attempts only",
                extra={"message_id": str(message.pk)},
            )
            message.refresh_from_db()
            return message
        _update_recipients(recipients, result, now=now)
        if result.provider:
            # A fast provider's webhook may have arrived before these ids were recorded.
            message.provider_message_id = result.provider_message_id[:255]
            tracking_events_link_late(message=message)
        _update_message(message, result, now=now)
    _log_outcome(message, result)
    return message


def _record_attempts(message: Message, attempts: list[Attempt], *, now: datetime) -> None:
    DeliveryAttempt.objects.bulk_create(
        DeliveryAttempt(
            message=message,
            round=message.attempt_count,
            provider=attempt.provider,
            outcome=attempt.outcome,
            error_class=attempt.error_class or "",
            error=(attempt.error or "")[:MAX_ERROR],
            status_code=attempt.status_code,
            duration=attempt.duration,
            created_at=now,
        )
        for attempt in attempts
    )


def _release_lease(message: Message, owner: str, *, now: datetime) -> bool:
    """False when the lease is no longer this worker's (it expired and another claimed it)."""
    return bool(
        Message.objects.filter(pk=message.pk, status=MessageStatus.SENDING, lease_owner=owner).update(
            lease_owner="", lease_expires_at=None, updated_at=now
        )
    )


def _update_recipients(recipients: list[Recipient], result: _Result, *, now: datetime) -> None:
    for recipient in recipients:
        status, provider_id = result.per_recipient.get(recipient.email, (result.recipient_status, ""))
        recipient.status = status
        recipient.provider_message_id = provider_id or result.provider_message_id
        recipient.error = "" if status == RecipientStatus.SENT else result.error[:MAX_ERROR]
        recipient.updated_at = now
    Recipient.objects.bulk_update(recipients, ["status", "provider_message_id", "error", "updated_at"])


def _update_message(message: Message, result: _Result, *, now: datetime) -> None:
    """The message's status from all its recipients, the provider that took it, and when the
    next round is due (a deferral) or that none is (anything else that is not queued)."""
    statuses = list(message.recipients.values_list("status", flat=True))
    message.status = summarize(statuses)
    message.lease_owner, message.lease_expires_at, message.updated_at = "", None, now
    message.last_error = result.error[:MAX_ERROR]
    message.possible_duplicate = message.possible_duplicate or any(a.ambiguous for a in result.attempts)
    fields = ["status", "lease_owner", "lease_expires_at", "updated_at", "last_error", "possible_duplicate"]
    if result.provider:
        message.provider, message.provider_message_id, message.sent_at = (
            result.provider,
            result.provider_message_id[:255],
            now,
        )
        fields += ["provider", "provider_message_id", "sent_at"]
    if result.next_attempt_at is not None:
        # The delivery task enqueues the next round (mailservice/tasks.py); recovery covers a
        # task that is lost on the way.
        message.next_attempt_at, message.enqueued_at = result.next_attempt_at, now
        fields += ["next_attempt_at", "enqueued_at"]
    elif message.status not in (MessageStatus.QUEUED, MessageStatus.DEFERRED):
        message.next_attempt_at = None
        fields.append("next_attempt_at")
    if all(status in FINAL_RECIPIENT_STATUSES for status in statuses):
        message.finished_at = now
        fields.append("finished_at")
    message.save(update_fields=fields)


def _log_outcome(message: Message, result: _Result) -> None:
    log = logger.warning if message.status in (MessageStatus.FAILED, MessageStatus.REJECTED) else logger.info
    log(
        "message %s round=%s provider=%s attempts=%s",
        message.status,
        message.attempt_count,
        message.provider or "-",
        len(result.attempts),
        extra={
            "message_id": str(message.pk),
            "status": str(message.status),
            "provider": message.provider,
            "next_attempt_at": message.next_attempt_at.isoformat() if message.next_attempt_at else None,
        },
    )
