"""SendGrid's signed Event Webhook: with ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY set,
Anymail checks the ECDSA signature of every post (the `cryptography` package, pinned)."""

import base64
import json
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import TestCase, override_settings

from mailservice.models import TrackingEvent
from tests.webhooks.payloads import (
    SENDGRID_URL,
    WEBHOOK_PROVIDERS,
    WEBHOOK_SETTINGS,
    basic_auth,
    sendgrid_event,
)

PRIVATE_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
# What SendGrid shows under Settings → Mail Settings → Event Webhook → Signature Verification.
VERIFICATION_KEY = base64.b64encode(
    PRIVATE_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
SIGNED = {**WEBHOOK_SETTINGS, "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": VERIFICATION_KEY}


def signed_post(client, events, *, key=PRIVATE_KEY, timestamp=None, tamper=False, headers=True):
    body = json.dumps(events).encode()
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    if tamper:
        body = body.replace(b"delivered", b"bounce")
    extra = (
        {
            "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE": signature,
            "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP": timestamp,
        }
        if headers
        else {}
    )
    return client.post(SENDGRID_URL, data=body, content_type="application/json", **extra, **basic_auth())


@override_settings(ANYMAIL=SIGNED, MAILSERVICE_WEBHOOK_PROVIDERS=WEBHOOK_PROVIDERS)
class SendGridSignatureTests(TestCase):
    def events(self):
        return [sendgrid_event("delivered", "a@example.net", "id-a")]

    def test_correctly_signed_post_is_accepted(self):
        response = signed_post(self.client, self.events())
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(TrackingEvent.objects.count(), 1)

    def test_wrong_signature_is_a_400(self):
        """Signed with another key, a body changed after signing, or no signature: 400, nothing stored."""
        cases = {
            "another key": {"key": OTHER_KEY},
            "tampered body": {"tamper": True},
            "no signature headers": {"headers": False},
        }
        for name, options in cases.items():
            with self.subTest(name), self.assertLogs("mailservice.webhooks", "WARNING") as logs:
                response = signed_post(self.client, self.events(), **options)
                self.assertEqual(response.status_code, 400)
                self.assertEqual(response.json()["errors"][0]["message"], "Webhook authentication failed.")
                self.assertIn("webhook refused provider=sendgrid", logs.output[0])
        self.assertFalse(TrackingEvent.objects.exists())

    def test_signed_timestamp_older_than_the_max_age_is_refused(self):
        """MAILSERVICE_WEBHOOK_MAX_AGE reads SendGrid's signed timestamp header."""
        with (
            override_settings(MAILSERVICE_WEBHOOK_MAX_AGE=300),
            self.assertLogs("mailservice.webhooks", "WARNING"),
        ):
            old = signed_post(self.client, self.events(), timestamp=int(time.time()) - 3600)
        self.assertEqual(old.status_code, 400)
        with override_settings(MAILSERVICE_WEBHOOK_MAX_AGE=300):
            self.assertEqual(signed_post(self.client, self.events()).status_code, 200)

    def test_a_broken_verification_key_is_a_500_and_a_system_check(self):
        """A key that is not a public key: every post would fail, so it is ours to fix (5xx) and
        `manage.py check` says so (mailservice.E102)."""
        from django.core.checks import run_checks

        with override_settings(
            ANYMAIL={**SIGNED, "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": "bm90IGEga2V5"}
        ):
            with self.assertLogs("mailservice.webhooks", "ERROR"):
                response = signed_post(self.client, self.events())
            self.assertEqual(response.status_code, 500)
            self.assertEqual(response["Content-Type"], "application/json")
            self.assertIn("mailservice.E102", [m.id for m in run_checks()])
