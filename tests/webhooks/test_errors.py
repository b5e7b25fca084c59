"""Errors the ESP can act on: a bad event is skipped (logged) and its batch recorded; a post that
can never succeed is a 4xx; a failure on our side is a 5xx (the ESP retries); always JSON."""

import json
from unittest import mock

from anymail.signals import AnymailTrackingEvent
from django.db import OperationalError
from django.test import TestCase, override_settings

from mailservice.models import TrackingEvent
from mailservice.services import tracking as tracking_service
from tests.webhooks.payloads import (
    SENDGRID_URL,
    WEBHOOK_PROVIDERS,
    WEBHOOK_SETTINGS,
    basic_auth,
    mailgun_event,
    mailgun_post,
    mandrill_event,
    mandrill_post,
    sendgrid_event,
)

BAD_EVENTS = {
    "a timestamp of 1e20": {"timestamp": 1e20},
    "an email that is a list": {"email": ["a@example.net", "b@example.net"]},
    "a NaN timestamp": {"timestamp": float("nan")},
    "an Infinity timestamp": {"timestamp": float("inf")},
    "a timestamp that is text": {"timestamp": "yesterday"},
    "no event name": {"event": None},
    "a NUL character": {"reason": "bad\x00byte"},
    "an event that is not an object": None,
}


def post_raw(client, body: str):
    return client.post(SENDGRID_URL, data=body, content_type="application/json", **basic_auth())


@override_settings(ANYMAIL=WEBHOOK_SETTINGS, MAILSERVICE_WEBHOOK_PROVIDERS=WEBHOOK_PROVIDERS)
class BadEventTests(TestCase):
    def batch_with(self, bad: dict | None) -> list:
        good = [sendgrid_event("delivered", f"good{i}@example.net", f"id-{i}") for i in range(2)]
        if bad is None:
            bad_event = "just a string"
        else:
            bad_event = {**sendgrid_event("delivered", "bad@example.net", "id-bad"), **bad}
            bad_event = {key: value for key, value in bad_event.items() if value is not None}
        return [good[0], bad_event, good[1]]

    def test_one_bad_event_is_skipped_and_the_others_recorded(self):
        """Each kind of bad event: 200, the two good events stored, the bad one logged (provider,
        index, reason) and listed in the JSON answer."""
        for name, bad in BAD_EVENTS.items():
            with self.subTest(name):
                TrackingEvent.objects.all().delete()
                body = json.dumps(
                    self.batch_with(bad)
                )  # NaN/Infinity as JavaScript literals, as a sloppy sender would
                with self.assertLogs("mailservice.webhooks", "WARNING") as logs:
                    response = post_raw(self.client, body)
                self.assertEqual(response.status_code, 200, response.content)
                self.assertEqual(response["Content-Type"], "application/json")
                answer = response.json()
                self.assertEqual((answer["received"], answer["stored"]), (3, 2))
                self.assertEqual([skipped["index"] for skipped in answer["skipped"]], [1])
                self.assertEqual(
                    sorted(TrackingEvent.objects.values_list("recipient", flat=True)),
                    ["good0@example.net", "good1@example.net"],
                )
                self.assertIn("webhook event skipped provider=sendgrid index=1 reason=", logs.output[0])
                self.assertNotIn("hook-password", "\n".join(logs.output))

    def test_nan_timestamp_is_never_stored_silently(self):
        """Before: 200, `stored=1` logged, no row (SQLite's INSERT OR IGNORE dropped the row its
        JSON check refused). Now the event is refused before the insert and said so."""
        event = AnymailTrackingEvent(
            event_type="delivered",
            timestamp=None,
            event_id="nan-1",
            recipient="a@example.net",
            esp_event={"timestamp": float("nan")},
        )
        with self.assertLogs("mailservice.services.tracking", "WARNING") as logs:
            result = tracking_service.tracking_events_record(provider="sendgrid", events=[event])
        self.assertEqual((result.stored, result.skipped), (0, 1))
        self.assertIn("not finite", logs.output[0])
        self.assertFalse(TrackingEvent.objects.exists())

    def test_rows_lost_by_the_insert_fail_the_batch(self):
        """If the insert ever drops a row that passed the checks, the post fails (5xx) and
        nothing of it is kept: the ESP retries instead of the event vanishing."""
        insert = tracking_service.insert_new_rows

        def insert_dropping_one(model, columns, rows, **kwargs):
            return insert(model, columns, rows[1:], **kwargs)

        with mock.patch.object(tracking_service, "insert_new_rows", side_effect=insert_dropping_one):
            with self.assertLogs("mailservice.webhooks", "ERROR") as logs:
                response = post_raw(self.client, json.dumps(self.batch_with({})))
        self.assertEqual(response.status_code, 500)
        self.assertIn("EventsLost", "\n".join(logs.output))
        self.assertFalse(TrackingEvent.objects.exists())

    def test_a_post_whose_every_event_is_unreadable_is_a_400(self):
        """Nothing in it could ever be stored: 400 with the reasons, nothing stored."""
        with self.assertLogs("mailservice.webhooks", "WARNING"):
            response = post_raw(self.client, json.dumps([{"email": "x@example.net"}, "text"]))
        self.assertEqual(response.status_code, 400)
        self.assertEqual([skipped["index"] for skipped in response.json()["skipped"]], [0, 1])
        self.assertFalse(TrackingEvent.objects.exists())

    def test_bodies_that_are_not_the_esps_are_a_400(self):
        """Not JSON, not a list, a number, an object: 400 JSON, nothing stored."""
        for body in ("{not json", "42", '{"email": "a@example.net", "event": "delivered"}', '"text"'):
            with self.subTest(body), self.assertLogs("mailservice.webhooks", "WARNING"):
                response = post_raw(self.client, body)
                self.assertEqual(response.status_code, 400)
                self.assertEqual(response["Content-Type"], "application/json")
        self.assertFalse(TrackingEvent.objects.exists())

    def test_a_body_over_the_size_limit_is_a_413(self):
        body = json.dumps([sendgrid_event("delivered", f"u{i}@example.net", f"id-{i}") for i in range(20)])
        with (
            override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000),
            self.assertLogs("mailservice.webhooks", "WARNING"),
        ):
            response = post_raw(self.client, body)
        self.assertEqual((response.status_code, response["Content-Type"]), (413, "application/json"))
        self.assertFalse(TrackingEvent.objects.exists())

    def test_an_empty_batch_is_fine(self):
        response = post_raw(self.client, "[]")
        self.assertEqual((response.status_code, response.json()["received"]), (200, 0))

    def test_mailgun_event_with_a_huge_timestamp_is_refused_alone(self):
        """Mailgun posts one event: unreadable, the post is a 400 (it can never succeed)."""
        with self.assertLogs("mailservice.webhooks", "WARNING"):
            response = mailgun_post(
                self.client, mailgun_event("delivered", "a@example.net", "<m@mg>", timestamp=1e20)
            )
        self.assertEqual(response.status_code, 400)
        self.assertFalse(TrackingEvent.objects.exists())

    def test_mandrill_batch_with_one_bad_event(self):
        """Mandrill batches too: the bad event (a recipient that is a number) is skipped."""
        bad = mandrill_event("send", "b@example.net", "md-2")
        bad["msg"]["email"] = 12
        with self.assertLogs("mailservice.webhooks", "WARNING"):
            response = mandrill_post(self.client, [mandrill_event("send", "a@example.net", "md-1"), bad])
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["skipped"][0]["reason"], "the recipient is a int, not a string")
        self.assertEqual(list(TrackingEvent.objects.values_list("recipient", flat=True)), ["a@example.net"])


