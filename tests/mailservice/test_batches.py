"""Batched rounds: one claim for many messages, bulk records, concurrent sends, releasing what was
never sent, and the coalesced wake-ups that start rounds (docs/delivery.md)."""

from __future__ import annotations

import threading
import time
from unittest import mock

from django.core import mail
from django.core.cache import cache
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend
from django.db import connection
from django.test import SimpleTestCase, TestCase, TransactionTestCase, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from mailservice.models import DeliveryAttempt, Message
from mailservice.models.bulk import update_rows
from mailservice.services import delivery as delivery_service
from mailservice.services.concurrency import Concurrency
from mailservice.services.delivery import messages_deliver
from mailservice.services.recovery import message_recover
from mailservice.tasks import WAKE_KEY, deliver_due, wake_delivery
from tests.mailservice.helpers import T0, gateway_settings, later
from tests.mailservice.test_delivery import DeliveryMixin

SLOW = "tests.mailservice.test_batches.SlowBackend"


class SlowBackend(LocmemBackend):
    """A provider that takes a while per message and counts what it has in flight."""

    delay = 0.05
    lock = threading.Lock()
    in_flight = 0
    most_in_flight = 0
    opened = 0
    hook = None  # called with each message before it is "sent"

    def open(self):
        with SlowBackend.lock:
            SlowBackend.opened += 1
        return super().open()

    def send_messages(self, messages):
        with SlowBackend.lock:
            SlowBackend.in_flight += 1
            SlowBackend.most_in_flight = max(SlowBackend.most_in_flight, SlowBackend.in_flight)
        try:
            if SlowBackend.hook:
                SlowBackend.hook(messages)
            time.sleep(self.delay)
            return super().send_messages(messages)
        finally:
            with SlowBackend.lock:
                SlowBackend.in_flight -= 1

    @classmethod
    def reset(cls):
        cls.in_flight = cls.most_in_flight = cls.opened = 0
        cls.hook = None


def submit_many(case, count):
    return [case.submit(text=f"message {n}") for n in range(count)]


