"""The delivery state machine: success, failover, deferral and retry, message errors, max age,
suppression, send_at; what reaches the provider (attachments, headers, Anymail attributes)."""

import base64
import json
import random
from datetime import timedelta
from unittest import mock

import requests
import responses
from django.core import mail
from django.test import TestCase, override_settings

from mailservice.composing import build_email
from mailservice.models import Message
from mailservice.services.backoff import retry_delay
from mailservice.services.delivery import message_deliver
from mailservice.services.suppressions import suppression_add
from tests.esp import mock_mailgun, mock_sendgrid
from tests.mailservice.helpers import (
    MAILGUN_URL,
    SENDGRID_URL,
    T0,
    VALID,
    GatewayMixin,
    esp_settings,
    gateway_settings,
    later,
)


def every_provider_down() -> None:
    mock_sendgrid(responses, status=500)
    mock_mailgun(responses, status=500)


class DeliveryMixin(GatewayMixin):
    def submit_with_every_provider_down(self):
        every_provider_down()
        return self.submit()

    def submit(self, body=None, **overrides):
        response = self.post_message({**(body or VALID), **overrides})
        self.assertEqual(response.status_code, 202, response.content)
        message = Message.objects.get(pk=response.json()["id"])
        # Pin the clock: the message was accepted at T0.
        Message.objects.filter(pk=message.pk).update(
            created_at=T0,
            window_start=max(T0, message.send_at or T0),
            next_attempt_at=max(T0, message.send_at or T0),
        )
        return message.pk

    def deliver(self, message_id, at=T0):
        return message_deliver(message_id=message_id, now=at)


