"""The webhooks are never exposed without a secret outside DEBUG."""

from django.core.checks import Tags, run_checks
from django.test import SimpleTestCase, override_settings


def check_ids() -> list[str]:
    return [
        message.id for message in run_checks(tags=[Tags.security]) if message.id.startswith("mailservice.E1")
    ]


class WebhookSecretCheckTests(SimpleTestCase):
    def test_plain_check_reports_it(self):
        """Not only `check --deploy`: `migrate`, `check` and `runserver` stop without a secret."""
        with override_settings(DEBUG=False, ANYMAIL={}):
            plain = [m.id for m in run_checks(tags=[Tags.security]) if m.id == "mailservice.E101"]
        self.assertEqual(plain, ["mailservice.E101"])

    @override_settings(DEBUG=False, ANYMAIL={})
    def test_missing_secret_outside_debug_is_an_error(self):
        """mailservice.E101 when DEBUG is off and ANYMAIL_WEBHOOK_SECRET is unset."""
        self.assertEqual(check_ids(), ["mailservice.E101"])

    @override_settings(DEBUG=False, ANYMAIL={"WEBHOOK_SECRET": "user:pass"})
    def test_secret_set_passes(self):
        """With a shared secret there is no error."""
        self.assertEqual(check_ids(), [])

    @override_settings(DEBUG=True, ANYMAIL={})
    def test_debug_without_secret_is_allowed(self):
        """Local development may run without a secret."""
        self.assertEqual(check_ids(), [])


class DatabaseFeatureCheckTests(SimpleTestCase):
    databases = {"default"}

    def test_a_database_without_insert_returning_is_refused(self):
        """mailservice.E105 names the database when it lacks INSERT … ON CONFLICT … RETURNING."""
        from unittest import mock

        from mailservice import checks

        self.assertEqual(checks.check_database_features(databases=["default"]), [])
        with mock.patch.object(checks, "supports_insert_returning", return_value=False):
            [error] = checks.check_database_features(databases=["default"])
        self.assertEqual(error.id, "mailservice.E105")
        self.assertIn("'default'", error.msg)
