"""Leases and recovery: a worker that dies after claiming, a lost task, two workers racing."""

from datetime import timedelta
from io import StringIO

from django.core import mail
from django.core.management import call_command
from django.test import TestCase, TransactionTestCase, override_settings
from django.utils import timezone

from mailservice.models import Message
from mailservice.services.claiming import messages_claim, messages_mark_started, messages_renew
from mailservice.services.delivery import message_deliver
from mailservice.services.recovery import message_recover
from tests.mailservice.helpers import T0, GatewayMixin, gateway_settings, later
from tests.mailservice.test_delivery import DeliveryMixin

try:
    from django_tasks_db.models import DBTaskResult
except ImportError:  # pragma: no cover
    DBTaskResult = None


def message_claim(*, message_id, owner, now):
    """One message's claim, as a worker's batch of one would take it; None when not claimable."""
    claimed = messages_claim(owner=owner, now=now, limit=1, message_id=message_id)
    return claimed[0] if claimed else None


@gateway_settings(
    MAILSERVICE_LEASE_SECONDS=300, MAILSERVICE_LEASE_RENEW_SECONDS=5, MAILSERVICE_RECOVERY_GRACE=120
)
class LeaseTests(DeliveryMixin, TestCase):
    """A claim holds a message for six renewal periods (30 s here) unless its worker renews it."""

    def test_claim_is_exclusive(self):
        """While one worker holds the lease, another cannot claim the message."""
        message_id = self.submit()
        self.assertIsNotNone(message_claim(message_id=message_id, owner="w1", now=T0))
        self.assertIsNone(message_claim(message_id=message_id, owner="w2", now=later(29)))
        self.assertIsNone(message_deliver(message_id=message_id, worker="w2", now=later(10)))
        self.assertEqual(len(mail.outbox), 0)

    def test_claim_sets_sending_and_lease(self):
        """A claim marks the message and its recipients `sending` with a short lease."""
        message = message_claim(message_id=self.submit(), owner="w1", now=T0)
        self.assertEqual(
            (message.status, message.lease_owner, message.lease_expires_at), ("sending", "w1", later(30))
        )
        self.assertEqual(list(message.recipients.values_list("status", flat=True)), ["sending"])

    def test_a_living_worker_renews_its_leases(self):
        """Renewal moves the lease on; another worker's or a released message is left alone."""
        mine, other = self.submit(), self.submit()
        message_claim(message_id=mine, owner="w1", now=T0)
        message_claim(message_id=other, owner="w2", now=T0)
        self.assertEqual(messages_renew([mine, other], owner="w1", now=later(10)), 1)
        self.assertEqual(Message.objects.get(pk=mine).lease_expires_at, later(40))
        self.assertEqual(Message.objects.get(pk=other).lease_expires_at, later(30))

    def test_worker_dying_after_claim_is_recovered_and_delivered_once(self):
        """A claim whose worker died before sending is re-enqueued by recovery once its short
        lease expires, then sent once, unflagged: that round never counted."""
        message_id = self.submit()
        message_claim(message_id=message_id, owner="dead-worker", now=T0)  # ...and the worker dies
        self.assertEqual(message_recover(now=later(29)), 0)  # lease still running
        DBTaskResult.objects.all().delete()
        with self.captureOnCommitCallbacks(execute=True):
            self.assertEqual(message_recover(now=later(30)), 1)
        task = DBTaskResult.objects.get()
        self.assertEqual((task.task_path, task.args_kwargs["args"]), ("mailservice.tasks.deliver_due", []))
        message = message_deliver(message_id=message_id, worker="new-worker", now=later(31))
        self.assertEqual(
            (message.status, message.attempt_count, message.possible_duplicate), ("sent", 1, False)
        )
        self.assertFalse(message.attempts.filter(outcome="ambiguous").exists())
        self.assertEqual(len(mail.outbox), 1)
        self.assertIsNone(message_deliver(message_id=message_id, now=later(900)))
        self.assertEqual(len(mail.outbox), 1)

    def test_reclaim_after_a_dead_worker_started_sending_flags_possible_duplicate(self):
        """Handed to its senders, then the worker died: it may have been sent, so the reclaim
        records an ambiguous attempt and flags it."""
        message_id = self.submit()
        message_claim(message_id=message_id, owner="dead-worker", now=T0)
        self.assertEqual(messages_mark_started([message_id], owner="dead-worker", now=later(1)), {message_id})
        message = message_deliver(message_id=message_id, worker="new-worker", now=later(32))
        self.assertTrue(message.possible_duplicate)
        self.assertEqual(message.attempts.filter(outcome="ambiguous", round=1).count(), 1)

    def test_a_lost_lease_is_not_handed_out(self):
        """A worker that lost its lease to another may not mark (and so send) the message."""
        message_id = self.submit()
        message_claim(message_id=message_id, owner="slow", now=T0)
        message_claim(message_id=message_id, owner="fast", now=later(31))
        self.assertEqual(messages_mark_started([message_id], owner="slow", now=later(32)), set())

    def test_worker_that_lost_its_lease_does_not_overwrite_the_outcome(self):
        """A worker finishing after its lease was taken over records attempts but not its outcome."""
        from mailservice.services.delivery import _finish, _SendJob
        from mailservice.services.sending import SendResult
        from mailservice.statuses import RecipientStatus

        message_id = self.submit()
        slow = message_claim(message_id=message_id, owner="slow", now=T0)
        message_deliver(message_id=message_id, worker="fast", now=later(301))
        result = SendResult(RecipientStatus.DEFERRED, error="late")
        late = _SendJob(slow, list(slow.recipients_loaded), started=True, result=result)
        _finish([late], "slow", now=later(302))
        message = Message.objects.get(pk=message_id)
        self.assertEqual((message.status, message.last_error), ("sent", ""))


