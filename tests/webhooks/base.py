"""Shared set-up for the tests that post to the tracking webhooks: the endpoints of every ESP
in tests/webhooks/payloads.py mounted, with the secrets its posts are signed with."""

from django.test import TestCase, override_settings

from mailservice.models import Message
from tests.webhooks.payloads import WEBHOOK_PROVIDERS, WEBHOOK_SETTINGS


@override_settings(ANYMAIL=WEBHOOK_SETTINGS, MAILSERVICE_WEBHOOK_PROVIDERS=WEBHOOK_PROVIDERS)
class WebhookTestCase(TestCase):
    def assert_status(self, message: Message, expected: str, recipient_status: str | None = None):
        message.refresh_from_db()
        self.assertEqual(message.status, expected)
        if recipient_status:
            self.assertEqual(message.recipients.get().status, recipient_status)
