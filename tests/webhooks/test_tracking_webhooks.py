"""Tracking webhooks: stored once, linked, statuses forward only, one suppression list."""

from unittest import mock

from django.db import connection
from django.test import TestCase, override_settings
from django.test.utils import CaptureQueriesContext

from mailservice.models import Message, Recipient, Suppression, TrackingEvent
from tests.webhooks.base import WebhookTestCase, sent_message
from tests.webhooks.payloads import (
    mailgun_event,
    mailgun_post,
    mandrill_event,
    mandrill_post,
    sendgrid_event,
    sendgrid_post,
)


class AuthenticationTests(WebhookTestCase):
    def test_sendgrid_post_without_the_shared_secret_is_refused(self):
        """Wrong basic auth: 400, nothing stored."""
        response = sendgrid_post(
            self.client, [sendgrid_event("delivered", "a@example.net", "id-a")], forge=True
        )
        self.assertEqual(response.status_code, 400)
        self.assertFalse(TrackingEvent.objects.exists())

    def test_forged_mailgun_signature_is_refused(self):
        """A Mailgun event signed with another key stores nothing."""
        response = mailgun_post(
            self.client, mailgun_event("delivered", "a@example.net", "<x@mg>"), forge=True
        )
        self.assertEqual(response.status_code, 400)
        self.assertFalse(TrackingEvent.objects.exists())

    def test_forged_mandrill_signature_is_refused(self):
        """A Mandrill batch with a wrong X-Mandrill-Signature stores nothing."""
        response = mandrill_post(self.client, [mandrill_event("send", "a@example.net", "md1")], forge=True)
        self.assertEqual(response.status_code, 400)
        self.assertFalse(TrackingEvent.objects.exists())
        self.assertEqual(response.json()["errors"][0]["field"], None)

    def test_refusals_are_logged_without_the_secret(self):
        """Anymail quotes the signed URL (with the basic-auth secret); the log line masks it."""
        with self.assertLogs("mailservice.webhooks", "WARNING") as logs:
            mandrill_post(self.client, [mandrill_event("send", "a@example.net", "md1")], forge=True)
        self.assertIn("webhook refused provider=mandrill", logs.output[0])
        self.assertNotIn("hook-password-1234", "\n".join(logs.output))

    @override_settings(MAILSERVICE_WEBHOOK_MAX_AGE=300)
    def test_signed_events_older_than_the_max_age_are_refused(self):
        """With MAILSERVICE_WEBHOOK_MAX_AGE set, an old (replayed) Mailgun signature is refused."""
        import time

        response = mailgun_post(
            self.client,
            mailgun_event("delivered", "a@example.net", "<x@mg>"),
            timestamp=int(time.time()) - 3600,
        )
        self.assertEqual(response.status_code, 400)
        self.assertFalse(TrackingEvent.objects.exists())
        fresh = mailgun_post(self.client, mailgun_event("delivered", "a@example.net", "<x@mg>"))
        self.assertEqual(fresh.status_code, 200)

    @override_settings(MAILSERVICE_WEBHOOK_MAX_AGE=300)
    def test_unreadable_body_with_a_max_age_is_a_json_4xx(self):
        """The age check reads the body before Anymail: a body nested past the parser's depth is
        Anymail's to refuse (JSON 400), never a 500 page."""
        response = self.client.post(
            "/anymail/mailgun/tracking/", "[" * 200000, content_type="application/json"
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response["Content-Type"], "application/json")

    def test_old_signed_events_are_accepted_by_default(self):
        """No maximum age by default: providers retry failed posts for hours."""
        import time

        response = mailgun_post(
            self.client,
            mailgun_event("delivered", "a@example.net", "<x@mg>"),
            timestamp=int(time.time()) - 6 * 3600,
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(TrackingEvent.objects.count(), 1)


class MalformedBodyTests(WebhookTestCase):
    def test_sendgrid_body_that_is_not_json_is_a_400(self):
        """Garbage from SendGrid's URL is answered 400 and nothing is stored."""
        from tests.webhooks.payloads import SENDGRID_URL, basic_auth

        response = self.client.post(
            SENDGRID_URL, data="{not json", content_type="application/json", **basic_auth()
        )
        self.assertEqual(response.status_code, 400)
        self.assertFalse(TrackingEvent.objects.exists())

    def test_mailgun_body_without_event_data_is_a_400(self):
        """A correctly signed Mailgun post without event-data stores nothing."""
        import json

        from tests.webhooks.payloads import MAILGUN_URL, basic_auth, mailgun_body

        body = json.loads(mailgun_body({}))
        del body["event-data"]
        response = self.client.post(
            MAILGUN_URL, data=json.dumps(body), content_type="application/json", **basic_auth()
        )
        self.assertEqual(response.status_code, 400)
        self.assertFalse(TrackingEvent.objects.exists())

    def test_mandrill_events_that_are_not_json_are_a_400(self):
        """A signed Mandrill post whose mandrill_events is not JSON stores nothing."""
        import base64
        import hashlib
        import hmac
        from urllib.parse import urlencode

        from tests.webhooks.payloads import MANDRILL_URL, MANDRILL_WEBHOOK_KEY, WEBHOOK_SECRET, basic_auth

        params = {"mandrill_events": "[{broken"}
        signed = (
            f"http://{WEBHOOK_SECRET}@testserver"
            + MANDRILL_URL
            + "mandrill_events"
            + params["mandrill_events"]
        )
        signature = base64.b64encode(
            hmac.new(MANDRILL_WEBHOOK_KEY.encode(), signed.encode(), hashlib.sha1).digest()
        )
        response = self.client.post(
            MANDRILL_URL,
            data=urlencode(params),
            content_type="application/x-www-form-urlencoded",
            HTTP_X_MANDRILL_SIGNATURE=signature.decode(),
            **basic_auth(),
        )
        self.assertEqual(response.status_code, 400)
        self.assertFalse(TrackingEvent.objects.exists())


class LinkingAndStatusTests(WebhookTestCase):
    def test_sendgrid_delivered_is_linked_and_delivers(self):
        """SendGrid's delivered event finds its recipient by anymail_id and marks it delivered."""
        message = sent_message("a@example.net")
        response = sendgrid_post(
            self.client, [sendgrid_event("delivered", "a@example.net", "id-a@example.net")]
        )
        self.assertEqual(response.status_code, 200)
        event = TrackingEvent.objects.get()
        self.assertEqual(
            (event.provider, event.event_type, event.message_id), ("sendgrid", "delivered", message.pk)
        )
        self.assert_status(message, "delivered", "delivered")

    def test_mailgun_event_links_through_the_message_id(self):
        """Mailgun has one id per message: the event finds the recipient by message id and address."""
        message = sent_message("a@example.net", "b@example.net", provider="mailgun", per_recipient_ids=False)
        mailgun_post(self.client, mailgun_event("delivered", "B@Example.net", "<msg-1@mg.example.com>"))
        statuses = dict(message.recipients.values_list("email", "status"))
        self.assertEqual(statuses, {"a@example.net": "sent", "b@example.net": "delivered"})
        message.refresh_from_db()
        self.assertEqual(message.status, "sent")  # the least advanced recipient

    def test_event_fields_are_stored(self):
        """Type, timestamp, recipient, description, MTA response and the raw event are kept."""
        sent_message("a@example.net", provider="mandrill")
        mandrill_post(self.client, [mandrill_event("hard_bounce", "a@example.net", "id-a@example.net")])
        event = TrackingEvent.objects.get()
        self.assertEqual(event.event_type, "bounced")
        self.assertEqual(event.recipient, "a@example.net")
        self.assertIsNotNone(event.timestamp)
        self.assertEqual(event.mta_response, "smtp;550 5.1.1")
        self.assertEqual(event.raw["event"], "hard_bounce")
        self.assertTrue(event.event_id.startswith("sha256:"))

    def test_bounce_wins_over_an_earlier_delivered(self):
        """An asynchronous bounce after delivered moves the recipient to bounced."""
        message = sent_message("a@example.net")
        sendgrid_post(self.client, [sendgrid_event("delivered", "a@example.net", "id-a@example.net")])
        sendgrid_post(self.client, [sendgrid_event("bounce", "a@example.net", "id-a@example.net")])
        self.assert_status(message, "bounced", "bounced")

    def test_late_delivered_never_replaces_a_bounce(self):
        """Out of order: bounced first, then delivered: it stays bounced."""
        message = sent_message("a@example.net")
        sendgrid_post(self.client, [sendgrid_event("bounce", "a@example.net", "id-a@example.net")])
        sendgrid_post(self.client, [sendgrid_event("delivered", "a@example.net", "id-a@example.net")])
        self.assert_status(message, "bounced", "bounced")
        self.assertEqual(TrackingEvent.objects.count(), 2)

    def test_engagement_and_deferral_are_recorded_without_changing_status(self):
        """opened, clicked and deferred are stored; the recipient stays where it was."""
        message = sent_message("a@example.net")
        sendgrid_post(self.client, [sendgrid_event("delivered", "a@example.net", "id-a@example.net")])
        sendgrid_post(
            self.client,
            [
                sendgrid_event("open", "a@example.net", "id-a@example.net"),
                sendgrid_event("click", "a@example.net", "id-a@example.net", url="https://x.test"),
                sendgrid_event("deferred", "a@example.net", "id-a@example.net"),
            ],
        )
        self.assert_status(message, "delivered", "delivered")
        self.assertEqual(TrackingEvent.objects.count(), 4)

    def test_mandrill_send_event_means_delivered(self):
        """Mandrill has no delivered event: its `send` (the receiving server took it) delivers."""
        message = sent_message("a@example.net", provider="mandrill")
        mandrill_post(self.client, [mandrill_event("send", "a@example.net", "id-a@example.net")])
        self.assertEqual(TrackingEvent.objects.get().event_type, "sent")
        self.assert_status(message, "delivered", "delivered")

    def test_complaint_after_delivery_marks_complained(self):
        """A later spam complaint wins over delivered."""
        message = sent_message("a@example.net", provider="mailgun", per_recipient_ids=False)
        mailgun_post(self.client, mailgun_event("delivered", "a@example.net", "<msg-1@mg.example.com>"))
        mailgun_post(self.client, mailgun_event("complained", "a@example.net", "<msg-1@mg.example.com>"))
        self.assert_status(message, "complained", "complained")

    def test_mixed_final_outcomes_make_the_message_partially_delivered(self):
        """One recipient delivered, one bounced: partially_delivered."""
        message = sent_message("a@example.net", "b@example.net")
        sendgrid_post(
            self.client,
            [
                sendgrid_event("delivered", "a@example.net", "id-a@example.net"),
                sendgrid_event("bounce", "b@example.net", "id-b@example.net"),
            ],
        )
        message.refresh_from_db()
        self.assertEqual(message.status, "partially_delivered")
        self.assertIsNotNone(message.finished_at)

    def test_unknown_message_ids_are_kept_unlinked(self):
        """An event for a message we never sent is stored with no message."""
        response = sendgrid_post(self.client, [sendgrid_event("delivered", "x@example.net", "never-sent")])
        self.assertEqual(response.status_code, 200)
        self.assertIsNone(TrackingEvent.objects.get().message_id)


class DeduplicationTests(WebhookTestCase):
    def test_same_event_posted_twice_is_stored_once(self):
        """A provider retrying a post (same sg_event_id) adds nothing the second time."""
        event = sendgrid_event("delivered", "a@example.net", "id-a", sg_event_id="evt-1")
        sendgrid_post(self.client, [event])
        response = sendgrid_post(self.client, [event])
        self.assertEqual(response.status_code, 200)
        self.assertEqual(TrackingEvent.objects.count(), 1)

    def test_duplicate_within_one_batch_is_stored_once(self):
        """The same event twice in one post is one row."""
        event = sendgrid_event("delivered", "a@example.net", "id-a", sg_event_id="evt-2")
        sendgrid_post(self.client, [event, event])
        self.assertEqual(TrackingEvent.objects.count(), 1)

    def test_mandrill_events_without_ids_deduplicate_on_their_content(self):
        """Mandrill sends no event id: the same raw event posted twice is stored once."""
        event = mandrill_event("send", "a@example.net", "md-1")
        mandrill_post(self.client, [event])
        mandrill_post(self.client, [event])
        self.assertEqual(TrackingEvent.objects.count(), 1)

    def test_concurrent_insert_of_the_same_event_is_absorbed_by_the_constraint(self):
        """If another request stores the event between our check and our insert, the unique
        constraint keeps one row and the post still succeeds."""
        from mailservice.services import tracking as tracking_service

        event = sendgrid_event("bounce", "a@example.net", "id-a", sg_event_id="evt-race")
        sendgrid_post(self.client, [event])
        original_filter = TrackingEvent.objects.filter

        def blind_first_check(*args, **kwargs):
            # Simulate the race: the duplicate check sees nothing although the row exists.
            if "event_id__in" in kwargs and not getattr(blind_first_check, "used", False):
                blind_first_check.used = True
                return TrackingEvent.objects.none()
            return original_filter(*args, **kwargs)

        with mock.patch.object(
            tracking_service.TrackingEvent.objects, "filter", side_effect=blind_first_check
        ):
            response = sendgrid_post(self.client, [event])
        self.assertEqual(response.status_code, 200)
        self.assertEqual(TrackingEvent.objects.count(), 1)
        self.assertEqual(Suppression.objects.count(), 1)


class SuppressionTests(WebhookTestCase):
    def assert_suppressed(self, address: str, reason: str, provider: str):
        suppression = Suppression.objects.get(address=address)
        self.assertEqual((suppression.reason, suppression.provider), (reason, provider))
        self.assertIsNotNone(suppression.event_id)

    def test_sendgrid_hard_bounce_suppresses(self):
        """A SendGrid bounce adds the address, lowercased, with reason and provider."""
        sendgrid_post(self.client, [sendgrid_event("bounce", "Jane@Example.NET", "id-x")])
        self.assert_suppressed("jane@example.net", "bounced", "sendgrid")

    def test_mailgun_complaint_suppresses(self):
        """A Mailgun complaint adds the address."""
        mailgun_post(self.client, mailgun_event("complained", "a@example.net", "<m@mg>"))
        self.assert_suppressed("a@example.net", "complained", "mailgun")

    def test_mandrill_unsubscribe_suppresses_without_changing_status(self):
        """An unsubscribe suppresses the address; the recipient's status stays."""
        message = sent_message("a@example.net", provider="mandrill")
        mandrill_post(self.client, [mandrill_event("unsub", "a@example.net", "id-a@example.net")])
        self.assert_suppressed("a@example.net", "unsubscribed", "mandrill")
        self.assert_status(message, "sent", "sent")

    def test_mandrill_hard_bounce_suppresses(self):
        """Mandrill's hard_bounce suppresses."""
        mandrill_post(self.client, [mandrill_event("hard_bounce", "a@example.net", "md-1")])
        self.assert_suppressed("a@example.net", "bounced", "mandrill")

    def test_soft_bounces_do_not_suppress(self):
        """Mailgun temporary failures, Mandrill soft_bounce and SendGrid blocks leave the list alone."""
        mailgun_post(self.client, mailgun_event("failed", "a@example.net", "<m@mg>", severity="temporary"))
        mandrill_post(self.client, [mandrill_event("soft_bounce", "b@example.net", "md-2")])
        sendgrid_post(self.client, [sendgrid_event("bounce", "c@example.net", "id-c", type="blocked")])
        self.assertEqual(TrackingEvent.objects.count(), 3)
        self.assertFalse(Suppression.objects.exists())

    def test_an_address_suppressed_once_stays_one_entry(self):
        """Bounce from one provider, complaint from another: one entry, the first reason."""
        sendgrid_post(self.client, [sendgrid_event("bounce", "a@example.net", "id-a")])
        mailgun_post(self.client, mailgun_event("complained", "a@example.net", "<m@mg>"))
        self.assertEqual(Suppression.objects.count(), 1)
        self.assert_suppressed("a@example.net", "bounced", "sendgrid")

    def test_events_for_unknown_messages_still_suppress(self):
        """A bounce for a message sent before the gateway existed still protects the address."""
        sendgrid_post(self.client, [sendgrid_event("bounce", "old@example.net", "unknown-id")])
        self.assertTrue(Suppression.objects.filter(address="old@example.net").exists())


class BatchTests(WebhookTestCase):
    def post_batch(self, size: int) -> int:
        for i in range(size):
            Recipient.objects.create(
                message=sent_message() if i == 0 else Message.objects.first(),
                kind="to",
                position=i,
                address=f"u{i}@example.net",
                email=f"u{i}@example.net",
                status="sent",
                provider_message_id=f"b{size}-{i}",
            )
        events = [
            sendgrid_event("bounce" if i % 10 == 0 else "delivered", f"u{i}@example.net", f"b{size}-{i}")
            for i in range(size)
        ]
        with CaptureQueriesContext(connection) as queries:
            response = sendgrid_post(self.client, events)
        self.assertEqual(response.status_code, 200)
        return len(queries)

    def test_a_thousand_event_batch_is_stored_with_a_fixed_number_of_queries(self):
        """1,000 SendGrid events cost no more queries than 10: no query per event."""
        small = self.post_batch(10)
        TrackingEvent.objects.all().delete()
        Suppression.objects.all().delete()
        Message.objects.all().delete()
        large = self.post_batch(1000)
        self.assertEqual(TrackingEvent.objects.count(), 1000)
        self.assertEqual(Suppression.objects.count(), 100)
        self.assertEqual(Recipient.objects.filter(status="delivered").count(), 900)
        # Bulk statements may be split into chunks by the database's parameter limit, but
        # nothing is done once per event: 1,000 events stay within a few dozen queries.
        self.assertLess(large, 40)
        self.assertLess(large - small, 30)


class ForwardOnlyRuleTests(TestCase):
    def test_status_order(self):
        """delivered advances sent; failures advance delivered; nothing moves back or sideways."""
        from mailservice.statuses import advances

        self.assertTrue(advances("sent", "delivered"))
        self.assertTrue(advances("delivered", "bounced"))
        self.assertTrue(advances("delivered", "complained"))
        self.assertFalse(advances("bounced", "delivered"))
        self.assertFalse(advances("bounced", "complained"))
        self.assertFalse(advances("delivered", "delivered"))
