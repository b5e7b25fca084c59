"""The per-ESP tracking table: each provider's quirks, and the plain rules every other ESP gets."""

from anymail.signals import AnymailTrackingEvent, EventType
from django.test import RequestFactory, SimpleTestCase

from failover.providers import normalize_name
from mailservice.tracking_rules import DEFAULT_RULES, RULES, rules_for


def bounce(raw: dict) -> AnymailTrackingEvent:
    return AnymailTrackingEvent(event_type=EventType.BOUNCED, esp_event=raw)


class TrackingRulesTests(SimpleTestCase):
    def test_names_are_normalized_as_failover_names_providers(self):
        """Anymail's esp_name ("SendGrid", "Amazon SES") finds the entry failover's name would."""
        self.assertIs(rules_for("SendGrid"), RULES["sendgrid"])
        self.assertEqual(normalize_name("Amazon SES"), "amazonses")
        self.assertEqual(normalize_name("amazon_ses"), "amazonses")  # the module name, as in URLs
        self.assertIs(rules_for("Amazon SES"), DEFAULT_RULES)

    def test_only_permanent_bounces_are_permanent(self):
        """SendGrid's "blocked" and Mandrill's soft_bounce are not permanent; their hard bounces are."""
        self.assertTrue(rules_for("sendgrid").permanent_bounce(bounce({"event": "bounce", "type": "bounce"})))
        self.assertFalse(
            rules_for("sendgrid").permanent_bounce(bounce({"event": "bounce", "type": "blocked"}))
        )
        self.assertTrue(rules_for("mandrill").permanent_bounce(bounce({"event": "hard_bounce"})))
        self.assertFalse(rules_for("mandrill").permanent_bounce(bounce({"event": "soft_bounce"})))

    def test_other_esps_take_every_bounce_as_permanent(self):
        """An ESP with no entry: a bounce is a bounce (Anymail reports temporary ones as deferred)."""
        self.assertTrue(rules_for("postmark").permanent_bounce(bounce({})))
        self.assertFalse(
            rules_for("postmark").permanent_bounce(AnymailTrackingEvent(event_type=EventType.DELIVERED))
        )

    def test_mandrill_send_counts_as_delivered(self):
        """Mandrill has no delivered event: its "send" decides the status as delivered."""
        self.assertEqual(
            rules_for("mandrill").status_event_type(EventType.SENT, {"event": "send"}), EventType.DELIVERED
        )
        self.assertEqual(
            rules_for("sendgrid").status_event_type(EventType.SENT, {"event": "send"}), EventType.SENT
        )

    def test_only_mandrill_events_are_keyed_by_hash(self):
        """Mandrill's events carry no id; the others' do."""
        self.assertEqual({name for name, rules in RULES.items() if not rules.has_event_ids}, {"mandrill"})

    def test_signed_timestamps_are_read_where_the_esp_signs_one(self):
        """SendGrid signs a header, Mailgun a body field; Mandrill signs no timestamp."""
        factory = RequestFactory()
        sendgrid = factory.post("/", headers={"X-Twilio-Email-Event-Webhook-Timestamp": "1700000000"})
        mailgun = factory.post(
            "/", data={"signature": {"timestamp": "1700000001"}}, content_type="application/json"
        )
        self.assertEqual(rules_for("sendgrid").signed_timestamp(sendgrid), "1700000000")
        self.assertEqual(rules_for("mailgun").signed_timestamp(mailgun), "1700000001")
        self.assertIsNone(rules_for("mandrill").signed_timestamp)

    def test_signature_age_is_none_where_nothing_readable_is_signed(self):
        """The age of a signed timestamp in seconds; None when there is none or it is no number."""
        import time

        factory = RequestFactory()
        header = "X-Twilio-Email-Event-Webhook-Timestamp"
        fresh = factory.post("/", headers={header: str(int(time.time()) - 5)})
        self.assertIn(rules_for("sendgrid").signature_age(fresh), range(5, 8))
        self.assertIsNone(rules_for("sendgrid").signature_age(factory.post("/", headers={header: "soon"})))
        self.assertIsNone(rules_for("sendgrid").signature_age(factory.post("/")))
        self.assertIsNone(
            rules_for("mailgun").signature_age(factory.post("/", data="{no", content_type="application/json"))
        )
        self.assertIsNone(rules_for("mandrill").signature_age(fresh))