@gateway_settings(MAILSERVICE_SEND_CONCURRENCY=1)
class BatchTests(DeliveryMixin, TestCase):
    def deliver_recording_with(self, record, *, logger="mailservice.services.delivery", level="ERROR"):
        """One round with `record` in place of update_rows (the bulk record of its outcomes),
        logging to `logger` at `level` or above; what it logged."""
        with (
            mock.patch.object(delivery_service, "update_rows", side_effect=record),
            self.assertLogs(logger, level) as captured,
        ):
            messages_deliver(now=T0)
        return captured

    def test_one_round_claims_up_to_the_batch_size_oldest_first(self):
        """A round takes at most MAILSERVICE_BATCH_SIZE messages, the longest due first."""
        ids = submit_many(self, 5)
        for n, pk in enumerate(ids):
            Message.objects.filter(pk=pk).update(next_attempt_at=later(-n))
        batch = messages_deliver(now=T0, limit=3)
        self.assertEqual([m.pk for m in batch], list(reversed(ids))[:3])
        self.assertEqual(
            sorted(Message.objects.values_list("status", flat=True)), ["queued"] * 2 + ["sent"] * 3
        )
        self.assertEqual(len(mail.outbox), 3)

    def test_statements_per_round_do_not_grow_with_its_size(self):
        """Claiming, suppressing, handing out, recording and late linking are shared by the
        messages of a round: with one hand-out and one record, 2 messages or 20 cost the same."""
        from mailservice.services import dispatch

        counts = []
        with (
            mock.patch.object(dispatch, "FLUSH_GAP", 60),
            mock.patch.object(dispatch, "HAND_OUT_MAX_AHEAD", 1000),
            mock.patch.object(dispatch, "HAND_OUT_MIN_AHEAD", 1000),
        ):
            for size in (2, 20):
                submit_many(self, size)
                with CaptureQueriesContext(connection) as queries:
                    self.assertEqual(len(messages_deliver(now=T0, limit=size)), size)
                counts.append(len(queries))
        self.assertEqual(counts[0], counts[1], "statements per round")
        self.assertLessEqual(counts[1], 20)

    def test_each_message_keeps_its_own_outcome(self):
        """One batch mixes outcomes: sent, suppressed and refused messages each end as their own."""
        from mailservice.services.suppressions import suppression_add

        suppression_add(address="blocked@example.com")
        sent = self.submit(to="jane@example.com")
        suppressed = self.submit(to="blocked@example.com")
        partly = self.submit(to=["blocked@example.com", "joe@example.com"])
        messages_deliver(now=T0)
        status = dict(Message.objects.values_list("pk", "status"))
        self.assertEqual((status[sent], status[suppressed], status[partly]), ("sent", "suppressed", "sent"))
        self.assertEqual(
            sorted(Message.objects.get(pk=partly).recipients.values_list("email", "status")),
            [("blocked@example.com", "suppressed"), ("joe@example.com", "sent")],
        )
        self.assertEqual(DeliveryAttempt.objects.filter(message_id=suppressed).count(), 0)

    def test_a_refused_batch_record_falls_back_to_one_message_at_a_time(self):
        """A database that refuses the batch's record (a value, a deadlock) does not leave it
        leased, to be sent again: each message is recorded on its own."""
        from django.db import DataError

        submit_many(self, 3)
        calls = []

        def fails_once(objs, fields):
            calls.append(len(objs))
            if len(calls) == 1:
                raise DataError("value too long")
            return update_rows(objs, fields)

        self.deliver_recording_with(fails_once)
        self.assertEqual(
            list(Message.objects.values_list("status", "lease_owner").distinct()), [("sent", "")]
        )
        self.assertEqual(len(mail.outbox), 3)

    def test_a_database_that_cannot_be_reached_is_waited_for_not_abandoned(self):
        """A record that fails because the database is restarting is retried with backoff: every
        message ends recorded, none is left to its lease."""
        from django.db import OperationalError

        submit_many(self, 3)
        calls = []

        def unreachable_twice(objs, fields):
            calls.append(len(objs))
            if len(calls) <= 2:
                raise OperationalError("server closed the connection unexpectedly")
            return update_rows(objs, fields)

        logs = self.deliver_recording_with(
            unreachable_twice, logger="mailservice.services.dispatch", level="WARNING"
        )
        self.assertEqual(
            list(Message.objects.values_list("status", "lease_owner").distinct()), [("sent", "")]
        )
        self.assertEqual(len(mail.outbox), 3)
        self.assertIn("database back", "\n".join(logs.output))

    def test_a_retry_after_a_partial_fallback_records_each_attempt_once(self):
        """The batch is refused, the fallback records the first message, then the database goes
        away: the retry records the rest and never the first one again."""
        from django.db import DataError, OperationalError

        submit_many(self, 3)
        calls = []

        def refused_then_unreachable(objs, fields):
            calls.append(len(objs))
            if len(calls) == 1:
                raise DataError("value too long")  # the whole batch (recipients)
            if len(calls) == 4:
                raise OperationalError("server closed the connection unexpectedly")  # 2nd message
            return update_rows(objs, fields)

        self.deliver_recording_with(refused_then_unreachable)
        self.assertEqual(list(Message.objects.values_list("status", flat=True).distinct()), ["sent"])
        self.assertEqual(DeliveryAttempt.objects.count(), 3)

    def test_a_message_that_cannot_be_recorded_keeps_its_lease_and_the_others_are_recorded(self):
        from django.db import DataError

        bad, *good = submit_many(self, 3)

        def refuses_one(objs, fields):
            if any(obj.pk == bad or getattr(obj, "message_id", None) == bad for obj in objs):
                raise DataError("value refused")
            return update_rows(objs, fields)

        self.deliver_recording_with(refuses_one)
        self.assertEqual(Message.objects.get(pk=bad).status, "sending")  # recovery reclaims it, flagged
        self.assertEqual(set(Message.objects.filter(pk__in=good).values_list("status", flat=True)), {"sent"})

    def test_an_error_before_any_send_releases_the_whole_batch(self):
        """Claimed, then the suppression query fails: nothing was sent, so nothing stays leased."""
        from django.db import DataError

        from mailservice.services import delivery

        submit_many(self, 2)
        with (
            mock.patch.object(delivery, "_drop_suppressed", side_effect=DataError("gone")),
            self.assertRaises(DataError),
        ):
            messages_deliver(now=T0)
        self.assertEqual(
            list(Message.objects.values_list("status", "attempt_count").distinct()), [("queued", 0)]
        )
        self.assertEqual(len(mail.outbox), 0)

    def test_claimed_callback_sees_the_batch_before_any_send(self):
        """The task wakes another worker from here, before the batch's sends begin."""
        submit_many(self, 2)
        seen = []
        messages_deliver(now=T0, claimed=lambda batch: seen.append((len(batch), len(mail.outbox))))
        self.assertEqual(seen, [(2, 0)])