@override_settings(ANYMAIL=WEBHOOK_SETTINGS, MAILSERVICE_WEBHOOK_PROVIDERS=WEBHOOK_PROVIDERS)
class OurFailureTests(TestCase):
    def post(self):
        return post_raw(self.client, json.dumps([sendgrid_event("delivered", "a@example.net", "id-a")]))

    def test_a_bug_in_our_recording_is_a_500_not_a_400(self):
        """A TypeError in our code: 500 JSON, so the ESP retries; before, it was a 400 and lost."""
        with mock.patch("mailservice.webhooks.tracking_events_record", side_effect=TypeError("our bug")):
            with self.assertLogs("mailservice.webhooks", "ERROR") as logs:
                response = self.post()
        self.assertEqual(response.status_code, 500)
        self.assertEqual(response["Content-Type"], "application/json")
        self.assertIn("retry", response.json()["errors"][0]["message"])
        self.assertIn("Traceback", "\n".join(logs.output))

    def test_a_bug_deep_in_recording_rolls_the_batch_back(self):
        """A failure after the insert (our status update) leaves no event behind."""
        with mock.patch.object(tracking_service, "_advance_recipients", side_effect=KeyError("status")):
            with self.assertLogs("mailservice.webhooks", "ERROR"):
                response = self.post()
        self.assertEqual(response.status_code, 500)
        self.assertFalse(TrackingEvent.objects.exists())

    def test_database_down_is_a_503_with_retry_after(self):
        with mock.patch("mailservice.webhooks.tracking_events_record", side_effect=OperationalError("down")):
            with self.assertLogs("mailservice.webhooks", "ERROR"):
                response = self.post()
        self.assertEqual(response.status_code, 503)
        self.assertIn("Retry-After", response)

    def test_a_bug_in_another_signal_receiver_is_a_500(self):
        """Receivers of Anymail's signal run on our side: their failure is ours too."""
        from anymail.signals import tracking

        def broken(sender, event, esp_name, **kwargs):
            raise AttributeError("receiver bug")

        tracking.connect(broken, weak=False, dispatch_uid="test-broken")
        self.addCleanup(tracking.disconnect, dispatch_uid="test-broken")
        with self.assertLogs("mailservice.webhooks", "ERROR"):
            response = self.post()
        self.assertEqual(response.status_code, 500)
        self.assertFalse(TrackingEvent.objects.exists())

    def test_success_is_json(self):
        response = self.post()
        self.assertEqual(response["Content-Type"], "application/json")
        self.assertEqual(response.json(), {"received": 1, "stored": 1, "duplicates": 0, "skipped": []})
