"""Tracking endpoints answer only for the ESPs in use: the chain's (by each entry's backend) and
MAILSERVICE_WEBHOOK_PROVIDERS; any other is a JSON 404, decided per request."""

import json

from django.core.checks import run_checks
from django.test import TestCase, override_settings

from mailservice.models import Suppression, TrackingEvent
from tests.webhooks.payloads import WEBHOOK_SETTINGS, basic_auth, sendgrid_event, sendgrid_post

LOCMEM = "django.core.mail.backends.locmem.EmailBackend"
POSTMARK_URL = "/anymail/postmark/tracking/"
AMAZON_SES_URL = "/anymail/amazon_ses/tracking/"


def postmark_hard_bounce() -> str:
    return json.dumps(
        {
            "RecordType": "Bounce",
            "ID": 42,
            "Type": "HardBounce",
            "TypeCode": 1,
            "MessageID": "pm-1",
            "Email": "victim@example.com",
            "BouncedAt": "2030-01-01T12:00:00Z",
            "Description": "forged",
        }
    )


@override_settings(
    ANYMAIL=WEBHOOK_SETTINGS, FIRST_WORKING_EMAIL_BACKENDS=["sendgrid"], MAILSERVICE_WEBHOOK_PROVIDERS=[]
)
class ConfiguredEndpointTests(TestCase):
    def assert_json_404(self, response):
        self.assertEqual(response.status_code, 404)
        self.assertEqual(response["Content-Type"], "application/json")
        self.assertIn("errors", response.json())

    def test_forged_post_to_an_unconfigured_provider_is_a_404_and_suppresses_nobody(self):
        """A Postmark "HardBounce" with the shared secret, Postmark not in use: 404, nothing stored."""
        response = self.client.post(
            POSTMARK_URL, data=postmark_hard_bounce(), content_type="application/json", **basic_auth()
        )
        self.assert_json_404(response)
        self.assertFalse(TrackingEvent.objects.exists())
        self.assertFalse(Suppression.objects.exists())

    def test_amazon_ses_unconfigured_is_a_404_not_a_500(self):
        """amazon_ses (boto3 absent), unconfigured, is a 404 rather than a 500 for anyone."""
        for method in ("post", "get", "head"):
            with self.subTest(method):
                response = getattr(self.client, method)(AMAZON_SES_URL)
                self.assertEqual(response.status_code, 404)

    def test_chain_provider_answers(self):
        """sendgrid is in the chain: its endpoint records events."""
        self.assertEqual(
            sendgrid_post(self.client, [sendgrid_event("delivered", "a@example.net", "x")]).status_code, 200
        )
        self.assertEqual(TrackingEvent.objects.count(), 1)

    def test_other_chain_providers_are_not_enabled(self):
        """mailgun is not in this chain: 404."""
        self.assert_json_404(
            self.client.post("/anymail/mailgun/tracking/", data="{}", content_type="application/json")
        )

    def test_a_named_chain_entry_enables_its_backends_esp(self):
        """{"NAME": "mailgun-eu", "BACKEND": "mailgun"} enables the mailgun endpoint (the ESP, not
        the NAME)."""
        chain = [{"NAME": "mailgun-eu", "BACKEND": "mailgun", "OPTIONS": {"api_key": "k"}}, LOCMEM]
        with override_settings(FIRST_WORKING_EMAIL_BACKENDS=chain):
            response = self.client.post(
                "/anymail/mailgun/tracking/", data="{}", content_type="application/json", **basic_auth()
            )
            self.assertEqual(response.status_code, 400)  # reached Anymail: no signature block
            self.assert_json_404(
                self.client.post("/anymail/sendgrid/tracking/", data="[]", content_type="application/json")
            )

    def test_the_setting_enables_an_esp_outside_the_chain_in_any_spelling(self):
        """MAILSERVICE_WEBHOOK_PROVIDERS (a list or a comma-separated string) adds ESPs; the
        decision is made per request, so override_settings takes effect at once."""
        for value in (["postmark"], "Postmark", " postmark , mailgun"):
            with self.subTest(value=value), override_settings(MAILSERVICE_WEBHOOK_PROVIDERS=value):
                response = self.client.post(
                    POSTMARK_URL, data=postmark_hard_bounce(), content_type="application/json", **basic_auth()
                )
                self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(Suppression.objects.get().provider, "postmark")
        self.assert_json_404(
            self.client.post(
                POSTMARK_URL, data=postmark_hard_bounce(), content_type="application/json", **basic_auth()
            )
        )

    def test_amazon_ses_enabled_without_boto3_is_a_clear_5xx_and_a_system_check(self):
        """Configured but boto3 missing: a JSON 500 naming the configuration (the ESP retries
        until it is fixed), and mailservice.E102 names the package."""
        for spelling in ("amazon_ses", "Amazon SES", "amazonses"):
            with self.subTest(spelling), override_settings(MAILSERVICE_WEBHOOK_PROVIDERS=[spelling]):
                with self.assertLogs("mailservice.webhooks", "ERROR") as logs:
                    response = self.client.post(
                        AMAZON_SES_URL, data="{}", content_type="application/json", **basic_auth()
                    )
                self.assertEqual(response.status_code, 500)
                self.assertIn("not configured correctly", response.json()["errors"][0]["message"])
                self.assertIn("boto3", "\n".join(logs.output))
                errors = [m for m in run_checks() if m.id == "mailservice.E102"]
                self.assertEqual(len(errors), 1)
                self.assertIn("boto3", errors[0].msg)

    @override_settings(MAILSERVICE_WEBHOOK_PROVIDERS=["postmrak"])
    def test_unknown_name_in_the_setting_is_a_system_check_error(self):
        """A typo in MAILSERVICE_WEBHOOK_PROVIDERS is reported (mailservice.E103)."""
        self.assertEqual(
            [m.id for m in run_checks() if m.id.startswith("mailservice.E10") and m.id != "mailservice.E101"],
            ["mailservice.E103"],
        )

    def test_configured_providers_pass_the_checks(self):
        """sendgrid, mailgun and mandrill with their settings: no E102/E103."""
        with override_settings(MAILSERVICE_WEBHOOK_PROVIDERS=["mailgun", "mandrill"]):
            self.assertEqual(
                [m.id for m in run_checks() if m.id in ("mailservice.E102", "mailservice.E103")], []
            )

    def test_every_answer_is_json(self):
        """Unknown paths under /anymail/, inbound endpoints, wrong methods: JSON, never HTML."""
        cases = [
            ("post", "/anymail/nothing-here/", 404),
            ("post", "/anymail/sendgrid/inbound/", 404),
            ("get", "/anymail/sendgrid/tracking/", 405),
            ("put", "/anymail/sendgrid/tracking/", 405),
        ]
        for method, url, status in cases:
            with self.subTest(url=url, method=method):
                response = getattr(self.client, method)(url)
                self.assertEqual(response.status_code, status)
                self.assertEqual(response["Content-Type"], "application/json")
        self.assertEqual(self.client.get("/anymail/sendgrid/tracking/")["Allow"], "POST, HEAD, OPTIONS")
        self.assertEqual(self.client.head("/anymail/sendgrid/tracking/").status_code, 200)

    @override_settings(FIRST_WORKING_EMAIL_BACKENDS=[])
    def test_a_broken_chain_is_a_503(self):
        """Our configuration is broken: 5xx (retry later), not 404 (which would lose the events)."""
        with self.assertLogs("mailservice.webhooks", "ERROR"):
            response = sendgrid_post(self.client, [sendgrid_event("delivered", "a@example.net", "x")])
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response["Content-Type"], "application/json")
