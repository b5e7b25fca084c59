"""Shared set-up for the tests that post to the tracking webhooks: the endpoints of every ESP
in tests/webhooks/payloads.py mounted, with the secrets its posts are signed with."""

from django.test import TestCase, override_settings

from mailservice.models import Message, Recipient
from tests.webhooks.payloads import WEBHOOK_PROVIDERS, WEBHOOK_SETTINGS


@override_settings(ANYMAIL=WEBHOOK_SETTINGS, MAILSERVICE_WEBHOOK_PROVIDERS=WEBHOOK_PROVIDERS)
class WebhookTestCase(TestCase):
    def assert_status(self, message: Message, expected: str, recipient_status: str | None = None):
        message.refresh_from_db()
        self.assertEqual(message.status, expected)
        if recipient_status:
            self.assertEqual(message.recipients.get().status, recipient_status)


def sent_message(*emails: str, provider: str = "sendgrid", per_recipient_ids: bool = True) -> Message:
    """A message a provider took, as the worker records it."""
    message = Message.objects.create(
        from_email="app@example.com",
        subject="Hi",
        text="x",
        status="sent",
        provider=provider,
        provider_message_id="" if per_recipient_ids else "<msg-1@mg.example.com>",
    )
    for position, email in enumerate(emails):
        Recipient.objects.create(
            message=message,
            kind="to",
            position=position,
            address=email,
            email=email,
            status="sent",
            provider_message_id=f"id-{email}" if per_recipient_ids else "<msg-1@mg.example.com>",
        )
    return message
