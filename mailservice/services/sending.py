"""Sending one claimed message through the failover backend and judging the outcome, without
touching the database: the worker runs these in threads, up to MAILSERVICE_SEND_CONCURRENCY at a
time, each thread on its own open connection (docs/delivery.md, "Batches and concurrency")."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.mail import EmailMessage

from failover.attempts import Attempt, Outcome
from failover.errors import is_content_error, refuses_recipients
from failover.exceptions import AllProvidersFailed, AmbiguousSendError
from mailservice import conf
from mailservice.addresses import normalize_email
from mailservice.composing import build_email
from mailservice.models import Message, Recipient
from mailservice.services.backoff import retry_delay
from mailservice.statuses import RecipientStatus

logger = logging.getLogger(__name__)

# Anymail's per-recipient statuses that refuse the address (`failed` fails it; the rest: sent).
ANYMAIL_REJECTED = {"rejected", "invalid"}
MAX_ERROR = 1000


@dataclass
class SendResult:
    """What one round came to for one message; the worker records it with the batch."""

    recipient_status: RecipientStatus  # for every recipient of this round
    error: str = ""
    provider: str = ""
    provider_message_id: str = ""
    per_recipient: dict[str, tuple[RecipientStatus, str]] = field(default_factory=dict)  # email -> status, id
    next_attempt_at: datetime | None = None
    attempts: list[Attempt] = field(default_factory=list)


def message_send(
    message: Message,
    recipients: list[Recipient],
    *,
    connection,
    now: datetime,
    rng: random.Random | None = None,
) -> SendResult:
    """Send to these recipients through `connection` and judge the outcome. Never raises."""
    try:
        email = build_email(message, recipients)
    except Exception as error:  # stored data that cannot become an email will not improve
        logger.exception("message build failed", extra={"message_id": str(message.pk)})
        return SendResult(
            RecipientStatus.FAILED, error=f"The message could not be built: {type(error).__name__}"
        )
    try:
        sent = connection.send_messages([email])
    except AllProvidersFailed as error:
        return _deferred(message, str(error), list(error.attempts), now=now, rng=rng)
    except AmbiguousSendError as error:
        # FIRST_WORKING_EMAIL_FAILOVER_ON_AMBIGUOUS is off: a duplicate is worse than a loss here.
        return SendResult(RecipientStatus.FAILED, error=str(error), attempts=list(error.attempts))
    except Exception as error:
        attempts = list(getattr(email, "failover_attempts", None) or [])
        last = attempts[-1] if attempts else None
        described = last.error if last and last.error else f"{type(error).__name__}: {error}"
        if last is not None and (
            last.outcome is Outcome.MESSAGE_ERROR
            or (last.outcome is Outcome.LOCAL_ERROR and is_content_error(error))
        ):
            # The failover backend judged the message itself (refused, or no provider's backend
            # could encode it): final, whichever provider is asked.
            status = RecipientStatus.REJECTED if refuses_recipients(error) else RecipientStatus.FAILED
            return SendResult(status, error=described, attempts=attempts)
        # Other errors raised before the network (a bug in a backend) blame no provider, but
        # may not be this message's for good: retried with backoff until its maximum age.
        # Not a verdict on the message (no chain configured, a bug in a backend): try again later.
        logger.exception("message send error", extra={"message_id": str(message.pk)})
        return _deferred(message, described.splitlines()[0][:MAX_ERROR], attempts, now=now, rng=rng)
    attempts = list(getattr(email, "failover_attempts", None) or [])
    if not sent:
        return SendResult(
            RecipientStatus.FAILED,
            error="The provider sent nothing (cancelled before sending).",
            attempts=attempts,
        )
    return _sent(email, attempts)


def _sent(email: EmailMessage, attempts: list[Attempt]) -> SendResult:
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
                RecipientStatus.REJECTED
                if recipient_status.status in ANYMAIL_REJECTED
                else RecipientStatus.FAILED
                if recipient_status.status == "failed"
                else RecipientStatus.SENT
            )
            per_recipient[normalize_email(address)] = (outcome, str(recipient_status.message_id or ""))
    return SendResult(
        RecipientStatus.SENT,
        provider=provider,
        provider_message_id=message_id,
        per_recipient=per_recipient,
        attempts=attempts,
    )


def _deferred(message: Message, error: str, attempts: list[Attempt], *, now: datetime, rng) -> SendResult:
    deadline = message.deadline()
    if now >= deadline:
        return SendResult(
            RecipientStatus.FAILED,
            error=(
                f"No provider took the message within the maximum age ({int(conf.max_age())} s); "
                f"last error: {error}"
            ),
            attempts=attempts,
        )
    next_at = min(now + timedelta(seconds=retry_delay(attempt=message.attempt_count, rng=rng)), deadline)
    return SendResult(RecipientStatus.DEFERRED, error=error, next_attempt_at=next_at, attempts=attempts)