@gateway_settings()
class LocmemDeliveryTests(DeliveryMixin, TestCase):
    def test_success_marks_message_and_recipients_sent(self):
        """A message the provider takes is `sent`, with its provider and one attempt."""
        message = self.deliver(self.submit())
        self.assertEqual((message.status, message.provider, message.attempt_count), ("sent", "locmem", 1))
        self.assertEqual(list(message.recipients.values_list("status", flat=True)), ["sent"])
        self.assertEqual(len(mail.outbox), 1)
        self.assertIsNone(message.next_attempt_at)
        self.assertIsNone(message.lease_expires_at)

    def test_message_no_provider_can_encode_fails_at_once(self):
        """A message every provider's backend fails to encode is failed, not retried for days."""
        message_id = self.submit()

        def unencodable(message, recipients):
            # A lone surrogate cannot be a MIME header. Added to the composed email, not stored:
            # PostgreSQL's JSON refuses to store it at all.
            email = build_email(message, recipients)
            email.extra_headers["X-Note"] = "\ud800"
            return email

        with mock.patch("mailservice.services.sending.build_email", unencodable):
            message = self.deliver(message_id)
        self.assertEqual(message.status, "failed")
        self.assertEqual(list(message.attempts.values_list("outcome", flat=True)), ["local_error"])
        self.assertIsNone(message.next_attempt_at)

    def test_delivered_message_is_not_claimed_again(self):
        """A second task for a sent message does nothing: it is sent once."""
        message_id = self.submit()
        self.deliver(message_id)
        self.assertIsNone(self.deliver(message_id, at=later(3600)))
        self.assertEqual(len(mail.outbox), 1)

    def test_suppressed_recipient_is_dropped_before_sending(self):
        """A suppressed address is marked `suppressed` and not sent to; the others are."""
        suppression_add(address="Blocked@Example.com")
        message = self.deliver(self.submit(to=["ok@example.com", "blocked@example.com"]))
        statuses = dict(message.recipients.values_list("email", "status"))
        self.assertEqual(statuses, {"ok@example.com": "sent", "blocked@example.com": "suppressed"})
        self.assertEqual(mail.outbox[0].to, ["ok@example.com"])
        self.assertEqual(message.status, "sent")

    def test_all_suppressed_never_reaches_a_provider(self):
        """A message with no deliverable recipient is `suppressed` without any provider call."""
        suppression_add(address="blocked@example.com")
        message = self.deliver(self.submit(to="blocked@example.com"))
        self.assertEqual(message.status, "suppressed")
        self.assertEqual(len(mail.outbox), 0)
        self.assertFalse(message.attempts.exists())
        self.assertIsNotNone(message.finished_at)

    # T0 lies years ahead of the real clock, past the scheduling horizon.
    @override_settings(MAILSERVICE_MAX_SCHEDULE_DAYS=0)
    def test_send_at_waits_until_due(self):
        """A message with send_at is not sent before that time, and is sent after."""
        message_id = self.submit(send_at=later(3600).isoformat())
        self.assertIsNone(self.deliver(message_id, at=later(60)))
        self.assertEqual(Message.objects.get(pk=message_id).status, "queued")
        self.assertEqual(self.deliver(message_id, at=later(3600)).status, "sent")

    def test_attachments_headers_and_reply_to_reach_the_backend(self):
        """Attachments (inline with its content id), headers and reply-to are in the sent email."""
        png = base64.b64encode(b"\x89PNG fake").decode()
        self.deliver(
            self.submit(
                html='<img src="cid:logo">',
                reply_to="replies@example.com",
                headers={"X-Campaign": "spring"},
                attachments=[
                    {
                        "filename": "report.pdf",
                        "content": base64.b64encode(b"%PDF-1").decode(),
                        "mimetype": "application/pdf",
                    },
                    {
                        "filename": "logo.png",
                        "content": png,
                        "mimetype": "image/png",
                        "inline": True,
                        "content_id": "logo",
                    },
                ],
            )
        )
        sent = mail.outbox[0]
        self.assertEqual(sent.extra_headers["X-Campaign"], "spring")
        self.assertEqual(sent.reply_to, ["replies@example.com"])
        raw = sent.message().as_string()
        self.assertIn('filename="report.pdf"', raw)
        self.assertIn("Content-ID: <logo>", raw)
        self.assertIn("X-Campaign: spring", raw)

    def test_html_only_message_is_sent_as_html(self):
        """A message with html and no text is sent with an HTML body."""
        self.deliver(self.submit({"to": "a@example.com", "html": "<p>Hi</p>"}))
        self.assertEqual(mail.outbox[0].content_subtype, "html")

    @override_settings(FIRST_WORKING_EMAIL_BACKENDS=[])
    def test_misconfigured_chain_defers_instead_of_losing(self):
        """With no provider configured the message is deferred, not lost or failed."""
        message = self.deliver(self.submit())
        self.assertEqual(message.status, "deferred")
        self.assertIn("FIRST_WORKING_EMAIL_BACKENDS", message.last_error)


