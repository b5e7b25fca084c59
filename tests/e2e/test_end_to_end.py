"""The whole path over real sockets: HTTP API → outbox → worker process → failover backend →
the sandbox's SendGrid, Mailgun and Mandrill APIs → signed webhooks → events and suppressions.

The web server is Django's live test server (in this process); the worker and the sandbox are
real processes sharing its test database and a file cache, stopped however the tests end.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

from django.core.cache import caches
from django.test import LiveServerTestCase, override_settings

from mailservice.services.keys import api_key_create
from sandbox.client import SandboxClient
from sandbox.conf import (
    DEFAULT_API_KEYS,
    DEFAULT_WEBHOOK_KEYS,
    DEFAULT_WEBHOOK_SECRET,
)
from sandbox.providers.sendgrid import DEV_VERIFICATION_KEY as SENDGRID_DEV_VERIFICATION_KEY
from tests.e2e.processes import database_url, start_sandbox, start_worker, wait_until
from tests.failover.base import FAILOVER_BACKEND, sending_through

CHAIN = "sendgrid,mailgun,mandrill"
MEMORY_SECONDS = 5  # FIRST_WORKING_EMAIL_CACHE_TIMEOUT: short, so "the primary comes back" is quick
READ_TIMEOUT = 1.0


class EndToEndTests(LiveServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.workdir = Path(tempfile.mkdtemp(prefix="smtest-e2e-"))
        cls.addClassCleanup(shutil.rmtree, cls.workdir, True)
        cls.sandbox_process, status = start_sandbox(cls.workdir, webhook_url=cls.live_server_url)
        cls.addClassCleanup(cls.sandbox_process.stop)
        cls.sandbox = SandboxClient(status["control_url"])
        providers = status["providers"]
        anymail = {
            "SENDGRID_API_KEY": DEFAULT_API_KEYS["sendgrid"],
            "SENDGRID_API_URL": providers["sendgrid"]["api_url"],
            "MAILGUN_API_KEY": DEFAULT_API_KEYS["mailgun"],
            "MAILGUN_API_URL": providers["mailgun"]["api_url"],
            "MAILGUN_SENDER_DOMAIN": "mg.example.com",
            "MANDRILL_API_KEY": DEFAULT_API_KEYS["mandrill"],
            "MANDRILL_API_URL": providers["mandrill"]["api_url"],
            "WEBHOOK_SECRET": DEFAULT_WEBHOOK_SECRET,
            "MAILGUN_WEBHOOK_SIGNING_KEY": DEFAULT_WEBHOOK_KEYS["mailgun"],
            "MANDRILL_WEBHOOK_KEY": DEFAULT_WEBHOOK_KEYS["mandrill"],
            # The sandbox signs SendGrid's webhooks (ECDSA): the service verifies each one.
            "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": SENDGRID_DEV_VERIFICATION_KEY,
        }
        cache_dir = cls.workdir / "cache"
        # The live server (this process) and the worker see the same database, cache and chain.
        cls.settings_override = override_settings(
            **sending_through(FAILOVER_BACKEND),
            ANYMAIL=anymail,
            FIRST_WORKING_EMAIL_BACKENDS=CHAIN.split(","),
            FIRST_WORKING_EMAIL_CACHE_TIMEOUT=MEMORY_SECONDS,
            CACHES={
                "default": {
                    "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                    "LOCATION": str(cache_dir),
                }
            },
            TASKS={"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}},
        )
        cls.settings_override.enable()
        cls.addClassCleanup(cls.settings_override.disable)
        worker_env = {
            "DJANGO_SETTINGS_MODULE": "smtest.settings",
            "DEBUG": "1",
            "DATABASE_URL": database_url(),
            "CACHE_URL": f"filecache://{cache_dir}",
            "TASKS_BACKEND": "database",
            "FIRST_WORKING_EMAIL_BACKENDS": CHAIN,
            "FIRST_WORKING_EMAIL_CACHE_TIMEOUT": str(MEMORY_SECONDS),
            "FIRST_WORKING_EMAIL_READ_TIMEOUT": str(READ_TIMEOUT),
            "MAILSERVICE_RETRY_BASE_DELAY": "0.5",
            "MAILSERVICE_RETRY_MAX_DELAY": "1",
            "MAILSERVICE_RETRY_JITTER": "0",
            **{f"ANYMAIL_{name}": value for name, value in anymail.items()},
        }
        cls.worker = start_worker(cls.workdir, worker_env)
        cls.addClassCleanup(cls.worker.stop)

    def setUp(self):
        super().setUp()
        self.sandbox.reset()
        caches["default"].clear()
        _, key = api_key_create(name="e2e", scopes=("send", "read", "manage"))  # it lists suppressions
        self.auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def tearDown(self):
        # Let the worker finish what is due before the test database is flushed under it.
        from django.utils import timezone
        from django_tasks_db.models import DBTaskResult

        def idle():
            busy = (
                DBTaskResult.objects.filter(status="RUNNING").exists()
                or DBTaskResult.objects.filter(status="READY", run_after__lte=timezone.now()).exists()
                or DBTaskResult.objects.filter(status="READY", run_after__isnull=True).exists()
            )
            return not busy

        wait_until(idle, timeout=30, what="the worker to finish its due tasks")
        self.assertTrue(self.worker.alive(), f"the worker died:\n{self.worker.output()}")
        super().tearDown()

    # HTTP helpers --------------------------------------------------------------------------

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.live_server_url + path, data=data, method=method, headers=self.auth
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def send(self, to: str = "jane@example.com") -> str:
        status, body = self.api("POST", "/api/messages", {"to": to, "subject": "Hello", "text": "Hi there"})
        self.assertEqual(status, 202, body)
        return body["id"]

    def message(self, message_id: str) -> dict:
        return self.api("GET", f"/api/messages/{message_id}")[1]

    def wait_for(self, message_id: str, *statuses: str, timeout: float = 20.0) -> dict:
        def reached():
            current = self.message(message_id)
            return current if current["status"] in statuses else None

        try:
            return wait_until(reached, timeout=timeout, what=f"message {message_id} to be {statuses}")
        except AssertionError as err:
            raise AssertionError(f"{err}\nworker log:\n{self.worker.output()}") from None

    def providers_tried(self, message: dict) -> list[tuple[str, str]]:
        return [(attempt["provider"], attempt["outcome"]) for attempt in message["attempts"]]

    # The behaviours ------------------------------------------------------------------------

    def test_healthy_primary_sends_and_the_delivered_webhook_comes_back(self):
        """SendGrid takes it in one attempt; the sandbox's signed webhook (ECDSA, verified by the
        service with the sandbox's development public key) turns it delivered."""
        message_id = self.send()
        message = self.wait_for(message_id, "delivered")
        self.assertEqual(message["provider"], "sendgrid")
        self.assertEqual(self.providers_tried(message), [("sendgrid", "sent")])
        self.assertEqual([e["event_type"] for e in message["events"]], ["delivered"])
        self.assertEqual(len(self.sandbox.messages(provider="sendgrid")), 1)

    def test_primary_down_fails_over_and_the_api_shows_it(self):
        """SendGrid refusing connections: Mailgun takes it, and /api/providers shows SendGrid failing."""
        self.sandbox.set_fault("sendgrid", {"down": True})
        message = self.wait_for(self.send(), "sent", "delivered")
        self.assertEqual(message["provider"], "mailgun")
        self.assertEqual(self.providers_tried(message), [("sendgrid", "provider_error"), ("mailgun", "sent")])
        providers = {p["name"]: p["state"] for p in self.api("GET", "/api/providers")[1]}
        self.assertEqual(providers["sendgrid"], "failing")
        self.assertEqual(providers["mailgun"], "active")

    def test_primary_is_used_again_after_the_memory_expires(self):
        """Once FIRST_WORKING_EMAIL_CACHE_TIMEOUT has passed, a recovered SendGrid is tried first again."""
        self.sandbox.set_fault("sendgrid", {"down": True})
        failed_over_at = time.monotonic()
        self.assertEqual(self.wait_for(self.send(), "sent", "delivered")["provider"], "mailgun")
        self.sandbox.clear_fault("sendgrid")
        second = self.wait_for(self.send(), "sent", "delivered")
        if time.monotonic() - failed_over_at < MEMORY_SECONDS - 1:  # a slow machine may be past it
            self.assertEqual(self.providers_tried(second), [("mailgun", "sent")])  # still remembered

        def primary_again():
            message = self.wait_for(self.send(), "sent", "delivered")
            return message if message["provider"] == "sendgrid" else None

        message = wait_until(
            primary_again, timeout=MEMORY_SECONDS + 10, interval=0.5, what="sendgrid to be used again"
        )
        self.assertEqual(self.providers_tried(message), [("sendgrid", "sent")])

    def test_all_down_defers_then_delivers_when_one_returns(self):
        """Every provider down: deferred with a retry; Mailgun comes back and takes it."""
        for provider in ("sendgrid", "mailgun", "mandrill"):
            self.sandbox.set_fault(provider, {"down": True})
        message_id = self.send()
        deferred = self.wait_for(message_id, "deferred")
        self.assertEqual({a["outcome"] for a in deferred["attempts"]}, {"provider_error"})
        self.sandbox.clear_fault("mailgun")
        message = self.wait_for(message_id, "sent", "delivered")
        self.assertEqual(message["provider"], "mailgun")
        self.assertEqual(len(self.sandbox.messages()), 1)

    def test_read_timeout_is_flagged_ambiguous(self):
        """SendGrid holding the answer past the read timeout: Mailgun sends, the attempt is ambiguous."""
        self.sandbox.set_fault("sendgrid", {"timeout": True, "hold_ms": 4000})
        message = self.wait_for(self.send(), "sent", "delivered")
        self.assertEqual(message["provider"], "mailgun")
        self.assertEqual(self.providers_tried(message), [("sendgrid", "ambiguous"), ("mailgun", "sent")])
        self.assertTrue(message["attempts"][0]["ambiguous"])

    def test_bounce_webhook_suppresses_and_the_next_send_reaches_no_provider(self):
        """bounce+...@ bounces at the sandbox; the address is suppressed; the next message stays home."""
        address = "bounce+e2e@example.com"
        message = self.wait_for(self.send(address), "bounced")
        self.assertEqual([e["event_type"] for e in message["events"]], ["bounced"])
        suppressions = self.api("GET", f"/api/suppressions?address={quote(address)}")[1]
        self.assertIn(address, json.dumps(suppressions))
        received = len(self.sandbox.messages())
        second = self.wait_for(self.send(address), "suppressed")
        self.assertEqual(second["attempts"], [])
        self.assertEqual(len(self.sandbox.messages()), received)
