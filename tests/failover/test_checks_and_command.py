"""System checks report a broken chain; failover_status shows each provider's state."""

import json
from io import StringIO

from django.core.checks import Tags, run_checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import SimpleTestCase, override_settings

from tests.esp import SENDGRID, SENDGRID_KEY
from tests.failover.base import FailoverTestCase, sending_through

SHARED_CACHE = {
    "default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": "/tmp/x"}
}
LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
FAILOVER = "failover.backends.FirstWorkingEmailBackend"


def check_ids(**settings):
    with override_settings(**settings):
        # Only the tags failover registers under: model checks may query the database.
        return sorted(
            m.id for m in run_checks(tags=[Tags.compatibility, Tags.caches]) if m.id.startswith("failover.")
        )


class CheckTests(SimpleTestCase):
    def test_healthy_configuration_passes(self):
        """A valid chain on a shared cache raises nothing."""
        self.assertEqual(
            check_ids(
                **sending_through(FAILOVER), FIRST_WORKING_EMAIL_BACKENDS=[SENDGRID], CACHES=SHARED_CACHE
            ),
            [],
        )

    def test_empty_chain_is_an_error(self):
        """failover.E001 when the backend is used without providers."""
        self.assertEqual(
            check_ids(**sending_through(FAILOVER), FIRST_WORKING_EMAIL_BACKENDS=[], CACHES=SHARED_CACHE),
            ["failover.E001"],
        )

    def test_unimportable_backend_is_an_error(self):
        """failover.E002 names the entry that does not import."""
        ids = check_ids(
            **sending_through(FAILOVER),
            FIRST_WORKING_EMAIL_BACKENDS=[SENDGRID, "no.such.Backend"],
            CACHES=SHARED_CACHE,
        )
        self.assertEqual(ids, ["failover.E002"])

    def test_missing_api_key_is_found_at_startup(self):
        """failover.E004 names the provider whose backend cannot be built (Anymail's missing key)."""
        with override_settings(
            **sending_through(FAILOVER),
            FIRST_WORKING_EMAIL_BACKENDS=["sendgrid"],
            CACHES=SHARED_CACHE,
            ANYMAIL={},
        ):
            messages = [m for m in run_checks(tags=[Tags.compatibility]) if m.id == "failover.E004"]
        self.assertEqual(len(messages), 1)
        self.assertIn("'sendgrid'", messages[0].msg)
        self.assertIn("SENDGRID_API_KEY", messages[0].msg)

    def test_bad_option_is_found_at_startup_without_showing_secrets(self):
        """OPTIONS the backend refuses are failover.E004, with the password masked."""
        entry = {
            "NAME": "smtp",
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"use_tls": True, "use_ssl": True, "password": SENDGRID_KEY},
        }
        with override_settings(
            **sending_through(FAILOVER), FIRST_WORKING_EMAIL_BACKENDS=[entry], CACHES=SHARED_CACHE
        ):
            messages = [m for m in run_checks(tags=[Tags.compatibility]) if m.id == "failover.E004"]
        self.assertEqual(len(messages), 1)
        self.assertIn("'smtp'", messages[0].msg)
        self.assertNotIn(SENDGRID_KEY, messages[0].msg)

    def test_unknown_cache_alias_is_an_error(self):
        """failover.E003 when FIRST_WORKING_EMAIL_CACHE names no cache."""
        ids = check_ids(
            **sending_through(FAILOVER),
            FIRST_WORKING_EMAIL_BACKENDS=[SENDGRID],
            CACHES=SHARED_CACHE,
            FIRST_WORKING_EMAIL_CACHE="nope",
        )
        self.assertEqual(ids, ["failover.E003"])

    def test_per_process_cache_is_a_warning(self):
        """failover.W001 for locmem (and dummy) caches, which processes do not share."""
        ids = check_ids(**sending_through(FAILOVER), FIRST_WORKING_EMAIL_BACKENDS=[SENDGRID], CACHES=LOCMEM)
        self.assertEqual(ids, ["failover.W001"])

    def test_checks_stay_quiet_when_the_backend_is_not_used(self):
        """A project that installs the app but sends otherwise gets no failover errors."""
        ids = check_ids(
            **sending_through("django.core.mail.backends.smtp.EmailBackend"),
            FIRST_WORKING_EMAIL_BACKENDS=[],
            CACHES=LOCMEM,
        )
        self.assertEqual(ids, [])


class StatusCommandTests(FailoverTestCase):
    def run_command(self, *args):
        out = StringIO()
        call_command("failover_status", *args, stdout=out)
        return out.getvalue()

    def test_lists_every_provider_in_order(self):
        """Fresh state: the primary is active, the others on standby."""
        lines = self.run_command().splitlines()
        self.assertIn("sendgrid", lines[0])
        self.assertIn("active", lines[0])
        self.assertIn("mailgun", lines[1])
        self.assertIn("standby", lines[1])
        self.assertIn("mandrill", lines[2])

    def test_shows_a_failing_provider_with_its_error(self):
        """After a failover the primary is failing with its last error; the secondary is active."""
        self.esp.fail("sendgrid", 503)
        self.send(self.message())
        output = self.run_command()
        self.assertRegex(output, r"1\. sendgrid\s+failing")
        self.assertIn("HTTP 503", output)
        self.assertRegex(output, r"2\. mailgun\s+active")
        self.assertIn("sends start here until", output)

    def test_forget_clears_the_memory(self):
        """--forget drops the detour: the primary is active again and the next send starts there."""
        self.esp.fail("sendgrid", 503)
        self.send(self.message())
        self.esp.ok("sendgrid")
        output = self.run_command("--forget")
        self.assertRegex(output, r"1\. sendgrid\s+active")
        message = self.message()
        self.send(message)
        self.assertEqual(message.failover_provider, "sendgrid")

    def test_json_output(self):
        """--json prints machine-readable rows."""
        rows = json.loads(self.run_command("--json"))
        self.assertEqual([row["name"] for row in rows], ["sendgrid", "mailgun", "mandrill"])
        self.assertEqual(rows[0]["state"], "active")

    def test_bad_configuration_is_a_command_error(self):
        """A broken chain is reported, not a traceback."""
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[]):
            with self.assertRaisesMessage(CommandError, "FIRST_WORKING_EMAIL_BACKENDS is empty"):
                self.run_command()
