"""Stopping a real `db_worker` in the middle of a batch: SIGTERM finishes the batch in hand; a
second signal stops it at once and gives back what was never handed to a provider
(docs/delivery.md, "Leases")."""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path

from django.test import TransactionTestCase, override_settings

from mailservice.models import Message
from mailservice.schemas import MessageIn
from mailservice.services.messages import message_accept
from mailservice.validation import check_message
from tests.e2e.processes import database_url, start_worker, wait_until

MESSAGES = 24
CONCURRENCY = 2
SEND_SECONDS = 0.1  # a batch takes MESSAGES / CONCURRENCY x this: 1.2 s


@override_settings(TASKS={"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}})
class WorkerSignalTests(TransactionTestCase):
    def setUp(self):
        super().setUp()
        self.workdir = Path(tempfile.mkdtemp(prefix="smtest-signals-"))
        self.addCleanup(shutil.rmtree, self.workdir, True)
        self.sends_log = self.workdir / "sends.log"
        cache = {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(self.workdir / "cache"),
        }
        override = override_settings(CACHES={"default": cache})
        override.enable()
        self.addCleanup(override.disable)
        for n in range(MESSAGES):
            message_accept(
                draft=check_message(MessageIn.model_validate({"to": f"r{n}@example.com", "text": "x"}))
            )
        self.worker = start_worker(
            self.workdir,
            {
                "DJANGO_SETTINGS_MODULE": "smtest.settings",
                "DATABASE_URL": database_url(),
                "CACHE_URL": f"filecache://{self.workdir / 'cache'}",
                "TASKS_BACKEND": "database",
                # DEBUG is off, as in production: a webhook secret and a SECRET_KEY are required.
                "ANYMAIL_WEBHOOK_SECRET": "signals:test",
                "SECRET_KEY": "worker-signals-test-" + "k" * 40,
                "FIRST_WORKING_EMAIL_BACKENDS": "tests.e2e.slow_backend.SlowBackend",
                "SLOW_BACKEND_SECONDS": str(SEND_SECONDS),
                "SLOW_BACKEND_LOG": str(self.sends_log),
                "MAILSERVICE_BATCH_SIZE": str(MESSAGES),
                "MAILSERVICE_SEND_CONCURRENCY": str(CONCURRENCY),
            },
        )
        self.addCleanup(self.worker.stop)

        def claimed():
            self.assertTrue(self.worker.alive(), self.worker.output())
            return Message.objects.filter(status="sending").count() == MESSAGES

        wait_until(claimed, timeout=30, what="the worker to claim the batch")

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for status in Message.objects.values_list("status", flat=True):
            counts[status] = counts.get(status, 0) + 1
        return counts

    def finished_sends(self) -> int:
        return len(self.sends_log.read_text().splitlines()) if self.sends_log.exists() else 0

    def exited(self) -> None:
        wait_until(lambda: not self.worker.alive(), timeout=20, what="the worker to exit")

    def test_sigterm_finishes_the_batch_in_hand(self):
        """The worker sends and records every message it claimed, then exits."""
        self.worker.popen.send_signal(signal.SIGTERM)
        self.exited()
        self.assertEqual(self.statuses(), {"sent": MESSAGES}, self.worker.output())

    def test_second_signal_releases_what_was_not_sent(self):
        """Stopped at once: finished sends are recorded, unstarted ones are queued again at once,
        and only a send cut off in flight keeps its lease (recovery reclaims it, flagged)."""
        self.worker.popen.send_signal(signal.SIGTERM)
        wait_until(lambda: self.finished_sends() >= 2, timeout=10, what="two sends to finish")
        self.worker.popen.send_signal(signal.SIGINT)
        self.exited()
        counts = self.statuses()
        self.assertEqual(sum(counts.values()), MESSAGES)
        self.assertGreaterEqual(counts.get("queued", 0), MESSAGES // 2, (counts, self.worker.output()))
        self.assertGreaterEqual(counts.get("sent", 0), 2, (counts, self.worker.output()))
        self.assertLessEqual(counts.get("sending", 0), CONCURRENCY, (counts, self.worker.output()))
        self.assertFalse(Message.objects.filter(status="queued").exclude(lease_owner="").exists())
