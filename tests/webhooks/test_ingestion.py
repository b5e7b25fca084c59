"""Recording a post at volume (docs/webhooks.md, "Batches and performance"): each event checked
and serialized once, one INSERT … ON CONFLICT DO NOTHING that never drops a row quietly, linking
per recipient then per message, and the same answers on a database without that statement."""

import hashlib
import json
from unittest import mock

from anymail.signals import AnymailTrackingEvent
from django.db import DataError, IntegrityError
from django.test import SimpleTestCase

from mailservice.models import Suppression, TrackingEvent
from mailservice.services import tracking as tracking_service
from mailservice.services.storable import CheckedEvent, EventNotStorable, storable_event
from tests.webhooks import payloads
from tests.webhooks.base import WebhookTestCase, sent_message


def event_with(raw) -> AnymailTrackingEvent:
    return AnymailTrackingEvent(
        event_type="delivered", event_id="e-1", recipient="a@example.net", esp_event=raw
    )


class RawEventTests(SimpleTestCase):
    """The raw event is serialized once, as strict JSON every database stores."""

    def test_the_stored_text_is_compact_json_with_non_ascii_kept(self):
        checked = storable_event(event_with({"subject": "Grüße 😀", "n": [1, 2.5]}))
        self.assertEqual(checked.raw_json, '{"subject":"Grüße 😀","n":[1,2.5]}')

    def test_what_no_database_stores_is_refused_with_the_reason(self):
        cases = {
            "not finite": {"timestamp": float("inf")},
            "NUL character": {"bad\x00key": 1},
            "not valid Unicode": {"text": "lone \ud800 surrogate"},
        }
        for reason, raw in cases.items():
            with self.subTest(reason), self.assertRaisesRegex(EventNotStorable, reason):
                storable_event(event_with(raw))

    def test_a_backslash_before_u0000_is_text_not_a_nul(self):
        """JSON writes NUL as \\u0000; a literal backslash followed by "u0000" only looks like it."""
        checked = storable_event(event_with({"path": "C:\\u0000dir"}))
        self.assertEqual(json.loads(checked.raw_json), {"path": "C:\\u0000dir"})

    def test_what_json_cannot_say_is_kept_as_its_repr(self):
        """A circular structure or a key JSON refuses: stored as text, not refused."""
        circular: dict = {"a": 1}
        circular["self"] = circular
        for raw in (circular, {(1, 2): "tuple key"}):
            with self.subTest(repr(raw)[:20]):
                stored = json.loads(storable_event(event_with(raw)).raw_json)
                self.assertEqual(list(stored), ["repr"])

    def test_objects_json_has_no_form_for_become_strings(self):
        raw = {"when": __import__("datetime").date(2026, 11, 26)}
        self.assertEqual(json.loads(storable_event(event_with(raw)).raw_json), {"when": "2026-11-26"})


class CheckedOnceTests(WebhookTestCase):
    def test_each_event_of_a_post_is_checked_once(self):
        """The view checks every event (to name a bad one by its index); recording reuses that."""
        events = [payloads.sendgrid_event("delivered", f"u{i}@example.net", f"id-{i}") for i in range(3)]
        in_view = mock.patch("mailservice.webhooks.storable_event", wraps=storable_event)
        again = mock.patch.object(tracking_service, "storable_event", wraps=storable_event)
        with in_view as in_view, again as again:
            response = payloads.sendgrid_post(self.client, events)
        self.assertEqual(response.json()["stored"], 3)
        self.assertEqual((in_view.call_count, again.call_count), (3, 0))

    def test_events_recorded_outside_a_view_are_checked_there(self):
        """Anymail's signal sent by other code: recording checks, logs and skips by itself."""
        good = event_with({"event": "delivered"})
        bad = AnymailTrackingEvent(event_type="delivered", event_id="e-2", recipient=["a", "b"], esp_event={})
        with self.assertLogs("mailservice.services.tracking", "WARNING") as logs:
            result = tracking_service.tracking_events_record(provider="sendgrid", events=[good, bad])
        self.assertEqual((result.stored, result.skipped), (1, 1))
        self.assertIn("index=1 reason=the recipient is a list", logs.output[0])


class InsertTests(WebhookTestCase):
    def test_a_row_the_json_check_refuses_fails_the_batch(self):
        """INSERT OR IGNORE once dropped such a row and reported it stored; ON CONFLICT DO NOTHING
        skips only a taken event id, so the database's refusal is an error (a 500, retried)."""
        forged = CheckedEvent(event_with({}), raw_json="{not json")
        # SQLite's JSON check raises IntegrityError, PostgreSQL's jsonb input DataError.
        with self.assertRaises((IntegrityError, DataError)):
            tracking_service.tracking_events_record(provider="sendgrid", events=[forged])
        self.assertFalse(TrackingEvent.objects.exists())

    def test_an_event_stored_by_a_concurrent_post_counts_as_a_duplicate(self):
        """Another post stores the same event while this one links: one row, this post's answer
        says duplicate, and the event is not applied twice."""
        event = payloads.sendgrid_event("bounce", "a@example.net", "id-a", sg_event_id="evt-race")
        link = tracking_service.tracking_events_link

        def link_while_another_post_stores(rows):
            link(rows)
            TrackingEvent.objects.create(provider="sendgrid", event_id="evt-race", event_type="bounced")

        with mock.patch.object(
            tracking_service, "tracking_events_link", side_effect=link_while_another_post_stores
        ):
            response = payloads.sendgrid_post(self.client, [event])
        answer = response.json()
        self.assertEqual((response.status_code, answer["stored"], answer["duplicates"]), (200, 0, 1))
        self.assertEqual(TrackingEvent.objects.count(), 1)
        self.assertFalse(Suppression.objects.exists())  # the other post's to add

    def test_mandrill_event_ids_are_the_hash_they_always_were(self):
        """Mandrill's events are keyed on a hash of the raw event: changing its input would store
        a retried event a second time."""
        event = payloads.mandrill_event("send", "a@example.net", "md-1")
        payloads.mandrill_post(self.client, [event])
        decoded = json.loads(json.dumps(event, default=str))
        canonical = json.dumps(decoded, sort_keys=True, separators=(",", ":"))
        expected = "sha256:" + hashlib.sha256(f"mandrill\0{canonical}".encode()).hexdigest()
        self.assertEqual(TrackingEvent.objects.get().event_id, expected)


class LinkPerMessageTests(WebhookTestCase):
    """A send recorded on the message only (no id on its recipients) still links its events."""

    def setUp(self):
        self.message = sent_message("a@example.net", provider="mailgun", per_recipient_ids=False)
        self.message.recipients.update(provider_message_id="")  # recorded on the message only
        self.recipient = self.message.recipients.get()

    def test_the_address_picks_the_recipient_of_the_message(self):
        payloads.mailgun_post(
            self.client, payloads.mailgun_event("delivered", "A@Example.net", "<msg-1@mg.example.com>")
        )
        event = TrackingEvent.objects.get()
        self.assertEqual((event.message_id, event.message_recipient_id), (self.message.pk, self.recipient.pk))
        self.recipient.refresh_from_db()
        self.assertEqual(self.recipient.status, "delivered")

    def test_an_address_the_message_did_not_have_links_to_the_message_alone(self):
        payloads.mailgun_post(
            self.client, payloads.mailgun_event("delivered", "other@example.net", "<msg-1@mg.example.com>")
        )
        event = TrackingEvent.objects.get()
        self.assertEqual((event.message_id, event.message_recipient_id), (self.message.pk, None))
        self.recipient.refresh_from_db()
        self.assertEqual(self.recipient.status, "sent")
