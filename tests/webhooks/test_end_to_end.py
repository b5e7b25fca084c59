"""Issue's "done when": send through the API, the provider reports a bounce, the address is
suppressed for every provider, and a replayed or forged report changes nothing."""
import json

import responses
from django.test import TestCase

from mailservice.models import Message, Suppression, TrackingEvent
from mailservice.services.delivery import message_deliver
from tests.mailservice.helpers import GatewayMixin, esp_settings, mock_mailgun, mock_sendgrid
from tests.webhooks.payloads import WEBHOOK_SETTINGS, mailgun_event, mailgun_post, sendgrid_event, sendgrid_post
from tests.mailservice.helpers import ANYMAIL


class BounceToSuppressionTests(GatewayMixin, TestCase):
    def setUp(self):
        override = esp_settings(ANYMAIL={**ANYMAIL, **WEBHOOK_SETTINGS})
        override.enable()
        self.addCleanup(override.disable)
        super().setUp()

    def send(self, to: str) -> Message:
        response = self.post_message({"to": to, "subject": "Hello", "text": "Hi"})
        self.assertEqual(response.status_code, 202, response.content)
        return Message.objects.get(pk=response.json()["id"])

    def test_bounce_reported_by_sendgrid_suppresses_the_next_send_everywhere(self):
        """SendGrid takes the message, posts a bounce; the next message to that address reaches no provider."""
        with responses.RequestsMock() as rsps:
            mock_sendgrid(rsps)
            message = self.send("jane@example.com")
            message_deliver(message_id=message.pk)
            anymail_id = json.loads(rsps.calls[0].request.body)["personalizations"][0]["custom_args"]["anymail_id"]
        message.refresh_from_db()
        self.assertEqual((message.status, message.provider), ("sent", "sendgrid"))

        bounce = sendgrid_event("bounce", "jane@example.com", anymail_id, sg_event_id="bounce-1")
        self.assertEqual(sendgrid_post(self.client, [bounce]).status_code, 200)
        message.refresh_from_db()
        self.assertEqual(message.status, "bounced")
        listed = self.client.get("/api/suppressions", **self.auth).json()
        self.assertIn("jane@example.com", json.dumps(listed))

        sendgrid_post(self.client, [bounce])  # the provider retries its post
        self.assertEqual(TrackingEvent.objects.count(), 1)

        with responses.RequestsMock() as rsps:  # any provider call would fail: none is registered
            second = self.send("Jane@Example.com")
            message_deliver(message_id=second.pk)
            self.assertEqual(len(rsps.calls), 0)
        second.refresh_from_db()
        self.assertEqual(second.status, "suppressed")
        self.assertEqual(second.recipients.get().status, "suppressed")

    def test_complaint_reported_by_mailgun_stops_a_send_through_sendgrid(self):
        """A complaint from Mailgun (the secondary) protects the address on SendGrid (the primary)."""
        with responses.RequestsMock() as rsps:
            mock_sendgrid(rsps, status=503)
            mock_mailgun(rsps, message_id="<mg-77@mg.example.com>")
            message = self.send("bob@example.com")
            message_deliver(message_id=message.pk)
        message.refresh_from_db()
        self.assertEqual(message.provider, "mailgun")
        mailgun_post(self.client, mailgun_event("complained", "bob@example.com", "<mg-77@mg.example.com>"))
        message.refresh_from_db()
        self.assertEqual(message.status, "complained")
        self.assertEqual(Suppression.objects.get().provider, "mailgun")

        with responses.RequestsMock() as rsps:
            second = self.send("bob@example.com")
            message_deliver(message_id=second.pk)
            self.assertEqual(len(rsps.calls), 0)
        second.refresh_from_db()
        self.assertEqual(second.status, "suppressed")

    def test_forged_report_changes_nothing(self):
        """A forged bounce stores no event and suppresses nobody."""
        response = sendgrid_post(self.client, [sendgrid_event("bounce", "jane@example.com", "x")], forge=True)
        self.assertEqual(response.status_code, 400)
        self.assertFalse(TrackingEvent.objects.exists())
        self.assertFalse(Suppression.objects.exists())

    def test_event_arriving_before_the_worker_records_the_send_is_linked_late(self):
        """A webhook faster than the worker's bookkeeping is linked when the send is recorded."""
        # The provider's report lands before the worker has recorded which id the send got.
        message = self.send("fast@example.com")
        mailgun_post(self.client, mailgun_event("delivered", "fast@example.com", "<fast@mg.example.com>"))
        self.assertIsNone(TrackingEvent.objects.get().message_id)
        with responses.RequestsMock() as rsps:
            mock_sendgrid(rsps, status=503)
            mock_mailgun(rsps, message_id="<fast@mg.example.com>")
            message_deliver(message_id=message.pk)
        message.refresh_from_db()
        self.assertEqual(message.status, "delivered")
        self.assertEqual(TrackingEvent.objects.get().message_id, message.pk)


class UnlinkedEventRecoveryTests(GatewayMixin, TestCase):
    def test_recovery_pass_links_events_that_raced_the_send_bookkeeping(self):
        """An event stored unlinked after the worker linked late (a READ COMMITTED race) is
        linked by the next recovery pass."""
        from django.utils import timezone

        from mailservice.models import Recipient
        from mailservice.services.recovery import message_recover

        message = Message.objects.create(from_email="a@example.com", subject="s", text="t", status="sent")
        Recipient.objects.create(
            message=message, kind="to", address="r@example.com", email="r@example.com", status="sent",
            provider_message_id="race-1",
        )
        TrackingEvent.objects.create(
            provider="sendgrid", event_id="e-race", event_type="delivered", recipient="r@example.com",
            provider_message_id="race-1", timestamp=timezone.now(),
        )
        message_recover()
        message.refresh_from_db()
        self.assertEqual(message.status, "delivered")
        self.assertEqual(TrackingEvent.objects.get().message_id, message.pk)
