"""Delivery rounds, a batch at a time: claim up to MAILSERVICE_BATCH_SIZE due messages, drop
suppressed recipients, hand them to sender threads (services/dispatch.py: at most
MAILSERVICE_SEND_CONCURRENCY in flight, outside any transaction), and record outcomes with bulk
writes as the sends finish (docs/delivery.md, "Batches and concurrency").

The Message row is the source of truth. Each message keeps its own lease (services/claiming.py),
renewed while the round lasts; a worker that dies stops renewing, and the next round takes its
messages over. Outcomes are recorded only for the messages whose lease this worker still holds,
with a fixed number of statements per record, however many sends it holds.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db import DatabaseError, transaction
from django.utils import timezone

from mailservice import conf
from mailservice.models import DeliveryAttempt, Message, Recipient, Suppression
from mailservice.models.bulk import insert_rows, update_rows
from mailservice.services.claiming import (
    messages_claim,
    messages_mark_started,
    messages_release,
    messages_renew,
)
from mailservice.services.concurrency import FAILING, THROTTLED, Concurrency
from mailservice.services.dispatch import Dispatch, Hooks, is_transient, with_db_retry
from mailservice.services.linking import tracking_events_link_late
from mailservice.services.sending import MAX_ERROR, SendResult, message_send
from mailservice.statuses import FINAL_RECIPIENT_STATUSES, MessageStatus, RecipientStatus, summarize

logger = logging.getLogger(__name__)

SUPPRESSED_ERROR = "The address is on the suppression list."
RECIPIENT_FIELDS = ["status", "provider_message_id", "error", "updated_at"]
MESSAGE_FIELDS = [
    "status", "lease_owner", "lease_expires_at", "send_started_at", "updated_at", "last_error",
    "possible_duplicate", "provider", "provider_message_id", "sent_at", "next_attempt_at",
    "enqueued_at", "finished_at",
]  # fmt: skip


def _now(fixed: datetime | None) -> datetime:
    return fixed or timezone.now()


def new_worker_id() -> str:
    return secrets.token_hex(8)


@dataclass
class _SendJob:
    """One message of the batch as the dispatch handles it: the recipients it is sent to now, and
    how far it got (handed to a sender, sent, recorded)."""

    message: Message
    sending: list[Recipient]  # the recipients this round sends to
    started: bool = False  # handed to the senders (marked in the database): never released after this
    result: SendResult | None = None
    recorded: bool = False
    handed_at: float | None = None  # monotonic time it was handed to the senders


def messages_deliver(
    *,
    worker: str | None = None,
    now: datetime | None = None,
    rng: random.Random | None = None,
    limit: int | None = None,
    message_id: uuid.UUID | str | None = None,
    claimed: Callable[[list[Message]], None] | None = None,
    stop: threading.Event | None = None,
) -> list[Message]:
    """One batch: the messages claimed, as each ended its round (sent, deferred, failed…).

    `claimed` is called with the batch before anything is sent (the delivery task wakes another
    worker from there when the batch is full). Outcomes are recorded as sends finish, not at
    the end of the batch (services/dispatch.py). When `stop` is set, or the worker is
    interrupted, messages not yet handed to a provider are released, due again at once; one
    that was handed over keeps its lease, so that recovery reclaims it flagged as a possible
    duplicate."""
    owner = worker or new_worker_id()
    # A round starts sends only during the first half of MAILSERVICE_LEASE_SECONDS, counted from
    # before the claim (which may wait for the database's lock); what is left is released and
    # claimed again at once (docs/delivery.md, "Leases").
    started = time.monotonic()
    start_until = started + conf.lease_seconds() / 2
    # A database that is restarting is waited for this long before the round gives up.
    patience = conf.database_patience()
    batch = with_db_retry(
        lambda: messages_claim(
            owner=owner, now=_now(now), limit=limit or conf.batch_size(), message_id=message_id
        ),
        patience=patience,
        what="claim",
    )
    if not batch:
        return []
    jobs: list[_SendJob] = []
    dispatch: Dispatch[_SendJob] | None = None

    def send(connection, job: _SendJob) -> str | None:
        job.result = message_send(job.message, job.sending, connection=connection, now=_now(now), rng=rng)
        return _pushback(job.result.attempts)

    def mark(chunk: list[_SendJob]) -> list[_SendJob]:
        held = messages_mark_started([r.message.pk for r in chunk], owner=owner, now=_now(now))
        handed_at = time.monotonic()
        for job in chunk:
            job.started = job.message.pk in held
            job.handed_at = handed_at
        return [r for r in chunk if r.started]

    def record(finished: list[_SendJob]) -> None:
        # A retry after a failure part-way through the per-message fallback skips what was done.
        _record([r for r in finished if not r.recorded], owner, now=_now(now))

    def release(unsent: list[_SendJob]) -> None:
        for job in unsent:
            job.started, job.recorded = False, True  # given back: nothing left to renew
        messages_release([r.message for r in unsent], owner=owner, now=_now(now))

    def renew() -> None:
        # A send that has not returned after MAILSERVICE_LEASE_SECONDS (a backend without a
        # timeout) is no longer renewed: its lease runs out and recovery takes it over, flagged.
        oldest = time.monotonic() - conf.lease_seconds()
        messages_renew(
            [r.message.pk for r in jobs if not r.recorded and (r.handed_at is None or r.handed_at > oldest)],
            owner=owner,
            now=_now(now),
        )

    try:
        if claimed is not None:
            claimed(batch)
        jobs = [
            _SendJob(message, [r for r in message.recipients_loaded if r.status == RecipientStatus.SENDING])
            for message in batch
        ]
        _drop_suppressed(jobs, now=_now(now))
        nobody = [r for r in jobs if not r.sending]
        for job in nobody:
            # Nobody left to send to (all suppressed): no provider is asked.
            job.started, job.result = True, SendResult(RecipientStatus.SUPPRESSED)
        if nobody:
            record(nobody)
        dispatch = Dispatch(
            [r for r in jobs if r.result is None],
            Hooks(
                send=send,
                mark=mark,
                record=record,
                release=release,
                renew=renew,
                renew_every=conf.lease_renew_seconds(),
            ),
            concurrency=_concurrency(conf.send_concurrency()),
            stop=stop or threading.Event(),
            start_until=start_until,
            patience=patience,
        )
        dispatch.run()
    finally:
        # Whatever failed above, give back what was never handed to a provider.
        if dispatch is not None:
            unsent = [r.message for r in dispatch.unsent()]
        else:
            unsent = [r.message for r in jobs if not r.started] if jobs else batch
        with_db_retry(
            lambda: messages_release(unsent, owner=owner, now=_now(now)), patience=patience, what="release"
        )
    return batch


_controllers: dict[int, Concurrency] = {}


def _concurrency(ceiling: int) -> Concurrency:
    """One controller per worker process (and ceiling), so what one round learned about the
    provider's latency carries over to the next."""
    return _controllers.setdefault(ceiling, Concurrency(ceiling))