@gateway_settings(FIRST_WORKING_EMAIL_BACKENDS=[SLOW], MAILSERVICE_SEND_CONCURRENCY=4)
class ConcurrentSendTests(DeliveryMixin, TransactionTestCase):
    def setUp(self):
        super().setUp()
        SlowBackend.reset()
        delivery_service._controllers.clear()  # each test starts at one send in flight

    def test_sends_run_concurrently_up_to_the_setting(self):
        """Four sends in flight at most, each thread on one connection kept open for its messages."""
        submit_many(self, 12)
        started = time.monotonic()
        batch = messages_deliver(now=T0)
        elapsed = time.monotonic() - started
        self.assertEqual({m.status for m in batch}, {"sent"})
        self.assertEqual(SlowBackend.most_in_flight, 4)
        self.assertEqual(SlowBackend.opened, 4)
        self.assertLess(elapsed, 12 * SlowBackend.delay * 0.75)  # a serial round would take 0.6 s
        self.assertEqual(Message.objects.filter(status="sent", lease_owner="").count(), 12)
        self.assertEqual(DeliveryAttempt.objects.filter(outcome="sent").count(), 12)

    def test_stop_releases_what_was_not_handed_to_a_provider(self):
        """A stopping worker finishes the send in flight and gives the rest back, due at once."""
        ids = submit_many(self, 12)
        stop = threading.Event()
        SlowBackend.hook = lambda messages: stop.set()  # told to stop during the first send
        messages_deliver(now=T0, stop=stop)
        statuses = dict(Message.objects.values_list("pk", "status"))
        self.assertEqual([statuses[pk] for pk in ids].count("sent"), 1)
        released = Message.objects.filter(status="queued")
        self.assertEqual(released.count(), 11)
        self.assertEqual(set(released.values_list("attempt_count", "lease_owner")), {(0, "")})
        self.assertEqual(set(released.values_list("recipients__status", flat=True)), {"queued"})
        SlowBackend.hook = None
        self.assertEqual(len(messages_deliver(now=later(1))), 11)  # claimable again at once

    def test_an_interrupted_worker_records_the_send_in_flight_and_releases_the_rest(self):
        """A signal mid-send (KeyboardInterrupt in the worker's main thread): the send in flight
        ends and is recorded, messages never handed to a provider are released, and the
        interrupt is raised once that is done."""
        import _thread
        import signal

        # The default handler raises KeyboardInterrupt; an earlier test may have left another one.
        self.addCleanup(
            signal.signal, signal.SIGINT, signal.signal(signal.SIGINT, signal.default_int_handler)
        )
        submit_many(self, 3)

        def interrupt(messages):
            if len(mail.outbox) == 1:
                _thread.interrupt_main()

        SlowBackend.hook = interrupt
        with self.settings(MAILSERVICE_SEND_CONCURRENCY=1), self.assertRaises(KeyboardInterrupt):
            messages_deliver(now=T0)
        self.assertEqual(sorted(Message.objects.values_list("status", flat=True)), ["queued", "sent", "sent"])
        self.assertEqual(
            Message.objects.filter(status="queued", send_started_at=None, lease_owner="").count(), 1
        )

    def test_a_send_that_raises_keeps_its_lease_for_recovery_to_flag(self):
        """A send whose outcome is unknown (it raised past the gateway's judgement) is neither
        recorded nor released: its lease expires and the next claim flags it."""
        submit_many(self, 3)

        exploded = []

        def explode(messages):
            if len(mail.outbox) == 1 and not exploded:
                exploded.append(True)
                raise SystemExit("the send thread died")

        SlowBackend.hook = explode
        with (
            self.settings(MAILSERVICE_SEND_CONCURRENCY=1),
            self.assertLogs("mailservice.services.dispatch", "ERROR"),
        ):
            messages_deliver(now=T0)
        statuses = sorted(Message.objects.values_list("status", flat=True))
        self.assertEqual(statuses.count("sending"), 1, statuses)
        SlowBackend.hook = None
        reclaimed = messages_deliver(now=later(301))
        self.assertEqual([m.possible_duplicate for m in reclaimed], [True])

    def test_a_slow_provider_does_not_keep_the_worker_busy(self):
        """While sends wait on a slow provider, the round's own thread sleeps: the process uses
        a small share of a core, and the sends in flight grow to the ceiling."""
        SlowBackend.delay = 0.3
        self.addCleanup(setattr, SlowBackend, "delay", 0.05)
        submit_many(self, 24)
        wall, cpu = time.monotonic(), time.process_time()
        with self.settings(MAILSERVICE_SEND_CONCURRENCY=8):
            messages_deliver(now=T0)
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        self.assertEqual(Message.objects.filter(status="sent").count(), 24)
        self.assertLess(cpu / wall, 0.5, f"{cpu:.2f} s of CPU in {wall:.2f} s")
        self.assertEqual(SlowBackend.most_in_flight, 8)

    def test_messages_left_when_no_send_may_start_are_given_back_at_once(self):
        """Past half the lease, what was never handed out is released while a slow send is
        still in flight, not held behind it."""
        ids = submit_many(self, 6)
        release = threading.Event()
        seen = []

        def hang_first(messages):
            if not seen:
                seen.append(True)
                release.wait(5)

        SlowBackend.hook = hang_first
        released = []

        def watch():
            time.sleep(0.6)
            released.append(Message.objects.filter(pk__in=ids, status="queued").count())
            release.set()

        watcher = threading.Thread(target=watch)
        watcher.start()
        with self.settings(MAILSERVICE_SEND_CONCURRENCY=1, MAILSERVICE_LEASE_SECONDS=0.4):
            messages_deliver(now=T0)
        watcher.join()
        self.assertEqual(released, [5])  # released at 0.2 s, while the first send still hung
        self.assertEqual(Message.objects.filter(status="sent").count(), 1)

    def test_messages_not_started_in_half_the_lease_are_released(self):
        """A batch slower than half its lease starts no more sends; the rest are claimed again."""
        submit_many(self, 20)
        with self.settings(MAILSERVICE_SEND_CONCURRENCY=1, MAILSERVICE_LEASE_SECONDS=1.0):
            messages_deliver(now=T0)  # 0.5 s to start sends of 0.05 s each, one at a time
        self.assertGreaterEqual(Message.objects.filter(status="sent").count(), 1)
        self.assertGreaterEqual(Message.objects.filter(status="queued", attempt_count=0).count(), 5)
        self.assertEqual(Message.objects.filter(status="sending").count(), 0)