@gateway_settings(MAILSERVICE_RECOVERY_GRACE=120)
class LostTaskTests(DeliveryMixin, TestCase):
    def test_lost_task_is_enqueued_again_after_grace(self):
        """A queued message whose task never ran gets a new task once the grace period passed."""
        message_id = self.submit()
        Message.objects.filter(pk=message_id).update(enqueued_at=T0)
        self.assertEqual(message_recover(now=later(119)), 0)
        self.assertEqual(message_recover(now=later(120)), 1)
        self.assertEqual(Message.objects.get(pk=message_id).enqueued_at, later(120))

    def test_recovery_does_not_pile_up_tasks(self):
        """A recovered message is not enqueued again until another grace period passes."""
        message_id = self.submit()
        Message.objects.filter(pk=message_id).update(enqueued_at=T0)
        message_recover(now=later(120))
        self.assertEqual(message_recover(now=later(200)), 0)
        self.assertEqual(message_recover(now=later(240)), 1)

    # T0 lies years ahead of the real clock, past the scheduling horizon.
    @override_settings(MAILSERVICE_MAX_SCHEDULE_DAYS=0)
    def test_sent_and_future_messages_are_left_alone(self):
        """Recovery ignores finished messages and messages not yet due."""
        sent = self.submit()
        message_deliver(message_id=sent, now=T0)
        self.submit(send_at=later(86400).isoformat())
        self.assertEqual(message_recover(now=later(3600)), 0)

    def test_recover_messages_command_runs_one_pass(self):
        """`manage.py recover_messages` runs a pass and says how many it recovered."""
        message_id = self.submit()
        an_hour_ago = timezone.now() - timedelta(hours=1)
        Message.objects.filter(pk=message_id).update(enqueued_at=an_hour_ago, next_attempt_at=an_hour_ago)
        out = StringIO()
        call_command("recover_messages", stdout=out)
        self.assertIn("Recovered 1 message(s)", out.getvalue())

    @override_settings(MAILSERVICE_RECOVERY_BATCH=1)
    def test_recovery_batch_bounds_one_pass(self):
        """One pass re-enqueues at most MAILSERVICE_RECOVERY_BATCH messages."""
        for _ in range(2):
            Message.objects.filter(pk=self.submit()).update(enqueued_at=T0)
        self.assertEqual(message_recover(now=later(600)), 1)
        self.assertEqual(message_recover(now=later(600)), 1)


@gateway_settings()
class TaskTests(DeliveryMixin, TestCase):
    def test_task_delivers_through_the_service(self):
        """The delivery task, run as the worker runs it, sends the message."""
        from mailservice.tasks import deliver_message

        message_id = self.submit()
        Message.objects.filter(pk=message_id).update(next_attempt_at=timezone.now() - timedelta(minutes=1))
        self.assertEqual(deliver_message.call(str(message_id)), "sent")
        self.assertEqual(len(mail.outbox), 1)


@gateway_settings()
class WorkerProcessTests(GatewayMixin, TransactionTestCase):
    def test_db_worker_runs_the_enqueued_task(self):
        """The embedded queue's worker (`db_worker --batch`) delivers an accepted message."""
        response = self.post_message({"to": "jane@example.com", "subject": "S", "text": "T"})  # autocommit
        call_command(
            "db_worker", "--batch", "--no-startup-delay", "--no-reload", stdout=StringIO(), verbosity=0
        )
        self.assertEqual(Message.objects.get(pk=response.json()["id"]).status, "sent")
        self.assertEqual(len(mail.outbox), 1)
