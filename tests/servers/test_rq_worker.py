"""The RQ worker on real PostgreSQL and Redis (docs/deployment.md): a message accepted with
TASKS_BACKEND=rq is delivered by `rqworker`, and SIGTERM to a busy worker (what systemd sends
its main process with KillMode=mixed) finishes the batch in hand before it exits
(docs/delivery.md, "Leases")."""

from __future__ import annotations

import signal
import sys
from collections import Counter

from mailservice.models import Message
from tests.e2e.processes import ROOT, wait_until
from tests.servers.base import ALIAS, RealServersTestCase

MESSAGES = 12


class RqWorkerTests(RealServersTestCase):
    needs = ("postgres", "redis")
    provider_per_test = True

    def statuses(self) -> Counter:
        return Counter(Message.objects.using(ALIAS).values_list("status", flat=True))

    def test_sigterm_lets_a_busy_rq_worker_finish_its_batch(self):
        """Seeded messages wake a round on RQ; the worker claims them all, is told to stop while
        it sends, and still records every one as sent, once, before it exits."""
        self.provider.delay = 0.2  # 12 messages, two at a time: about 1.2 s of sending
        env = self.sending_environment(MAILSERVICE_BATCH_SIZE=str(MESSAGES), MAILSERVICE_SEND_CONCURRENCY="2")
        self.child("seed", str(MESSAGES), env=env)
        worker = self.start_process(
            "rqworker",
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "rqworker",
                "--job-class",
                "django_tasks_rq.Job",
                "default",
            ],
            env=env,
        )

        def claimed():
            self.assertTrue(worker.alive(), worker.output())
            return self.statuses()["sending"] == MESSAGES and self.provider.count() >= 1

        wait_until(claimed, timeout=60, what=f"the worker to claim the batch; now {self.statuses()}")
        worker.popen.send_signal(signal.SIGTERM)  # the main process only, as KillMode=mixed does
        self.assertLess(self.provider.count(), MESSAGES)  # told to stop in the middle of the batch
        wait_until(lambda: not worker.alive(), timeout=60, what="the worker to exit")
        self.assertEqual(self.statuses(), Counter({"sent": MESSAGES}), worker.output())
        self.assertEqual(set(self.provider.per_subject().values()), {1})
        self.assertEqual(len(self.provider.per_subject()), MESSAGES)