class FakeTime:
    """A clock and a CPU-time counter the test moves by hand."""

    def __init__(self):
        self.now = 100.0
        self.cpu = 0.0

    def spend(self, wall: float, cpu: float) -> None:
        self.now += wall
        self.cpu += cpu


class DatabaseRetryTests(SimpleTestCase):
    def test_patience_counts_from_the_first_failure_not_from_the_round(self):
        """A database that goes away late in a long round is still waited for, with growing pauses."""
        from django.db import IntegrityError, OperationalError

        from mailservice.services.dispatch import with_db_retry

        clock = FakeTime()
        clock.now = 10_000.0  # long after any round began
        failures = [OperationalError("server closed the connection unexpectedly")] * 4
        pauses = []

        def action():
            if failures:
                raise failures.pop()
            return "recorded"

        def sleep(seconds):
            pauses.append(seconds)
            clock.now += seconds

        with self.assertLogs("mailservice.services.dispatch", "WARNING"):
            result = with_db_retry(action, patience=15, what="record", clock=lambda: clock.now, sleep=sleep)
        self.assertEqual(result, "recorded")
        self.assertEqual(pauses, [0.05, 0.1, 0.2, 0.4])
        with self.assertRaises(IntegrityError):  # a refusal is not waited for
            with_db_retry(lambda: (_ for _ in ()).throw(IntegrityError("dup")), patience=15, what="record")

    def test_an_outage_longer_than_the_patience_is_raised(self):
        """Past its patience the round gives up, and its leases expire to be taken over."""
        from django.db import OperationalError

        from mailservice.services.dispatch import with_db_retry

        clock = FakeTime()

        def down():
            raise OperationalError("connection refused")

        def sleep(seconds):
            clock.now += seconds

        with self.assertRaises(OperationalError), self.assertLogs("mailservice.services.dispatch", "WARNING"):
            with_db_retry(down, patience=3, what="renewal", clock=lambda: clock.now, sleep=sleep)
        self.assertLessEqual(clock.now - 100.0, 3)


