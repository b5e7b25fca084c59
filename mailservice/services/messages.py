"""Accepting messages into the outbox (with idempotency), the operator's retry, and cancelling
(the API's DELETE and the operator's action)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, router, transaction
from django.utils import timezone

from mailservice import conf
from mailservice.exceptions import IdempotencyConflict, MessageStateError
from mailservice.models import ApiKey, IdempotencyKey, Message, Recipient
from mailservice.models.bulk import insert_rows
from mailservice.statuses import MessageStatus, RecipientStatus
from mailservice.tasks import wake_delivery_on_commit
from mailservice.validation import Draft

logger = logging.getLogger(__name__)


def request_fingerprint(data: dict[str, Any]) -> str:
    """A hash of a parsed request body that ignores key order (for Idempotency-Key checks)."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def message_accept(
    *,
    draft: Draft,
    api_key: ApiKey | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    now: datetime | None = None,
) -> tuple[Message, bool]:
    """Store the message durably and enqueue its delivery once the transaction commits.

    Returns (message, replayed): with an `idempotency_key` already used by this API key for the
    same request, the first message and True; for a different request, IdempotencyConflict.
    Two concurrent requests with one key race on a unique constraint: one stores, the other
    gets the winner's message.
    """
    now = now or timezone.now()
    if idempotency_key:
        if api_key is None or request_hash is None:
            raise ValueError("An idempotency key needs the API key and the request hash")
        replay = _replay(api_key=api_key, key=idempotency_key, request_hash=request_hash, now=now)
        if replay is not None:
            return replay, True
    try:
        with transaction.atomic():
            if idempotency_key:
                IdempotencyKey.objects.filter(
                    api_key=api_key, key=idempotency_key, expires_at__lte=now
                ).delete()
            message = _create(draft=draft, api_key=api_key, now=now)
            if idempotency_key:
                IdempotencyKey.objects.create(
                    api_key=api_key,
                    key=idempotency_key,
                    request_hash=request_hash,
                    message=message,
                    created_at=now,
                    expires_at=now + timedelta(seconds=conf.idempotency_ttl()),
                )
            wake_delivery_on_commit(at=message.next_attempt_at)
    except IntegrityError:
        if not idempotency_key:
            raise
        replay = _replay(api_key=api_key, key=idempotency_key, request_hash=request_hash, now=now)
        if replay is None:
            raise
        return replay, True
    logger.info(
        "message queued recipients=%s send_at=%s",
        draft.recipient_count,
        draft.send_at.isoformat() if draft.send_at else "-",
        extra={"message_id": str(message.pk), "status": message.status},
    )
    return message, False


def _replay(*, api_key: ApiKey, key: str, request_hash: str, now: datetime) -> Message | None:
    record = (
        IdempotencyKey.objects.filter(api_key=api_key, key=key, expires_at__gt=now)
        .select_related("message")
        .first()
    )
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise IdempotencyConflict(key)
    logger.info("message idempotent replay", extra={"message_id": str(record.message_id)})
    return record.message


def _create(*, draft: Draft, api_key: ApiKey | None, now: datetime) -> Message:
    due = max(now, draft.send_at) if draft.send_at else now
    message = Message(
        api_key=api_key,
        status=MessageStatus.QUEUED,
        **draft.columns,
        window_start=due,
        created_at=now,
        updated_at=now,
        next_attempt_at=due,
        enqueued_at=now,
    )
    # One prepared INSERT each for the message and its recipients (models/bulk.py): Django's own
    # create() and bulk_create() cost the API more than the database does.
    insert_rows([message])
    message._state.adding, message._state.db = False, router.db_for_write(Message)
    insert_rows(
        [
            Recipient(
                message=message,
                kind=kind,
                position=position,
                address=address.original,
                email=address.email,
                status=RecipientStatus.QUEUED,
                updated_at=now,
            )
            for kind, addresses in (
                (Recipient.Kind.TO, draft.to),
                (Recipient.Kind.CC, draft.cc),
                (Recipient.Kind.BCC, draft.bcc),
            )
            for position, address in enumerate(addresses)
        ]
    )
    return message


