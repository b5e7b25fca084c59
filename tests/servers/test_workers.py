"""Worker processes on a real PostgreSQL (docs/delivery.md, "Batches and concurrency", "Leases"):
racing workers send each message exactly once (SELECT … FOR UPDATE SKIP LOCKED and the
conditional claim), and a worker SIGKILLed mid-send leaves nothing lost: recovery reclaims its
messages, flagged as possible duplicates, and another worker delivers them."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

from mailservice.models import DeliveryAttempt, Message
from tests.e2e.processes import DB_WORKER, wait_until
from tests.servers.base import ALIAS, RealServersTestCase, json_lines

MESSAGES = 300
BATCH = 20
WORKERS = 4


class WorkersOnPostgresTests(RealServersTestCase):
    needs = ("postgres",)
    provider_per_test = True

    def statuses(self) -> Counter:
        return Counter(Message.objects.using(ALIAS).values_list("status", flat=True))

    def test_racing_workers_send_each_message_exactly_once(self):
        """WORKERS processes loop over MESSAGES messages in batches of BATCH, started together:
        every message is sent, each by exactly one request to the provider, with one attempt."""
        self.provider.delay = 0.01
        self.child("seed", str(MESSAGES), env=self.child_environment())
        go = self.workdir / "go"
        env = self.sending_environment(MAILSERVICE_BATCH_SIZE=str(BATCH), MAILSERVICE_SEND_CONCURRENCY="2")
        workers = [
            self.start_child(f"race-{n}", "deliver", "--go", str(go), "--idle", "1.5", env=env)
            for n in range(WORKERS)
        ]
        time.sleep(0.5)
        go.touch()
        for worker in workers:
            wait_until(lambda w=worker: not w.alive(), timeout=120, what=f"{worker.name} to finish")
            self.assertEqual(worker.popen.returncode, 0, worker.output())
        done = [json_lines(worker)[-1] for worker in workers]

        per_subject = self.provider.per_subject()
        self.assertEqual(len(per_subject), MESSAGES, per_subject)
        duplicates = {subject: n for subject, n in per_subject.items() if n != 1}
        self.assertEqual(duplicates, {}, f"sent more than once: {duplicates}")
        self.assertEqual(self.statuses(), Counter({"sent": MESSAGES}))
        self.assertEqual(sum(result["messages"] for result in done), MESSAGES, done)
        attempts = DeliveryAttempt.objects.using(ALIAS)
        self.assertEqual(attempts.count(), MESSAGES)
        self.assertEqual(set(attempts.values_list("outcome", flat=True)), {"sent"})
        self.assertFalse(Message.objects.using(ALIAS).filter(possible_duplicate=True).exists())
        # The race happened: more than one worker claimed batches.
        self.assertGreater(sum(1 for result in done if result["batches"]), 1, done)
        print(
            f"\n[servers] {MESSAGES} messages, {WORKERS} workers, "
            f"batches each: {[r['batches'] for r in done]}"
        )

    def test_a_worker_killed_mid_send_loses_nothing(self):
        """SIGKILL during the second batch: the first batch stays sent once; the killed batch's
        messages keep their lease until it expires, then `recover_messages` wakes a round, a
        db_worker reclaims them (flagged possible_duplicate, an ambiguous attempt recorded) and
        delivers them; every message ends sent, and only the killed batch's were sent twice."""
        total, batch, lease = 12, 4, 4
        self.provider.delay = 0.4  # a batch of 4, two at a time: 0.8 s
        self.child("seed", str(total), env=self.child_environment())
        env = self.sending_environment(
            MAILSERVICE_BATCH_SIZE=str(batch),
            MAILSERVICE_SEND_CONCURRENCY="2",
            MAILSERVICE_LEASE_SECONDS=str(lease),
        )
        victim = self.start_child("victim", "deliver", "--idle", "30", env=env)
        # Two sends of the second batch have reached the provider: kill it while they wait.
        wait_until(lambda: self.provider.count() >= batch + 2, timeout=60, what="the second batch's sends")
        os.killpg(victim.popen.pid, signal.SIGKILL)
        victim.popen.wait(timeout=10)

        messages = Message.objects.using(ALIAS)
        held = set(messages.filter(status="sending").values_list("subject", flat=True))
        self.assertEqual(len(held), batch, self.statuses())
        self.assertEqual(messages.filter(status="sent").count(), batch)
        self.assertEqual(messages.filter(status="queued").count(), total - 2 * batch)
        in_flight = {s for s, n in self.provider.per_subject().items() if s in held}
        self.assertGreaterEqual(len(in_flight), 2)

        # Nothing recovers it while the lease lasts; once it has expired, a pass wakes a round.
        recover = {"MAILSERVICE_RECOVERY_GRACE": "1", "TASKS_BACKEND": "database"}
        time.sleep(lease + 0.5)
        output = self.manage("recover_messages", env=self.sending_environment(**recover))
        self.assertIn("Recovered", output)
        worker = self.start_process(
            "db_worker", DB_WORKER, env=self.sending_environment(**recover, MAILSERVICE_BATCH_SIZE=str(batch))
        )

        def all_sent():
            self.assertTrue(worker.alive(), worker.output())
            return self.statuses() == Counter({"sent": total})

        wait_until(all_sent, timeout=60, what=f"every message sent; now {self.statuses()}")
        flagged = set(messages.filter(possible_duplicate=True).values_list("subject", flat=True))
        self.assertEqual(flagged, held)
        ambiguous = DeliveryAttempt.objects.using(ALIAS).filter(outcome="ambiguous")
        self.assertEqual(set(ambiguous.values_list("message__subject", flat=True)), held)
        per_subject = self.provider.per_subject()
        self.assertEqual(set(per_subject), set(messages.values_list("subject", flat=True)))  # none lost
        for subject, count in per_subject.items():
            # A send the provider got before the kill went out again: that is the flagged duplicate.
            expected = 2 if subject in in_flight else 1
            self.assertEqual(count, expected, (subject, per_subject, held, in_flight))
