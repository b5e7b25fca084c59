"""The sandbox's tracking webhooks, posted over HTTP to Anymail's own webhook views on a live
Django server: each provider's format parses, each signature validates with the secrets in
ANYMAIL, forgeries are refused, and Anymail's `tracking` signal gets the right events."""

from __future__ import annotations

import threading
from typing import Any
from unittest import mock

import requests
from anymail.signals import tracking
from django.test import LiveServerTestCase, override_settings

from sandbox.app import Sandbox
from sandbox.conf import SandboxSettings
from sandbox.faults import Fault
from sandbox.providers import sendgrid as sendgrid_provider
from sandbox.providers.sendgrid import DEV_VERIFICATION_KEY as SENDGRID_DEV_VERIFICATION_KEY
from tests.sandbox.base import CHAIN, MAILGUN_DOMAIN, SandboxMixin, anymail_backend

WEBHOOK_SECRET = "hooks:sandbox-test-secret"
WEBHOOK_KEYS = {"mailgun": "mailgun-signing-key-for-tests", "mandrill": "mandrill-webhook-key-for-tests"}
SECRETS = {"webhook_secret": WEBHOOK_SECRET, "webhook_keys": WEBHOOK_KEYS}
ANYMAIL = {
    "WEBHOOK_SECRET": WEBHOOK_SECRET,
    "MAILGUN_WEBHOOK_SIGNING_KEY": WEBHOOK_KEYS["mailgun"],
    "MANDRILL_WEBHOOK_KEY": WEBHOOK_KEYS["mandrill"],
    # Anymail checks the ECDSA signature of every SendGrid post (the sandbox's development key).
    "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": SENDGRID_DEV_VERIFICATION_KEY,
}
ESP_NAMES = {"sendgrid": "SendGrid", "mailgun": "Mailgun", "mandrill": "Mandrill"}
# Mandrill has no "delivered" event: its "send" event is Anymail's "sent".
DELIVERED = {"sendgrid": "delivered", "mailgun": "delivered", "mandrill": "sent"}


@override_settings(ROOT_URLCONF="tests.sandbox.urls", ANYMAIL=ANYMAIL)
class WebhookTestCase(SandboxMixin, LiveServerTestCase):
    host = "127.0.0.1"
    databases: set[str] = set()  # Anymail's views store nothing; no test database needed
    # Webhooks wait until the test flushes them, so each test decides when they are posted.
    sandbox_options = {**SECRETS, "webhook_delay": 300}

    @classmethod
    def extra_sandbox_options(cls) -> dict[str, Any]:
        return {"webhook_url": cls.live_server_url}

    def setUp(self) -> None:
        super().setUp()
        self.events: list[tuple[str, Any]] = []
        self.arrived = threading.Event()

        def receive(sender, event, esp_name, **kwargs):
            self.events.append((esp_name, event))
            self.arrived.set()

        # Only this receiver listens: these tests are about the sandbox and Anymail, so the
        # project's own receiver (mailservice, which stores events) stays out, with its database.
        isolated = mock.patch.object(tracking, "receivers", [])
        isolated.start()
        self.addCleanup(isolated.stop)
        tracking.connect(receive, weak=False)

    def send(self, provider: str, to: list[str], sandbox: Sandbox | None = None, **attributes: Any):
        message = self.message(to=to)
        for name, value in attributes.items():
            setattr(message, name, value)
        anymail_backend(sandbox or self.sandbox, provider).send_messages([message])
        return message

    def other_sandbox(
        self, webhook_secret: str = WEBHOOK_SECRET, webhook_keys: dict[str, str] | None = None
    ) -> Sandbox:
        """A second sandbox posting to the same server with other secrets (a forger)."""
        settings = SandboxSettings(
            port=0,
            webhook_url=self.live_server_url,
            webhook_delay=300,
            sender_domains={"mailgun": (MAILGUN_DOMAIN,)},
            webhook_secret=webhook_secret,
            webhook_keys={**WEBHOOK_KEYS, **(webhook_keys or {})},
        )
        sandbox = Sandbox(settings).start()
        self.addCleanup(sandbox.stop)
        return sandbox

    def send_and_flush(self, provider: str, to: list[str], **attributes: Any):
        """Send with the events of earlier subtests forgotten, then post the webhooks now."""
        self.events.clear()
        message = self.send(provider, to, **attributes)
        return message, self.sandbox.webhooks.flush()

    def event_summary(self) -> list[tuple[str, str, str, str | None]]:
        return [(esp, event.event_type, event.recipient, event.message_id) for esp, event in self.events]