@dataclass(frozen=True)
class _Transition:
    """An operator's action on a message: allowed only from the message statuses `allowed`
    (refused otherwise, saying `refusal`), it gives the message `status` and its recipients in
    `recipients_from` the `recipient_status`; with `deliver`, a delivery round is woken once it
    commits. Logged as `done`."""

    allowed: frozenset[str]
    refusal: str
    status: MessageStatus
    recipients_from: frozenset[str]
    recipient_status: RecipientStatus
    deliver: bool
    done: str


REQUEUE = _Transition(
    allowed=frozenset({MessageStatus.DEFERRED, MessageStatus.FAILED, MessageStatus.REJECTED}),
    refusal="Only deferred, failed or rejected messages can be retried",
    status=MessageStatus.QUEUED,
    recipients_from=frozenset({RecipientStatus.DEFERRED, RecipientStatus.FAILED, RecipientStatus.REJECTED}),
    recipient_status=RecipientStatus.QUEUED,
    deliver=True,
    done="message retry requested",
)
CANCEL = _Transition(
    # No provider has taken a message in these: the ready statuses a worker claims from. Once a
    # worker holds it (`sending`) a provider may be taking it; after that it is done.
    allowed=frozenset({MessageStatus.QUEUED, MessageStatus.DEFERRED}),
    refusal="Only a queued or deferred message can be cancelled: no provider has taken it yet",
    status=MessageStatus.CANCELLED,
    recipients_from=frozenset({RecipientStatus.QUEUED, RecipientStatus.DEFERRED}),
    recipient_status=RecipientStatus.CANCELLED,
    deliver=False,
    done="message cancelled",
)
# Who cancelled, as `last_error` and each cancelled recipient's `error` say it.
CANCEL_REASONS = {"operator": "Cancelled by an operator.", "api": "Cancelled through the API."}


def message_requeue(*, message: Message, now: datetime | None = None) -> Message:
    """The operator's requeue: a deferred or failed message queued again now, with a fresh
    max-age window (not the delivery retry, which `services/sending.py` schedules).

    Recipients that failed or were rejected are queued again; delivered, bounced, complained and
    suppressed ones are left alone.
    """
    now = now or timezone.now()
    fresh_window = {"next_attempt_at": now, "window_start": now, "enqueued_at": now, "finished_at": None}
    return _operator_transition(message, REQUEUE, changes=fresh_window, error="", now=now)


def message_cancel(*, message: Message, by: str = "operator", now: datetime | None = None) -> Message:
    """Call back a message no provider has taken yet (queued or deferred, `send_at` included):
    it and its waiting recipients become `cancelled`, and no worker claims it again. `by` is
    "operator" (the admin) or "api" (DELETE /api/messages/{id}).

    Too late once a worker holds it (`sending`: a provider may be taking it this instant) or
    it is done: MessageStateError with its status. A worker's claim is a conditional UPDATE on
    the same ready statuses (services/claiming.py), so whichever commits first wins.
    """
    now = now or timezone.now()
    reason = CANCEL_REASONS[by]
    changes = {"next_attempt_at": None, "last_error": reason, "finished_at": now}
    return _operator_transition(message, CANCEL, changes=changes, error=reason, now=now, by=by)


def _operator_transition(
    message: Message,
    transition: _Transition,
    *,
    changes: dict[str, Any],
    error: str,
    now: datetime,
    by: str = "operator",
) -> Message:
    """Apply `transition` to a message (with `changes` to its other fields) and its recipients
    (with `error`) in one transaction, only if the message is still in an allowed status: the
    check and the write are one statement, so a worker claiming it meanwhile wins and the action
    is refused (MessageStateError, with the status that statement found)."""
    with transaction.atomic():
        allowed = Message.objects.filter(pk=message.pk, status__in=transition.allowed)
        if not allowed.update(status=transition.status, **changes, updated_at=now):
            current = Message.objects.filter(pk=message.pk).values_list("status", flat=True).first() or ""
            raise MessageStateError(f"{transition.refusal}, not {current}.", status=current)
        message.recipients.filter(status__in=transition.recipients_from).update(
            status=transition.recipient_status, error=error, updated_at=now
        )
        if transition.deliver:
            wake_delivery_on_commit()
    extra = {"message_id": str(message.pk), "status": str(transition.status), "reason": by}
    logger.info(transition.done, extra=extra)
    message.refresh_from_db()
    return message