def _pushback(attempts) -> str | None:
    """Whether a provider asked us to slow down (429) or failed (5xx) during this send."""
    codes = [attempt.status_code for attempt in attempts if attempt.status_code is not None]
    if 429 in codes:
        return THROTTLED
    if any(code >= 500 for code in codes):
        return FAILING
    return None


def message_deliver(
    *,
    message_id: uuid.UUID | str,
    worker: str | None = None,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> Message | None:
    """One round for one message, as a batch of one. None when it was not claimable (delivered
    already, not due yet, or another worker holds it)."""
    batch = messages_deliver(worker=worker, now=now, rng=rng, limit=1, message_id=message_id)
    return batch[0] if batch else None


def _drop_suppressed(jobs: list[_SendJob], *, now: datetime) -> None:
    """Suppressed addresses leave the round before anything is sent: one query for the batch."""
    emails = {recipient.email for job in jobs for recipient in job.sending}
    suppressed = set(Suppression.objects.filter(address__in=emails).values_list("address", flat=True))
    if not suppressed:
        return
    dropped = []
    for job in jobs:
        keep = []
        for recipient in job.sending:
            if recipient.email in suppressed:
                recipient.status, recipient.error, recipient.updated_at = (
                    RecipientStatus.SUPPRESSED,
                    SUPPRESSED_ERROR,
                    now,
                )
                dropped.append(recipient.pk)
            else:
                keep.append(recipient)
        if len(keep) < len(job.sending):
            logger.info(
                "message recipients suppressed count=%s",
                len(job.sending) - len(keep),
                extra={"message_id": str(job.message.pk)},
            )
        job.sending = keep
    Recipient.objects.filter(pk__in=dropped, status=RecipientStatus.SENDING).update(
        status=RecipientStatus.SUPPRESSED, error=SUPPRESSED_ERROR, updated_at=now
    )


# Recording ---------------------------------------------------------------------------------


def _record(jobs: list[_SendJob], owner: str, *, now: datetime) -> None:
    """Record finished sends in one transaction. A database that cannot be reached (restarting,
    locked) raises, and the caller tries again with backoff (services/dispatch.py). One that
    refuses (a value it cannot store, a deadlock) gets each message recorded on its own, so one
    bad row does not leave the others leased, to be reclaimed and sent again as possible
    duplicates. A message whose record fails even alone keeps its lease: recovery reclaims it,
    flagged."""
    try:
        _finish(jobs, owner, now=now)
        return
    except DatabaseError as error:
        if is_transient(error):
            raise
        logger.exception("batch record failed count=%s", len(jobs), extra={"count": len(jobs)})
    if len(jobs) == 1:
        return  # recorded alone already
    for job in jobs:
        try:
            _finish([job], owner, now=now)
        except DatabaseError as error:
            if is_transient(error):
                raise
            logger.exception(
                "message record failed; its lease expires and recovery reclaims it",
                extra={"message_id": str(job.message.pk)},
            )


def _finish(jobs: list[_SendJob], owner: str, *, now: datetime) -> None:
    """Record every attempt and, for the messages whose lease this worker still holds, the
    outcome: a fixed number of statements for the whole batch."""
    if not jobs:
        return
    with transaction.atomic():
        insert_rows(
            [_attempt_row(job.message, attempt, now=now) for job in jobs for attempt in job.result.attempts]
        )
        held = set(
            Message.objects.select_for_update()
            .filter(pk__in=[r.message.pk for r in jobs], status=MessageStatus.SENDING, lease_owner=owner)
            .values_list("pk", flat=True)
        )
        kept = [r for r in jobs if r.message.pk in held]
        recipients = [recipient for r in kept for recipient in _apply_to_recipients(r, now=now)]
        update_rows(recipients, RECIPIENT_FIELDS)
        for job in kept:
            _apply_to_message(job, now=now)
        update_rows([r.message for r in kept], MESSAGE_FIELDS)
        linked = tracking_events_link_late(messages=[r.message for r in kept if r.result.provider])
    for job in jobs:
        job.recorded = True
        if job.message.pk not in held:
            logger.warning(
                "message lease lost before finishing; outcome kept as attempts only",
                extra={"message_id": str(job.message.pk)},
            )
            job.message.refresh_from_db()
        elif job.message.pk in linked:
            # Early provider events moved its recipients on (services/progress.py).
            job.message.refresh_from_db(fields=["status", "finished_at", "updated_at"])
        _log_outcome(job.message, job.result)


def _attempt_row(message: Message, attempt, *, now: datetime) -> DeliveryAttempt:
    return DeliveryAttempt(
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


def _apply_to_recipients(job: _SendJob, *, now: datetime) -> list[Recipient]:
    result = job.result
    for recipient in job.sending:
        status, provider_id = result.per_recipient.get(recipient.email, (result.recipient_status, ""))
        recipient.status = status
        recipient.provider_message_id = (provider_id or result.provider_message_id)[:255]
        recipient.error = "" if status == RecipientStatus.SENT else result.error[:MAX_ERROR]
        recipient.updated_at = now
    return job.sending


def _apply_to_message(job: _SendJob, *, now: datetime) -> None:
    """The message's status from all its recipients, the provider that took it, and when the
    next round is due (a deferral) or that none is (anything else that is not queued)."""
    message, result = job.message, job.result
    statuses = [recipient.status for recipient in message.recipients_loaded]
    message.status = summarize(statuses)
    message.lease_owner, message.lease_expires_at, message.send_started_at, message.updated_at = (
        "",
        None,
        None,
        now,
    )
    message.last_error = result.error[:MAX_ERROR]
    message.possible_duplicate = message.possible_duplicate or any(a.ambiguous for a in result.attempts)
    if result.provider:
        message.provider, message.provider_message_id, message.sent_at = (
            result.provider,
            result.provider_message_id[:255],
            now,
        )
    if result.next_attempt_at is not None:
        # The delivery task wakes a round for then (mailservice/tasks.py); recovery covers a
        # wake-up that is lost on the way.
        message.next_attempt_at, message.enqueued_at = result.next_attempt_at, now
    elif message.status not in (MessageStatus.QUEUED, MessageStatus.DEFERRED):
        message.next_attempt_at = None
    if message.finished_at is None and all(status in FINAL_RECIPIENT_STATUSES for status in statuses):
        message.finished_at = now


def _log_outcome(message: Message, result: SendResult) -> None:
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