@esp_settings()
class ProviderDeliveryTests(DeliveryMixin, TestCase):
    @responses.activate
    def test_failover_records_both_attempts(self):
        """When the first provider fails, the second takes it; both attempts are recorded."""
        mock_sendgrid(responses, status=503)
        mock_mailgun(responses)
        message = self.deliver(self.submit())
        self.assertEqual((message.status, message.provider), ("sent", "mailgun"))
        self.assertEqual(message.provider_message_id, "<mg-1@mg.example.com>")
        attempts = list(message.attempts.values_list("provider", "outcome", "status_code"))
        self.assertEqual(attempts, [("sendgrid", "provider_error", 503), ("mailgun", "sent", None)])
        self.assertEqual(message.recipients.get().provider_message_id, "<mg-1@mg.example.com>")

    @responses.activate
    def test_sendgrid_success_keeps_its_message_id(self):
        """The provider's message id is recorded on the message and its recipients."""
        mock_sendgrid(responses)
        message = self.deliver(self.submit())
        self.assertEqual(message.provider, "sendgrid")
        self.assertTrue(message.provider_message_id)
        self.assertEqual(message.recipients.get().provider_message_id, message.provider_message_id)

    @responses.activate
    def test_all_failed_then_retried_then_delivered(self):
        """All providers down: deferred with backoff; the retry at that time sends it."""
        mock_sendgrid(responses, status=500)
        mock_mailgun(responses, status=502)
        message_id = self.submit()
        message = self.deliver(message_id)
        self.assertEqual(message.status, "deferred")
        self.assertEqual(message.recipients.get().status, "deferred")
        self.assertEqual(message.next_attempt_at, later(30))  # MAILSERVICE_RETRY_BASE_DELAY, no jitter
        self.assertIsNone(self.deliver(message_id, at=later(29)))  # not due yet
        responses.replace(
            responses.POST, MAILGUN_URL, status=200, body=json.dumps({"id": "<ok@mg>", "message": "Queued"})
        )
        message = self.deliver(message_id, at=later(30))
        self.assertEqual((message.status, message.provider, message.attempt_count), ("sent", "mailgun", 2))
        self.assertEqual(list(message.attempts.values_list("round", flat=True)), [1, 1, 2, 2])

    @responses.activate
    def test_deferral_wakes_a_round_at_the_retry_time(self):
        """A delivery round that defers its message leaves a wake-up due at the retry time."""
        from django_tasks_db.models import DBTaskResult

        from mailservice.tasks import deliver_due

        every_provider_down()
        message_id = self.post_message(VALID).json()["id"]  # due now: the task runs on the real clock
        DBTaskResult.objects.all().delete()
        self.assertEqual(deliver_due.call(), {"deferred": 1})
        message = Message.objects.get(pk=message_id)
        task = DBTaskResult.objects.get()
        self.assertEqual(task.task_path, "mailservice.tasks.deliver_due")
        # Wake-ups are whole seconds: the round runs at the retry time or within a second after.
        self.assertGreaterEqual(task.run_after, message.next_attempt_at)
        self.assertLess(task.run_after - message.next_attempt_at, timedelta(seconds=1))

    @responses.activate
    @override_settings(MAILSERVICE_MAX_AGE=3600)
    def test_max_age_reached_fails_with_reason(self):
        """Once the maximum age has passed, a failed round fails the message with the reason."""
        message_id = self.submit_with_every_provider_down()
        self.deliver(message_id, at=T0)
        Message.objects.filter(pk=message_id).update(next_attempt_at=later(3600))
        message = self.deliver(message_id, at=later(3600))
        self.assertEqual(message.status, "failed")
        self.assertIn("maximum age", message.last_error)
        self.assertIsNotNone(message.finished_at)
        self.assertIsNone(message.next_attempt_at)

    @responses.activate
    @override_settings(MAILSERVICE_MAX_AGE=100)
    def test_last_retry_is_at_the_deadline(self):
        """A retry that would fall after the deadline is scheduled at the deadline instead."""
        message_id = self.submit_with_every_provider_down()
        Message.objects.filter(pk=message_id).update(attempt_count=5)  # next delay 30*2**5 s
        self.assertEqual(self.deliver(message_id, at=T0).next_attempt_at, later(100))

    @responses.activate
    def test_message_error_is_final_at_once(self):
        """A provider's 400 (invalid message) fails it at once; no other provider is tried."""
        mock_sendgrid(responses, status=400, body='{"errors": [{"message": "Invalid"}]}')
        mock_mailgun(responses)
        message = self.deliver(self.submit())
        self.assertEqual(message.status, "failed")
        self.assertEqual(
            list(message.attempts.values_list("provider", "outcome")), [("sendgrid", "message_error")]
        )
        self.assertIsNone(message.next_attempt_at)
        self.assertEqual(len(responses.calls), 1)

    @responses.activate
    def test_read_timeout_sends_elsewhere_and_flags_possible_duplicate(self):
        """A read timeout is ambiguous: the next provider sends it and the message is flagged."""
        responses.add(responses.POST, SENDGRID_URL, body=requests.ReadTimeout("read timed out"))
        mock_mailgun(responses)
        message = self.deliver(self.submit())
        self.assertEqual(
            (message.status, message.provider, message.possible_duplicate), ("sent", "mailgun", True)
        )
        self.assertTrue(message.attempts.get(provider="sendgrid").ambiguous)

    @responses.activate
    @override_settings(FIRST_WORKING_EMAIL_FAILOVER_ON_AMBIGUOUS=False)
    def test_ambiguous_without_failover_fails_flagged(self):
        """With ambiguous failover off, a read timeout fails the message, flagged, without a resend."""
        responses.add(responses.POST, SENDGRID_URL, body=requests.ReadTimeout("read timed out"))
        mock_mailgun(responses)
        message = self.deliver(self.submit())
        self.assertEqual((message.status, message.possible_duplicate), ("failed", True))
        self.assertEqual(len(responses.calls), 1)

    @responses.activate
    def test_anymail_attributes_and_attachments_reach_sendgrid(self):
        """Tags, metadata, template id, merge data, headers and attachments are in the payload."""
        mock_sendgrid(responses)
        self.deliver(
            self.submit(
                # Two providers: one template id each (tests/templates/test_sending.py).
                {
                    "to": "jane@example.com",
                    "template_id": {"sendgrid": "d-123", "mailgun": "w"},
                    "subject": "S",
                },
                tags=["welcome"],
                metadata={"order": "42"},
                merge_data={"jane@example.com": {"name": "Jane"}},
                merge_global_data={"company": "ACME"},
                headers={"X-Campaign": "spring"},
                attachments=[{"filename": "a.txt", "content": base64.b64encode(b"hello").decode()}],
            )
        )
        payload = json.loads(responses.calls[0].request.body)
        self.assertEqual(payload["template_id"], "d-123")
        self.assertEqual(payload["categories"], ["welcome"])
        self.assertEqual(
            payload["personalizations"][0]["dynamic_template_data"], {"name": "Jane", "company": "ACME"}
        )
        self.assertEqual(payload["custom_args"]["order"], "42")
        self.assertEqual(payload["headers"]["X-Campaign"], "spring")
        self.assertEqual(payload["attachments"][0]["filename"], "a.txt")
        self.assertEqual(base64.b64decode(payload["attachments"][0]["content"]), b"hello")

    @responses.activate
    def test_no_secret_in_recorded_errors(self):
        """Provider errors are recorded without the provider's API key."""
        mock_sendgrid(responses, status=401, body="bad key SG.test-sendgrid-key")
        mock_mailgun(responses, status=401, body="bad key test-mailgun-key")
        message = self.deliver(self.submit())
        recorded = message.last_error + " ".join(message.attempts.values_list("error", flat=True))
        self.assertNotIn("SG.test-sendgrid-key", recorded)
        self.assertNotIn("test-mailgun-key", recorded)


@gateway_settings(MAILSERVICE_RETRY_BASE_DELAY=10, MAILSERVICE_RETRY_MAX_DELAY=100)
class RetryDelayTests(TestCase):
    def test_doubles_each_attempt_up_to_the_cap(self):
        """Delays grow exponentially from the base and stop at the maximum."""
        self.assertEqual([retry_delay(attempt=n) for n in range(1, 6)], [10, 20, 40, 80, 100])

    @override_settings(MAILSERVICE_RETRY_JITTER=0.5)
    def test_jitter_shortens_by_at_most_its_share(self):
        """With jitter, a delay lies between (1 - jitter) and 1 times the backoff."""
        rng = random.Random(7)
        delays = [retry_delay(attempt=3, rng=rng) for _ in range(50)]
        self.assertTrue(all(20 <= delay <= 40 for delay in delays))
        self.assertGreater(len(set(delays)), 1)