class ConcurrencyTests(SimpleTestCase):
    def controller(self, ceiling=32):
        self.time = FakeTime()
        self.finished = 0
        control = Concurrency(ceiling, clock=lambda: self.time.now, cpu=lambda: self.time.cpu)
        control.adjust(finished=0, saturated=True)  # the first look opens a window
        return control

    def step(self, control, *, sends: int, cpu: float, wall: float = 0.2, saturated: bool = True) -> int:
        self.time.spend(wall, cpu)
        self.finished += sends
        return control.adjust(finished=self.finished, saturated=saturated)

    def test_sends_that_mostly_wait_grow_to_the_ceiling(self):
        """A 200 ms provider leaves the CPU idle: the sends in flight double up to the ceiling."""
        control = self.controller(ceiling=16)
        targets = [self.step(control, sends=10, cpu=0.01) for _ in range(6)]
        self.assertEqual(targets, [2, 4, 8, 16, 16, 16])

    def test_near_a_full_core_it_climbs_while_that_sends_more_and_turns_back(self):
        """At loopback speed: one more thread while the rate rises, back when it falls."""
        control = self.controller()
        self.assertEqual(self.step(control, sends=100, cpu=0.19), 2)  # first measure: try one more
        self.assertEqual(self.step(control, sends=130, cpu=0.19), 3)  # better: again
        self.assertEqual(self.step(control, sends=110, cpu=0.19), 2)  # worse: back
        self.assertEqual(self.step(control, sends=111, cpu=0.19), 2)  # the same: stay

    def test_a_429_halves_once_per_second(self):
        """A request to slow down halves the target, at most once a second; growth waits a second."""
        from mailservice.services.concurrency import THROTTLED

        control = self.controller()
        control.target = 16
        control.answered(THROTTLED)
        self.assertEqual(self.step(control, sends=10, cpu=0.01), 8)
        control.answered(THROTTLED)
        self.assertEqual(self.step(control, sends=10, cpu=0.01), 8)
        self.assertEqual(self.step(control, sends=10, cpu=0.01, wall=1.0), 16)

    def test_a_provider_failing_a_few_sends_is_no_reason_to_slow_down(self):
        """10 % of 5xx (the next provider takes those) keeps the target; a large share halves it."""
        from mailservice.services.concurrency import FAILING

        control = self.controller()
        control.target = 16
        for n in range(20):
            control.answered(FAILING if n % 10 == 0 else None)
        self.assertEqual(self.step(control, sends=20, cpu=0.01), 32)
        for n in range(20):
            control.answered(FAILING if n % 2 == 0 else None)
        self.assertEqual(self.step(control, sends=20, cpu=0.01), 16)

    def test_no_judgement_without_work_waiting(self):
        """Idle senders say nothing about the provider: the target stays."""
        control = self.controller()
        self.assertEqual(self.step(control, sends=0, cpu=0.0, saturated=False), 1)
        self.assertEqual(self.step(control, sends=0, cpu=0.0, saturated=False), 1)


