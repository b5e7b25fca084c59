"""The Anymail internals that mailservice/anymail_adapter.py relies on, as django-anymail 15.2 has
them: each test names the part it covers, so an upgrade that changes one fails here, plainly,
rather than as a wrong answer from a webhook. Read the adapter's module docstring again before
upgrading Anymail."""

import importlib.metadata
import json
from unittest import mock

from anymail.signals import AnymailTrackingEvent, tracking
from django.test import RequestFactory, SimpleTestCase, override_settings

from mailservice import anymail_adapter
from mailservice.anymail_adapter import MalformedPost, checked_view, collecting, tracking_views
from tests.webhooks.payloads import SENDGRID_URL, WEBHOOK_SETTINGS, basic_auth, sendgrid_event

WRITTEN_AGAINST = "15.2"


def sendgrid_request(body: str):
    return RequestFactory().post(SENDGRID_URL, data=body, content_type="application/json", **basic_auth())


class VersionTests(SimpleTestCase):
    def test_written_against_django_anymail_15_2(self):
        """The adapter reads Anymail's webhook internals as django-anymail 15.2 has them: on
        another version, read anymail/webhooks/base.py and anymail/urls.py against the list in
        anymail_adapter.py's docstring, then change WRITTEN_AGAINST."""
        version = importlib.metadata.version("django-anymail")
        self.assertEqual(".".join(version.split(".")[:2]), WRITTEN_AGAINST, version)


class UrlTests(SimpleTestCase):
    def test_tracking_endpoints_are_found_by_their_url_names(self):
        """`<esp>_tracking_webhook` names every tracking endpoint, and `mandrill_webhook` Mandrill's
        combined one; inbound endpoints are left out."""
        views = tracking_views()
        self.assertLessEqual({"sendgrid", "mailgun", "mandrill", "amazonses", "postmark"}, set(views))
        names = [pattern.name for pattern in anymail_adapter.tracking_patterns()]
        self.assertFalse([name for name in names if "inbound" in name], names)

    def test_each_view_has_its_class_and_esp_name(self):
        """as_view() keeps `view_class`, whose `esp_name` names the ESP."""
        for esp, callback in tracking_views().items():
            with self.subTest(esp):
                self.assertIsInstance(callback.view_class.esp_name, str)


class ViewStepTests(SimpleTestCase):
    def test_the_overridden_steps_exist_on_anymails_views(self):
        """`run_validators` and `parse_events` on every view, `esp_to_anymail_event` on the
        batch ESPs': the methods the checked view class overrides."""
        for esp, callback in tracking_views().items():
            with self.subTest(esp):
                self.assertTrue(callable(getattr(callback.view_class, "run_validators", None)))
                self.assertTrue(callable(getattr(callback.view_class, "parse_events", None)))
        for esp in ("sendgrid", "mailgun", "mandrill"):
            with self.subTest(esp):
                view_class = tracking_views()[esp].view_class
                self.assertTrue(callable(getattr(view_class, "esp_to_anymail_event", None)))

    @override_settings(ANYMAIL=WEBHOOK_SETTINGS)
    def test_a_body_anymail_cannot_read_is_a_malformed_post(self):
        """An exception from Anymail's parse_events becomes MalformedPost."""
        view = checked_view(tracking_views()["sendgrid"])
        with collecting(screen=lambda event: event), self.assertRaises(MalformedPost):
            view(sendgrid_request("{not json"))


@override_settings(ANYMAIL=WEBHOOK_SETTINGS)
class SignalTests(SimpleTestCase):
    def test_each_event_reaches_the_post_as_screened_matched_by_identity(self):
        """Anymail's signal carries, per event, the very object parse_events returned, within
        the request's context: the post gets what `screen` made of each, in order."""
        events = [
            sendgrid_event("delivered", f"u{i}@example.net", f"id-{i}", sg_event_id=f"e{i}") for i in range(2)
        ]
        view = checked_view(tracking_views()["sendgrid"])
        with collecting(screen=lambda event: ("screened", event.event_id)) as post:
            response = view(sendgrid_request(json.dumps(events)))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(post.events, [("SendGrid", ("screened", "e0")), ("SendGrid", ("screened", "e1"))])
        self.assertEqual((post.parsed, post.skipped), (2, []))

    def test_one_event_anymail_cannot_parse_is_skipped_not_the_batch(self):
        """An exception from esp_to_anymail_event skips that event, by its index."""
        events = [sendgrid_event("delivered", "a@example.net", "id-a"), {"timestamp": 1e20}]
        view = checked_view(tracking_views()["sendgrid"])
        with collecting(screen=lambda event: event) as post:
            view(sendgrid_request(json.dumps(events)))
        self.assertEqual((post.parsed, [skipped["index"] for skipped in post.skipped]), (1, [1]))

    def test_outside_a_post_the_signal_records_the_event_at_once(self):
        """Anymail's signal sent by other code: the receiver records the event by itself."""
        event = AnymailTrackingEvent(event_type="delivered", event_id="e-1", recipient="a@example.net")
        with mock.patch.object(anymail_adapter, "tracking_events_record") as record:
            tracking.send(sender=None, event=event, esp_name="SendGrid")
        record.assert_called_once_with(provider="SendGrid", events=[event])


class BackendTests(SimpleTestCase):
    def test_the_esp_of_a_sending_backend(self):
        """An Anymail backend's `esp_name`; the module of one that cannot be imported; None for
        a backend that is not Anymail's."""
        esp_of = anymail_adapter.backend_esp_name
        self.assertEqual(esp_of("anymail.backends.sendgrid.EmailBackend"), "SendGrid")
        self.assertEqual(esp_of("anymail.backends.nosuchesp.EmailBackend"), "nosuchesp")
        self.assertIsNone(esp_of("django.core.mail.backends.smtp.EmailBackend"))