class DeliveredWebhookTests(WebhookTestCase):
    def test_each_provider_posts_delivered_with_the_message_id_it_answered(self):
        """Anymail gets a delivered (Mandrill: sent) event whose message_id is the send's message id."""
        for provider in CHAIN:
            with self.subTest(provider=provider):
                message, results = self.send_and_flush(provider, ["user@example.net"])
                self.assertEqual([r.status for r in results], [200])
                message_id = message.anymail_status.message_id
                expected = [(ESP_NAMES[provider], DELIVERED[provider], "user@example.net", message_id)]
                self.assertEqual(self.event_summary(), expected)

    def test_tags_and_metadata_come_back_in_the_events(self):
        """Each provider echoes the message's tags and metadata as Anymail expects them."""
        for provider in CHAIN:
            with self.subTest(provider=provider):
                attributes = {"tags": ["weekly"], "metadata": {"customer": "42"}}
                self.send_and_flush(provider, ["user@example.net"], **attributes)
                (event,) = [event for _, event in self.events]
                self.assertEqual((event.tags, event.metadata), (["weekly"], {"customer": "42"}))

    def test_every_recipient_gets_its_own_event_and_id(self):
        """Two recipients: two events, each with the message id Anymail reported for that recipient."""
        for provider in CHAIN:
            with self.subTest(provider=provider):
                message, _ = self.send_and_flush(provider, ["a@example.net", "b@example.net"])
                reported = message.anymail_status.recipients.items()
                expected = {addr: status.message_id for addr, status in reported}
                self.assertEqual({event.recipient: event.message_id for _, event in self.events}, expected)

    def test_the_webhook_history_is_inspectable(self):
        """Each post is kept with its provider, events, status and message ids."""
        message = self.send("mailgun", ["user@example.net"])
        self.sandbox.webhooks.flush()
        (result,) = self.sandbox.webhooks.history()
        post = result.post
        self.assertEqual(
            (post.provider, post.events, result.status, post.message_ids),
            ("mailgun", ["delivered"], 200, [message.anymail_status.message_id]),
        )
        self.assertEqual(post.url, f"{self.live_server_url}/anymail/mailgun/tracking/")


class ConventionWebhookTests(WebhookTestCase):
    def test_bounce_address_gets_a_bounced_event(self):
        """bounce+...@ produces each provider's hard bounce, which Anymail calls bounced."""
        for provider in CHAIN:
            with self.subTest(provider=provider):
                self.send_and_flush(provider, ["bounce+hard@example.net"])
                received = [(e.event_type, e.recipient) for _, e in self.events]
                self.assertEqual(received, [("bounced", "bounce+hard@example.net")])
                self.assertIn("550", self.events[0][1].mta_response or "")

    def test_complain_address_is_delivered_then_complained(self):
        """complain+...@ produces the delivery, then a spam complaint, in that order."""
        for provider in CHAIN:
            with self.subTest(provider=provider):
                self.send_and_flush(provider, ["complain+x@example.net"])
                self.assertEqual([e.event_type for _, e in self.events], [DELIVERED[provider], "complained"])

    def test_rejected_recipients_get_no_events(self):
        """A Mandrill recipient rejected at send time never shows up in the webhooks."""
        self.send("mandrill", ["ok@example.net", "reject+x@example.net"])
        self.sandbox.webhooks.flush()
        self.assertEqual([e.recipient for _, e in self.events], ["ok@example.net"])

    def test_a_message_whose_answer_timed_out_is_still_delivered(self):
        """The provider took the message before the read timeout, so its webhook comes back."""
        self.sandbox.set_fault("sendgrid", Fault(timeout=True))
        message = self.message(to=["user@example.net"])
        backend = anymail_backend(self.sandbox, "sendgrid", timeout=(2.0, 0.3))
        with self.assertRaises(requests.ReadTimeout):
            backend.send_messages([message])
        self.sandbox.webhooks.flush()
        self.assertEqual([e.event_type for _, e in self.events], ["delivered"])


