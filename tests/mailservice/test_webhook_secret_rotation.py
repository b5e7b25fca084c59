"""Several comma-separated ANYMAIL_WEBHOOK_SECRET values, so the webhooks' basic-auth secret is
rotated without refusing a provider's posts (docs/deployment.md, "Rotation without downtime")."""

import json

from django.core.checks import Tags, run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import SimpleTestCase, TestCase, override_settings

from mailservice.models import TrackingEvent
from smtest.environment import anymail_settings, webhook_secrets
from tests.project.child_settings import setting_in_child
from tests.webhooks.payloads import SENDGRID_URL, WEBHOOK_SETTINGS, basic_auth, sendgrid_event

OLD, NEW = "hooks:old-password-1", "hooks-2:new password/with@signs"
ROTATING = anymail_settings({"ANYMAIL_WEBHOOK_SECRET": f"{OLD},{NEW}"})


class WebhookSecretParsingTests(SimpleTestCase):
    def test_several_secrets_become_a_list(self):
        """`a:b, c:d` gives Anymail the list ["a:b", "c:d"], blanks and repeats dropped."""
        environ = {"ANYMAIL_WEBHOOK_SECRET": " a:b, c:d ,, a:b,", "ANYMAIL_SENDGRID_API_KEY": "k,with,commas"}
        expected = {"WEBHOOK_SECRET": ["a:b", "c:d"], "SENDGRID_API_KEY": "k,with,commas"}
        self.assertEqual(anymail_settings(environ), expected)

    def test_one_secret_stays_a_string(self):
        """A single secret is passed as before, a string, whatever its characters besides commas."""
        self.assertEqual(
            anymail_settings({"ANYMAIL_WEBHOOK_SECRET": "u:p a/s@s"}), {"WEBHOOK_SECRET": "u:p a/s@s"}
        )

    def test_only_commas_set_no_secret(self):
        """A value of blanks and commas sets no secret, so the missing-secret check still fires."""
        self.assertEqual(anymail_settings({"ANYMAIL_WEBHOOK_SECRET": " , ,"}), {})

    def test_a_secret_without_a_colon_is_refused_without_showing_it(self):
        """A part that is not user:password (a secret split at its comma) stops startup, naming its
        position only."""
        with self.assertRaises(ImproperlyConfigured) as caught:
            webhook_secrets("user:pass,word-after-comma")
        self.assertIn("secret 2 of 2", str(caught.exception))
        self.assertNotIn("word-after-comma", str(caught.exception))

    def test_the_project_settings_pass_the_list_to_anymail(self):
        """smtest.settings, run from the environment alone, gives ANYMAIL['WEBHOOK_SECRET'] as a list."""
        anymail = setting_in_child("ANYMAIL", DEBUG="1", ANYMAIL_WEBHOOK_SECRET=f"{OLD},{NEW}")
        self.assertEqual(anymail["WEBHOOK_SECRET"], [OLD, NEW])


@override_settings(ANYMAIL={**WEBHOOK_SETTINGS, **ROTATING}, MAILSERVICE_WEBHOOK_PROVIDERS=["sendgrid"])
class RotatingWebhookSecretTests(TestCase):
    def post(self, secret: str, event_id: str):
        events = [sendgrid_event("delivered", "a@example.net", "id-a", sg_event_id=event_id)]
        return self.client.post(
            SENDGRID_URL, data=json.dumps(events), content_type="application/json", **basic_auth(secret)
        )

    def test_each_listed_secret_authenticates_a_post(self):
        """During a rotation, posts with the old and with the new secret are both recorded."""
        for position, secret in enumerate((OLD, NEW)):
            with self.subTest(secret=position):
                self.assertEqual(self.post(secret, f"ev-{position}").status_code, 200)
        self.assertEqual(TrackingEvent.objects.count(), 2)

    def test_a_secret_not_listed_is_refused(self):
        """Any other secret, or a listed user with another password, is a 400 and stores nothing."""
        for secret in ("hooks:wrong", f"{OLD},{NEW}", "hooks-2:new password"):
            with self.subTest(secret=secret):
                self.assertEqual(self.post(secret, "ev-x").status_code, 400)
        self.assertFalse(TrackingEvent.objects.exists())


class RotatingSecretCheckTests(SimpleTestCase):
    def errors(self) -> list[str]:
        return [
            message.id for message in run_checks(tags=[Tags.security]) if message.id == "mailservice.E101"
        ]

    def test_a_list_of_secrets_satisfies_the_check(self):
        """mailservice.E101 stays quiet outside DEBUG when several secrets are set."""
        with override_settings(DEBUG=False, ANYMAIL=ROTATING):
            self.assertEqual(self.errors(), [])

    def test_a_value_of_only_commas_is_still_missing(self):
        """ANYMAIL_WEBHOOK_SECRET=',' sets no secret, and mailservice.E101 reports it outside DEBUG."""
        with override_settings(DEBUG=False, ANYMAIL=anymail_settings({"ANYMAIL_WEBHOOK_SECRET": ","})):
            self.assertEqual(self.errors(), ["mailservice.E101"])