@gateway_settings(MAILSERVICE_BATCH_SIZE=2, MAILSERVICE_SEND_CONCURRENCY=1)
class WakeUpTests(DeliveryMixin, TestCase):
    def setUp(self):
        super().setUp()
        DBTaskResult.objects.all().delete()
        cache.clear()

    def wakes(self):
        return list(DBTaskResult.objects.order_by("enqueued_at").values_list("task_path", "run_after"))

    def test_a_full_batch_wakes_another_round_before_sending(self):
        """Idle workers join in: a full batch leaves one more wake-up; a partial one does not."""
        for _ in range(3):
            self.post_message({"to": "jane@example.com", "text": "x"})
        DBTaskResult.objects.all().delete()
        cache.clear()
        self.assertEqual(deliver_due.call(), {"sent": 2})
        self.assertEqual(len(self.wakes()), 1)
        cache.clear()  # the woken task starts: its wake-up is no longer pending
        DBTaskResult.objects.all().delete()
        self.assertEqual(deliver_due.call(), {"sent": 1})
        self.assertEqual(self.wakes(), [])

    # T0 lies years ahead of the real clock, past the scheduling horizon.
    @override_settings(MAILSERVICE_MAX_SCHEDULE_DAYS=0)
    def test_a_round_leaves_the_next_due_message_scheduled(self):
        """After a partial batch, the next wake-up is due with the earliest waiting message."""
        send_at = later(86400 * 3650)  # years ahead of the real clock
        self.post_message({"to": "jane@example.com", "text": "x", "send_at": send_at.isoformat()})
        DBTaskResult.objects.all().delete()
        cache.clear()
        self.assertEqual(deliver_due.call(), {})
        [(path, run_after)] = self.wakes()
        self.assertEqual(path, "mailservice.tasks.deliver_due")
        self.assertEqual(run_after, send_at)

    def test_a_full_batch_also_schedules_its_own_retries(self):
        """The round a full batch woke may end first: the full one schedules what it deferred."""
        for _ in range(2):
            self.post_message({"to": "jane@example.com", "text": "x"})
        DBTaskResult.objects.all().delete()
        cache.clear()
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[]):  # no provider: deferred
            self.assertEqual(deliver_due.call(), {"deferred": 2})
        retry = Message.objects.order_by("next_attempt_at").first().next_attempt_at
        at_retry = [
            run_after for _, run_after in self.wakes() if abs((run_after - retry).total_seconds()) < 1
        ]
        self.assertEqual(len(at_retry), 1, self.wakes())

    def test_pending_wake_up_coalesces_until_its_task_starts(self):
        """While a wake-up is pending, more wake-ups enqueue nothing; once it starts, one does."""
        self.assertTrue(wake_delivery())
        self.assertFalse(wake_delivery())
        deliver_due.call()  # starting clears the pending mark
        self.assertTrue(wake_delivery())
        self.assertEqual(len(self.wakes()), 2)

    def test_recovery_wakes_even_when_a_lost_wake_up_looks_pending(self):
        """A task lost after its wake-up was marked pending does not hold recovery back."""
        message_id = self.submit()
        Message.objects.filter(pk=message_id).update(enqueued_at=T0)
        self.assertTrue(wake_delivery())
        DBTaskResult.objects.all().delete()  # ...and the task is lost
        with self.captureOnCommitCallbacks(execute=True):
            self.assertEqual(message_recover(now=later(600)), 1)
        self.assertEqual(len(self.wakes()), 1)

    def test_a_failed_enqueue_is_not_left_pending(self):
        """When the queue refuses the task, the next accept tries again instead of waiting."""
        with mock.patch.object(type(deliver_due), "enqueue", side_effect=RuntimeError("queue down")):
            with self.assertLogs("mailservice.tasks", "WARNING"):
                self.assertFalse(wake_delivery())
        self.assertIsNone(cache.get(WAKE_KEY))
        self.assertTrue(wake_delivery())

    def test_a_wake_up_the_queue_refused_is_retried_until_it_takes_it(self):
        """During a queue outage the process owes a wake-up and pays it once the queue is back."""
        from mailservice import tasks

        refusals = [RuntimeError("queue down"), RuntimeError("still down")]
        real_enqueue = type(deliver_due).enqueue

        def flaky(task, *args, **kwargs):
            if refusals:
                raise refusals.pop(0)
            return real_enqueue(task, *args, **kwargs)

        pauses = []
        with (
            mock.patch.object(type(deliver_due), "enqueue", flaky),
            mock.patch.object(tasks, "_retrier", object()),
        ):  # no background thread in this test
            with self.assertLogs("mailservice.tasks", "WARNING"):
                self.assertFalse(wake_delivery())
            with self.assertLogs("mailservice.tasks", "WARNING") as logs:
                tasks._pay_owed_wake_ups(sleep=pauses.append)
        self.assertEqual(len(self.wakes()), 1)
        self.assertEqual(pauses, [0.5, 1.0, 1.0])  # refused, taken, then nothing owed
        self.assertIn("queue is back", "\n".join(logs.output))

    def test_a_round_waits_a_while_for_a_wake_up_it_owes(self):
        """A work horse exits after its round: it pays an owed wake-up first, for a bounded time."""
        from mailservice import tasks

        with mock.patch.object(tasks, "_retrier", object()):  # no background thread in this test
            tasks._owed.set()
            started = time.monotonic()
            self.assertFalse(tasks.settle_owed_wake_up(timeout=0.2))
            self.assertGreaterEqual(time.monotonic() - started, 0.2)
            tasks._owed.clear()
            self.assertTrue(tasks.settle_owed_wake_up(timeout=5))

    def test_a_round_wakes_one_for_the_earliest_lease_to_expire(self):
        """Messages held by a worker that died are taken over when their lease expires: the
        last round leaves a wake-up for then."""
        from mailservice.services.claiming import messages_claim

        message_id = self.submit()
        Message.objects.filter(pk=message_id).update(next_attempt_at=timezone.now())
        self.assertEqual(len(messages_claim(owner="dead", now=timezone.now(), limit=1)), 1)
        DBTaskResult.objects.all().delete()
        cache.clear()
        self.assertEqual(deliver_due.call(), {})
        [(path, run_after)] = self.wakes()
        expires = Message.objects.get(pk=message_id).lease_expires_at
        self.assertLess(abs((run_after - expires).total_seconds()), 1)

    def test_an_outage_is_one_warning_not_one_per_accept(self):
        """Accepts meeting a cache outage log one WARNING when it goes and one when it is back."""
        from mailservice import tasks

        with (
            mock.patch.object(tasks, "_retrier", object()),
            self.assertLogs("mailservice.tasks", "DEBUG") as logs,
        ):
            with mock.patch.object(cache, "add", side_effect=ConnectionError("cache down")):
                for _ in range(5):
                    tasks._already_pending("key", 10, force=False)
            tasks._already_pending("key", 10, force=False)
        warnings = [record.getMessage() for record in logs.records if record.levelname == "WARNING"]
        self.assertEqual(len(warnings), 2, warnings)
        self.assertIn("cache is out of reach", warnings[0])
        self.assertIn("cache is back", warnings[1])

    def test_a_failing_cache_still_wakes(self):
        """The cache only coalesces: when it fails, the wake-up is enqueued anyway."""
        with mock.patch.object(cache, "add", side_effect=ConnectionError("cache down")):
            with self.assertLogs("mailservice.tasks", "WARNING"):
                self.assertTrue(wake_delivery())
        self.assertEqual(len(self.wakes()), 1)

    def test_a_queued_single_message_task_still_delivers(self):
        """A `deliver_message` task row waiting in the queue still sends its message."""
        from mailservice.tasks import deliver_message

        message_id = self.post_message({"to": "jane@example.com", "text": "x"}).json()["id"]  # due now
        self.assertEqual(deliver_message.call(message_id), "sent")
        self.assertIsNone(deliver_message.call(message_id))  # delivered: nothing to claim
