"""Running one round's sends: sender threads talk to the providers, and the calling thread keeps
the books (docs/delivery.md, "Batches and concurrency").

The calling thread never sends. It hands jobs out in small windows that it first marks as
started (`mark`), so a worker that dies leaves the unmarked rest to be taken over at once; it
records finished jobs as they arrive (`record`, grouped, at least every FLUSH_GAP seconds), so a
send's outcome is durable within about a second whatever the batch size; it renews the batch's
leases (`renew`) while the round lasts; and it sets how many sends are in flight (Concurrency).
Every hook that touches the database runs in the calling thread: a sender thread never does.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from django.db import connections

from mailservice.availability import is_database_unavailable
from mailservice.compat import mail_connection
from mailservice.services.concurrency import CONTROL_GAP, Concurrency

logger = logging.getLogger(__name__)

Job = TypeVar("Job")

# Finished sends are recorded together, at most this long after the first of them finished.
FLUSH_GAP = 0.05
# Jobs are marked as started ahead of the senders by about this long at the recent send rate
# (more at loopback speed, where a statement per few sends would cost more than the sends).
HAND_OUT_AHEAD = 0.2
HAND_OUT_MIN_AHEAD = 4
HAND_OUT_MAX_AHEAD = 32
# A database that is restarting is retried with growing pauses, up to this one.
MAX_DB_PAUSE = 2.0


@dataclass
class Hooks(Generic[Job]):
    """What a round does with its jobs. `send` runs in sender threads and never raises; the
    others run in the calling thread and may raise database errors."""

    send: Callable[[object, Job], str | None]  # (connection, job) -> THROTTLED, FAILING or None
    mark: Callable[[list[Job]], list[Job]]  # mark as started; returns those still this worker's
    record: Callable[[list[Job]], None]
    release: Callable[[list[Job]], None]  # give back jobs never handed to a sender
    renew: Callable[[], None]
    renew_every: float


def is_transient(error: BaseException) -> bool:
    """A database that cannot be reached now (restarting, a dropped connection, SQLite busy),
    as the API reads it for its 503s (mailservice/availability.py)."""
    return is_database_unavailable(error)


def with_db_retry(
    action: Callable[[], object],
    *,
    patience: float,
    what: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
):
    """Run `action`; while the database is unreachable, retry with growing pauses for up to
    `patience` seconds from the first failure, then raise. A dropped connection is closed so the
    retry reconnects."""
    pause = 0.05
    failures = 0
    until = math.inf
    while True:
        try:
            result = action()
        except Exception as error:
            if failures == 0:
                until = clock() + patience
            if not is_transient(error) or clock() + pause > until:
                raise
            failures += 1
            if failures == 1:
                logger.warning(
                    "database unavailable during %s; retrying",
                    what,
                    extra={"action": what, "error_class": type(error).__name__},
                )
            for alias in connections:
                connection = connections[alias]
                if connection.connection is not None and not connection.in_atomic_block:
                    connection.close()
            sleep(pause)
            pause = min(pause * 2, MAX_DB_PAUSE)
            continue
        if failures:
            logger.warning(
                "database back after %s failed tries during %s",
                failures,
                what,
                extra={"action": what, "failures": failures},
            )
        return result


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


class Dispatch(Generic[Job]):
    """One round: hand out, send, record, renew. After `run()`, every job handed to a sender is
    recorded (unless the database stayed unreachable longer than `patience`), and `unsent()` lists the
    others, for the caller to release."""

    def __init__(
        self,
        jobs: Sequence[Job],
        hooks: Hooks[Job],
        *,
        concurrency: Concurrency,
        stop: threading.Event,
        start_until: float,
        patience: float,
    ):
        self.hooks, self.concurrency, self.stop = hooks, concurrency, stop
        self.halt = threading.Event()  # ours: set when the round ends, whatever `stop` says
        self.start_until, self.patience = start_until, patience
        self.pending: deque[Job] = deque(jobs)  # not marked yet
        self.ready: queue.SimpleQueue = queue.SimpleQueue()  # marked, waiting for a sender
        self.ready_count = 0
        self.in_flight = 0
        self.marking = 0  # jobs the calling thread is marking now
        self.done: list[Job] = []
        self.cond = threading.Condition()
        self.threads: list[threading.Thread] = []
        self.active = 0
        self.first_done_at: float | None = None
        self.finished_total = 0
        self.began = time.monotonic()
        self.next_renew = self.began + hooks.renew_every

    def stopping(self) -> bool:
        return self.stop.is_set() or self.halt.is_set()

    # Sender threads -----------------------------------------------------------------------

    def _take(self) -> Job | None:
        """The next marked job, waiting while the calling thread marks more; None when this
        thread should end (stopping, surplus, or nothing left to hand out)."""
        with self.cond:
            while not (
                self.stopping()
                or self.active > self.concurrency.target
                or time.monotonic() > self.start_until
            ):
                if self.ready_count:
                    self.ready_count -= 1
                    self.in_flight += 1
                    if self.ready_count < self.concurrency.target:
                        self.cond.notify_all()  # time to hand out the next window
                    return self.ready.get_nowait()
                if not (self.pending or self.marking):
                    break
                self.cond.wait(CONTROL_GAP)
            self.active -= 1
            self.cond.notify_all()
            return None

    def _finish(self, job: Job, pushed_back: str | None, *, sent: bool = True) -> None:
        with self.cond:
            self.in_flight -= 1
            if not sent:
                # The send raised past message_send (a bug): its outcome is unknown, so it keeps
                # its lease and recovery takes it over, flagged as a possible duplicate.
                self.cond.notify_all()
                return
            self.done.append(job)
            self.finished_total += 1
            self.concurrency.answered(pushed_back)
            if self.first_done_at is None:
                self.first_done_at = time.monotonic()
                self.cond.notify_all()  # the calling thread records within FLUSH_GAP
            elif self.in_flight == 0 and not self.ready_count:
                self.cond.notify_all()  # the round may be over

    def _sender(self) -> None:
        connection = _open_connection()
        try:
            while (job := self._take()) is not None:
                try:
                    pushed_back = self.hooks.send(connection, job)
                except BaseException:
                    self._finish(job, None, sent=False)
                    raise
                self._finish(job, pushed_back)
        except BaseException:  # send() never raises; this is a bug, and the lease makes it safe
            logger.exception("send thread failed")
            with self.cond:
                self.active -= 1
                self.cond.notify_all()
        finally:
            connection.close()
            connections.close_all()  # this thread's own database connections, if any were opened

    def _start_senders(self) -> None:
        with self.cond:
            if self._closed():
                return  # a thread started now would take nothing
            wanted = min(self.concurrency.target, self.ready_count + self.in_flight)
            while self.active < wanted:
                self.active += 1
                thread = threading.Thread(
                    target=self._sender, name=f"mailservice-send-{len(self.threads)}", daemon=True
                )
                self.threads.append(thread)
                thread.start()

    # The calling thread -------------------------------------------------------------------

    def _closed(self) -> bool:
        """No send may start any more (stopping, or past the round's start limit). Under the lock."""
        return self.stopping() or time.monotonic() > self.start_until

    def _hand_out_need(self) -> int:
        """How many more jobs to mark now: enough for the senders in flight and HAND_OUT_AHEAD
        seconds of the recent rate (at most HAND_OUT_MAX_AHEAD, so a worker killed meanwhile
        leaves little marked and unsent). Under the lock."""
        if self._closed() or not self.pending:
            return 0
        elapsed = time.monotonic() - self.began
        rate = self.finished_total / elapsed if elapsed > 0.05 else self.concurrency.rate
        ahead = min(max(HAND_OUT_MIN_AHEAD, int(rate * HAND_OUT_AHEAD)), HAND_OUT_MAX_AHEAD)
        return min(self.concurrency.target + ahead - self.ready_count - self.in_flight, len(self.pending))

    def _hand_out(self) -> None:
        """Mark the next window of jobs as started and put them within the senders' reach."""
        with self.cond:
            need = self._hand_out_need()
            if need <= 0:
                return
            chunk = [self.pending.popleft() for _ in range(need)]
            self.marking = len(chunk)
        try:
            held = with_db_retry(lambda: self.hooks.mark(chunk), patience=self.patience, what="hand-out")
        except BaseException:
            with self.cond:
                self.pending.extendleft(reversed(chunk))
                self.marking = 0
            raise
        with self.cond:
            for job in held:
                self.ready.put(job)
            self.ready_count += len(held)
            self.marking = 0
            self.cond.notify_all()

    def _give_back(self) -> None:
        """Once no send may start, release what was never handed to a sender at once, rather
        than holding it behind the slowest send in flight."""
        with self.cond:
            if not self._closed() or not (self.pending or self.ready_count):
                return
            unsent = self._take_unsent()
        with_db_retry(lambda: self.hooks.release(unsent), patience=self.patience, what="release")

    def _take_unsent(self) -> list[Job]:
        """Remove and return every job not handed to a sender. Under the lock."""
        unsent = list(self.pending)
        self.pending.clear()
        while self.ready_count:
            unsent.append(self.ready.get_nowait())
            self.ready_count -= 1
        return unsent

    def _record(self, *, final: bool = False) -> None:
        with self.cond:
            last = not self.in_flight and (self._closed() or not (self.ready_count or self.pending))
            due = self.done and (final or last or time.monotonic() - (self.first_done_at or 0) >= FLUSH_GAP)
            if not due:
                return
            finished, self.done, self.first_done_at = self.done, [], None
        try:
            with_db_retry(lambda: self.hooks.record(finished), patience=self.patience, what="record")
        except BaseException:
            with self.cond:
                self.done[:0] = finished  # recorded by the next try, or left to the lease
            raise

    def _renew_if_due(self) -> None:
        if time.monotonic() >= self.next_renew:
            with_db_retry(self.hooks.renew, patience=self.patience, what="lease renewal")
            self.next_renew = time.monotonic() + self.hooks.renew_every

    def _wait(self) -> None:
        with self.cond:
            now = time.monotonic()
            if self.done:
                timeout = FLUSH_GAP - (now - (self.first_done_at or now))
                if not self.in_flight and (self._closed() or not (self.ready_count or self.pending)):
                    timeout = 0  # the round's last sends: record them now
            else:
                timeout = CONTROL_GAP
            timeout = min(timeout, self.next_renew - now)
            if timeout > 0 and self._hand_out_need() <= 0:
                self.cond.wait(timeout)

    def _finished(self) -> bool:
        with self.cond:
            if self.in_flight or self.done:
                return False
            return self._closed() or (self.ready_count == 0 and not self.pending)

    def run(self) -> None:
        """Send and record until every job is done, or no more may start (stop, or the round's
        time is up). Raises what interrupted it, after the sends in flight ended and were
        recorded; the leases are renewed meanwhile, however long those sends take."""
        self.next_renew = time.monotonic() + self.hooks.renew_every
        try:
            while not self._finished():
                self._hand_out()
                self._start_senders()
                self._wait()
                self._record()
                self._give_back()
                self._renew_if_due()
                with self.cond:
                    waiting = self.ready_count > 0 or bool(self.pending)
                    saturated = self.active >= self.concurrency.target and waiting
                self.concurrency.adjust(finished=self.finished_total, saturated=saturated)
        finally:
            elapsed = time.monotonic() - self.began
            if self.finished_total and elapsed > 0.05:
                self.concurrency.rate = self.finished_total / elapsed
            self.halt.set()  # start nothing more; let the sends in flight end
            with self.cond:
                self.cond.notify_all()
            try:
                _join(self.threads, self.halt, tick=self._renew_quietly)
            finally:
                self._record(final=True)

    def _renew_quietly(self) -> None:
        """Renew while the sends in flight end after an error: a failure here changes nothing
        of what is being raised, and the leases then run out as for a dead worker."""
        try:
            self._renew_if_due()
        except Exception:
            logger.exception("lease renewal failed while the round ends")

    def unsent(self) -> list[Job]:
        """The jobs never handed to a sender (marked or not) and not given back yet: the caller
        releases them."""
        with self.cond:
            return self._take_unsent()


def _join(threads: list[threading.Thread], stop: threading.Event, *, tick: Callable[[], None]) -> None:
    """Wait for every send thread, calling `tick` (lease renewal) every CONTROL_GAP meanwhile,
    even through a signal that arrives (it stops new sends and is raised once all have ended):
    the caller then knows exactly which messages were handed to a provider, and releases only
    the others."""
    interrupted: BaseException | None = None
    for thread in threads:
        while thread.is_alive():
            try:
                thread.join(CONTROL_GAP)
                tick()
            except BaseException as error:  # noqa: B036 - re-raised below, after the threads end
                stop.set()
                interrupted = interrupted or error
    if interrupted is not None:
        raise interrupted