class SignatureTests(WebhookTestCase):
    def assert_refused(self, sandbox: Sandbox, providers=CHAIN) -> None:
        for provider in providers:
            self.send(provider, ["user@example.net"], sandbox=sandbox)
        with self.assertLogs("django.security", "ERROR"), self.assertLogs("sandbox.webhooks", "WARNING"):
            results = sandbox.webhooks.flush()
        answers = {result.post.provider: result.status for result in results}
        self.assertEqual(answers, dict.fromkeys(providers, 400))
        self.assertEqual(self.events, [])

    def test_wrong_basic_auth_is_refused_by_every_provider_view(self):
        """A poster without the WEBHOOK_SECRET gets 400 and no event is sent to the signal."""
        self.assert_refused(self.other_sandbox(webhook_secret="hooks:wrong"))

    def test_no_basic_auth_is_refused(self):
        """Posting without any credentials is refused too."""
        self.assert_refused(self.other_sandbox(webhook_secret=""))

    def test_wrong_mailgun_signing_key_is_refused(self):
        """Right basic auth, wrong Mailgun signature: refused."""
        self.assert_refused(self.other_sandbox(webhook_keys={"mailgun": "forged"}), providers=["mailgun"])

    def test_wrong_mandrill_webhook_key_is_refused(self):
        """Right basic auth, wrong X-Mandrill-Signature: refused."""
        self.assert_refused(self.other_sandbox(webhook_keys={"mandrill": "forged"}), providers=["mandrill"])

    def test_sendgrid_posts_carry_a_signature_anymail_verifies(self):
        """Each SendGrid post has the signature and timestamp headers; Anymail, holding the
        development public key, accepts it."""
        self.send("sendgrid", ["user@example.net"])
        (result,) = self.sandbox.webhooks.flush()
        headers = result.post.headers
        self.assertIn(sendgrid_provider.SIGNATURE_HEADER, headers)
        self.assertEqual(headers[sendgrid_provider.TIMESTAMP_HEADER], str(int(result.posted_at)))
        self.assertEqual(result.status, 200)
        self.assertEqual([e.event_type for _, e in self.events], ["delivered"])

    def test_sendgrid_post_signed_with_another_key_is_refused(self):
        """Right basic auth, an ECDSA signature by another key: refused."""
        forger_key = 0x1234567890ABCDEF
        real = sendgrid_provider.signature_headers
        forged = mock.patch.object(
            sendgrid_provider, "signature_headers", lambda body, timestamp: real(body, timestamp, forger_key)
        )
        with forged:
            self.assert_refused(self.sandbox, providers=["sendgrid"])


class DelayTests(WebhookTestCase):
    def test_webhooks_wait_for_the_delay(self):
        """With a delay, nothing is posted right away; the job is pending."""
        self.send("sendgrid", ["user@example.net"])
        self.assertEqual(self.sandbox.webhooks.pending(), 1)
        self.assertEqual((self.sandbox.webhooks.history(), self.events), ([], []))

    def test_flush_posts_pending_webhooks_at_once(self):
        """flush() posts what is pending without waiting for the delay."""
        self.send("mandrill", ["user@example.net"])
        self.assertEqual(len(self.sandbox.webhooks.flush()), 1)
        self.assertEqual((self.sandbox.webhooks.pending(), len(self.events)), (0, 1))


class BackgroundPostingTests(WebhookTestCase):
    sandbox_options = {**SECRETS, "webhook_delay": 0}

    def test_due_webhooks_are_posted_without_a_flush(self):
        """With no delay the background poster sends the event by itself."""
        self.send("mailgun", ["user@example.net"])
        self.assertTrue(self.arrived.wait(timeout=10))
        self.assertEqual([e.event_type for _, e in self.events], ["delivered"])
