"""Provider webhook keys checked before the first post (docs/security.md, "Webhooks"): Mandrill
without its webhook key stops every command outside DEBUG (mailservice.E106), SendGrid without its
verification key is a warning of `check --deploy` (mailservice.W101)."""

from django.core.checks import Tags, run_checks
from django.test import SimpleTestCase, override_settings

SECRET = "esp:a-real-webhook-secret"
# A valid P-256 public key, not the sandbox's published one.
SENDGRID_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE+1A4jylJjQqTrSXsTDQDe508w8ykeH62/tq+KzAD6sifd2XKnWKI5v9zT1zQjzpZIc9Ush"
    "uzmLUKwNJXf6B0cg=="
)


def check_ids(*, deploy: bool = False, **settings) -> list[str]:
    """The ids of the gateway's webhook-key messages under these settings (DEBUG off unless given)."""
    settings = {"DEBUG": False, **settings}
    with override_settings(**settings):
        messages = run_checks(tags=[Tags.security], include_deployment_checks=deploy)
    return sorted(m.id for m in messages if m.id in ("mailservice.E106", "mailservice.W101"))


class MandrillWebhookKeyTests(SimpleTestCase):
    def test_mandrill_in_the_chain_without_its_key_is_an_error(self):
        """Every command stops: each Mandrill post would be answered 500."""
        ids = check_ids(FIRST_WORKING_EMAIL_BACKENDS=["mandrill"], ANYMAIL={"WEBHOOK_SECRET": SECRET})
        self.assertEqual(ids, ["mailservice.E106"])

    def test_mandrill_listed_for_its_late_events_needs_the_key_too(self):
        """MAILSERVICE_WEBHOOK_PROVIDERS enables the endpoint as the chain does."""
        ids = check_ids(
            FIRST_WORKING_EMAIL_BACKENDS=["django.core.mail.backends.locmem.EmailBackend"],
            MAILSERVICE_WEBHOOK_PROVIDERS=["mandrill"],
            ANYMAIL={"WEBHOOK_SECRET": SECRET},
        )
        self.assertEqual(ids, ["mailservice.E106"])

    def test_the_key_in_any_form_anymail_reads_passes(self):
        """ANYMAIL["MANDRILL_WEBHOOK_KEY"] or the ANYMAIL_MANDRILL_WEBHOOK_KEY setting."""
        chain = {"FIRST_WORKING_EMAIL_BACKENDS": ["mandrill"]}
        self.assertEqual(
            check_ids(**chain, ANYMAIL={"WEBHOOK_SECRET": SECRET, "MANDRILL_WEBHOOK_KEY": "k"}), []
        )
        self.assertEqual(
            check_ids(**chain, ANYMAIL={"WEBHOOK_SECRET": SECRET}, ANYMAIL_MANDRILL_WEBHOOK_KEY="k"), []
        )

    def test_without_mandrill_or_with_debug_nothing_is_reported(self):
        """Another chain, or local development, needs no Mandrill key."""
        self.assertEqual(
            check_ids(FIRST_WORKING_EMAIL_BACKENDS=["mailgun"], ANYMAIL={"WEBHOOK_SECRET": SECRET}), []
        )
        self.assertEqual(check_ids(DEBUG=True, FIRST_WORKING_EMAIL_BACKENDS=["mandrill"], ANYMAIL={}), [])

    def test_check_deploy_reports_it_too(self):
        """`check --deploy` (the deployment's own step) fails on it as well."""
        ids = check_ids(
            deploy=True, FIRST_WORKING_EMAIL_BACKENDS=["mandrill"], ANYMAIL={"WEBHOOK_SECRET": SECRET}
        )
        self.assertEqual(ids, ["mailservice.E106"])


class SendGridVerificationKeyTests(SimpleTestCase):
    def test_sendgrid_without_its_verification_key_is_a_deploy_warning(self):
        """Under `check --deploy` a warning: posts are checked by the shared secret only."""
        chain = {"FIRST_WORKING_EMAIL_BACKENDS": ["sendgrid"], "ANYMAIL": {"WEBHOOK_SECRET": SECRET}}
        with override_settings(DEBUG=False, **chain):
            [warning] = [
                m
                for m in run_checks(tags=[Tags.security], include_deployment_checks=True)
                if m.id == "mailservice.W101"
            ]
        self.assertFalse(warning.is_serious())
        self.assertIn("ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY", warning.msg)

    def test_other_commands_do_not_warn(self):
        """Only `check --deploy` says it: migrate and the workers print nothing about it."""
        self.assertEqual(
            check_ids(FIRST_WORKING_EMAIL_BACKENDS=["sendgrid"], ANYMAIL={"WEBHOOK_SECRET": SECRET}), []
        )

    def test_with_the_key_or_without_sendgrid_nothing_is_reported(self):
        """The verification key set, or SendGrid not in use: no warning."""
        anymail = {"WEBHOOK_SECRET": SECRET, "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": SENDGRID_KEY}
        self.assertEqual(
            check_ids(deploy=True, FIRST_WORKING_EMAIL_BACKENDS=["sendgrid"], ANYMAIL=anymail), []
        )
        without = {"FIRST_WORKING_EMAIL_BACKENDS": ["mailgun"], "ANYMAIL": {"WEBHOOK_SECRET": SECRET}}
        self.assertEqual(check_ids(deploy=True, **without), [])
