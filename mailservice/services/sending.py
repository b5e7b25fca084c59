"""Sending one claimed message through the failover backend and judging the outcome, without
touching the database: the worker runs these in threads, up to MAILSERVICE_SEND_CONCURRENCY at a
time, each thread on its own open connection (docs/delivery.md, "Batches and concurrency")."""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.mail import EmailMessage
from django.db import connections

from failover.attempts import Attempt, Outcome
from failover.errors import is_content_error, refuses_recipients
from failover.exceptions import AllProvidersFailed, AmbiguousSendError
from mailservice import conf
from mailservice.addresses import normalize_email
from mailservice.compat import mail_connection
from mailservice.composing import build_email
from mailservice.models import Message, Recipient
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


def retry_delay(*, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before retry number `attempt` (1-based): exponential, capped, with jitter that
    shortens each delay by up to MAILSERVICE_RETRY_JITTER so retries of an outage spread out."""
    base = conf.retry_base_delay() * (2 ** max(attempt - 1, 0))
    delay = min(base, conf.retry_max_delay())
    jitter = conf.retry_jitter()
    if jitter:
        delay *= 1 - jitter * (rng or random).random()
    return delay


def message_send(
    message: Message, recipients: list[Recipient], *, connection, now: datetime, rng: random.Random | None = None
) -> SendResult:
    """Send to these recipients through `connection` and judge the outcome. Never raises."""
    try:
        email = build_email(message, recipients)
    except Exception as error:  # stored data that cannot become an email will not improve
        logger.exception("message build failed", extra={"message_id": str(message.pk)})
        return SendResult(RecipientStatus.FAILED, error=f"The message could not be built: {type(error).__name__}")
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
            last.outcome is Outcome.MESSAGE_ERROR or (last.outcome is Outcome.LOCAL_ERROR and is_content_error(error))
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
            RecipientStatus.FAILED, error="The provider sent nothing (cancelled before sending).", attempts=attempts
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
                RecipientStatus.REJECTED if recipient_status.status in ANYMAIL_REJECTED
                else RecipientStatus.FAILED if recipient_status.status == "failed"
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
            error=f"No provider took the message within the maximum age ({int(conf.max_age())} s); last error: {error}",
            attempts=attempts,
        )
    next_at = min(now + timedelta(seconds=retry_delay(attempt=message.attempt_count, rng=rng)), deadline)
    return SendResult(RecipientStatus.DEFERRED, error=error, next_attempt_at=next_at, attempts=attempts)


def threads_wanted(wall: float, cpu: float, concurrency: int) -> int:
    """How many threads keep the interpreter busy, from one send's wall time and this thread's
    CPU time during it: one while a send mostly computes, more as it waits (1 ms of CPU and
    49 ms of waiting for the provider: all of them), never more than `concurrency`. A CPU other
    processes keep busy also looks like waiting: then a thread or two more than needed."""
    return max(1, min(int(wall / max(cpu, 1e-4)), concurrency))


class _UnavailableConnection:
    """Stands in for a connection that could not be made (no chain configured, a bad backend
    path): every send raises the error, which message_send() judges like any send error."""

    def __init__(self, error: Exception):
        self.error = error

    def send_messages(self, messages) -> int:
        raise self.error

    def close(self) -> None:
        pass


def _open_connection():
    try:
        connection = mail_connection()
        connection.open()
    except Exception as error:
        return _UnavailableConnection(error)
    return connection


def send_all(
    jobs: Sequence[object],
    send: Callable[[object, object], None],
    *,
    concurrency: int,
    stop: threading.Event,
) -> None:
    """Call `send(connection, job)` for every job, at most `concurrency` at a time, each thread
    with one failover connection kept open for all its jobs (HTTP keep-alive to the providers).

    The caller's thread sends first and adds threads only as far as its sends wait on the
    network rather than compute (a provider's latency): a provider that answers at once is
    driven fastest by one thread, since more would only contend for the interpreter. Each batch
    measures afresh (a thread waiting for the interpreter would look like one waiting on the
    network, so a count carried over would never come down). Jobs not started when `stop` is
    set are left for the caller to release."""
    pending: queue.SimpleQueue = queue.SimpleQueue()
    for job in jobs:
        pending.put(job)
    threads: list[threading.Thread] = []

    def work(*, scaling: bool) -> None:
        connection = _open_connection()
        try:
            while not stop.is_set():
                try:
                    job = pending.get_nowait()
                except queue.Empty:
                    return
                wall, cpu = time.perf_counter(), time.thread_time()
                send(connection, job)
                if scaling and len(threads) < concurrency - 1:
                    add_threads(threads_wanted(time.perf_counter() - wall, time.thread_time() - cpu, concurrency) - 1)
        finally:
            connection.close()

    def work_in_thread() -> None:
        try:
            work(scaling=False)
        except Exception:  # send() never raises; this is a bug, and the lease makes it safe
            logger.exception("send thread failed")
        finally:
            connections.close_all()  # this thread's own database connections, if any were opened

    def add_threads(wanted: int) -> None:
        while len(threads) < wanted and not pending.empty():  # no thread without a job to take
            thread = threading.Thread(target=work_in_thread, name=f"mailservice-send-{len(threads)}", daemon=True)
            threads.append(thread)
            thread.start()

    try:
        work(scaling=concurrency > 1)
    except BaseException:
        stop.set()  # a second signal, or a bug: start nothing more, let sends in flight end
        raise
    finally:
        _join(threads, stop)


def _join(threads: list[threading.Thread], stop: threading.Event) -> None:
    """Wait for every send thread, even through a signal that arrives meanwhile (it stops new
    sends and is raised once all have ended): the caller then knows exactly which messages were
    handed to a provider, and releases only the others."""
    interrupted: BaseException | None = None
    for thread in threads:
        while thread.is_alive():
            try:
                thread.join()
            except BaseException as error:  # noqa: B036 - re-raised below, after the threads end
                stop.set()
                interrupted = interrupted or error
    if interrupted is not None:
        raise interrupted
