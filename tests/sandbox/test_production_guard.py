"""The sandbox kept out of production (docs/sandbox.md, "Never in production"): a provider URL
that reaches it under another name (sandbox.E001), its published webhook secrets (sandbox.E002),
and SANDBOX_PRODUCTION_TRIAL, which lets a production-like trial run its commands while
`check --deploy` still refuses it.

Host names are resolved for real only in their numeric forms, which getaddrinfo reads without a
resolver; other names get a stand-in getaddrinfo, so nothing here depends on /etc/hosts or DNS."""

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

from django.core.checks import Tags, run_checks
from django.test import SimpleTestCase, override_settings

from sandbox.checks import check_sandbox_not_in_production
from sandbox.conf import is_sandbox_url, service_environment
from sandbox.providers.sendgrid import DEV_VERIFICATION_KEY

ROOT = Path(__file__).resolve().parents[2]
REAL_SECRET = "esp:a-real-webhook-secret"


def addresses(*found: str) -> list[tuple]:
    """What getaddrinfo returns for these addresses."""
    return [
        (socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 0))
        for address in found
    ]


def sandbox_ids(*, deploy: bool = False, **settings) -> list[str]:
    """The ids of the sandbox's check messages under these settings (DEBUG off unless given)."""
    settings = {"DEBUG": False, **settings}
    with override_settings(**settings):
        messages = run_checks(tags=[Tags.security], include_deployment_checks=deploy)
    return sorted(message.id for message in messages if message.id.startswith("sandbox."))


class OtherNameTests(SimpleTestCase):
    """A provider URL under the sandbox's paths is refused wherever its host leads to this machine."""

    def test_numeric_forms_of_loopback_are_the_sandbox(self):
        """127.1, 2130706433, 0x7f000001, IPv4-mapped and unspecified addresses reach the sandbox."""
        for host in (
            "127.1",
            "2130706433",
            "0x7f000001",
            "[::ffff:127.0.0.1]",
            "0.0.0.0",
            "[::]",
            "127.0.0.2",
        ):
            with self.subTest(host=host):
                url = f"http://{host}:8026/sendgrid/v3/"
                self.assertEqual(sandbox_ids(ANYMAIL={"SENDGRID_API_URL": url}), ["sandbox.E001"])

    def test_a_name_that_resolves_to_loopback_is_the_sandbox(self):
        """A made-up name resolving to 127.0.0.1 is refused, and the error names the setting."""
        with mock.patch("sandbox.conf.socket.getaddrinfo", return_value=addresses("127.0.0.1")) as lookup:
            with override_settings(
                DEBUG=False, ANYMAIL={"MAILGUN_API_URL": "http://esp-relay.internal/mailgun/v3"}
            ):
                [error] = check_sandbox_not_in_production()
        self.assertEqual(error.id, "sandbox.E001")
        self.assertIn("ANYMAIL['MAILGUN_API_URL']", error.msg)
        self.assertEqual(lookup.call_args.args[0], "esp-relay.internal")

    def test_one_loopback_address_among_others_is_enough(self):
        """A name resolving to a public and a loopback address may connect to the latter."""
        with mock.patch("sandbox.conf.socket.getaddrinfo", return_value=addresses("203.0.113.5", "::1")):
            self.assertTrue(is_sandbox_url("http://dual.internal/mandrill/api/1.0"))

    def test_a_name_that_resolves_elsewhere_is_not_the_sandbox(self):
        """A name resolving only to other hosts' addresses passes."""
        with mock.patch(
            "sandbox.conf.socket.getaddrinfo", return_value=addresses("203.0.113.5", "2001:db8::5")
        ):
            self.assertEqual(
                sandbox_ids(ANYMAIL={"SENDGRID_API_URL": "https://relay.example/sendgrid/v3/"}), []
            )

    def test_a_name_that_does_not_resolve_is_not_the_sandbox(self):
        """An unknown name reaches nothing, the sandbox included."""
        unknown = socket.gaierror(-2, "Name or service not known")
        with mock.patch("sandbox.conf.socket.getaddrinfo", side_effect=unknown):
            self.assertFalse(is_sandbox_url("http://nowhere.invalid/sendgrid/v3/"))

    def test_a_slow_resolver_is_bounded(self):
        """A lookup that does not answer in time is given up, so a check never hangs on DNS."""
        release = threading.Event()
        self.addCleanup(release.set)

        def hanging(*args, **kwargs):
            release.wait(10)
            raise socket.gaierror(-3, "Temporary failure in name resolution")

        with mock.patch("sandbox.conf.socket.getaddrinfo", side_effect=hanging):
            started = time.monotonic()
            self.assertFalse(is_sandbox_url("http://slow.internal/sendgrid/v3/", timeout=0.05))
        self.assertLess(time.monotonic() - started, 2)

    def test_urls_outside_the_sandbox_paths_are_not_resolved(self):
        """Real provider URLs cost no lookup: only the sandbox's paths are worth resolving."""
        with mock.patch("sandbox.conf.socket.getaddrinfo", side_effect=AssertionError("resolved")):
            anymail = {
                "SENDGRID_API_URL": "https://api.sendgrid.com/v3/",
                "MAILGUN_API_URL": "https://api.eu.mailgun.net/v3",
            }
            self.assertEqual(sandbox_ids(ANYMAIL=anymail), [])


class PublishedSecretTests(SimpleTestCase):
    """The sandbox's webhook credentials are published: with DEBUG off they are sandbox.E002."""

    def test_the_published_sendgrid_verification_key_is_an_error(self):
        """The development verification key lets anyone sign SendGrid posts."""
        anymail = {
            "WEBHOOK_SECRET": REAL_SECRET,
            "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": DEV_VERIFICATION_KEY,
        }
        with override_settings(DEBUG=False, ANYMAIL=anymail):
            [error] = check_sandbox_not_in_production()
        self.assertEqual(error.id, "sandbox.E002")
        self.assertIn("ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY", error.msg)

    def test_the_key_is_recognized_however_it_is_wrapped(self):
        """Line breaks and spaces inside the base64 key do not hide it."""
        wrapped = "\n".join(DEV_VERIFICATION_KEY[i : i + 64] for i in range(0, len(DEV_VERIFICATION_KEY), 64))
        anymail = {
            "WEBHOOK_SECRET": REAL_SECRET,
            "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": f" {wrapped} ",
        }
        self.assertEqual(sandbox_ids(ANYMAIL=anymail), ["sandbox.E002"])

    def test_every_published_webhook_credential_is_refused(self):
        """Mailgun's signing key, Mandrill's key and the shared secret (also one of several in rotation)."""
        cases = {
            "MAILGUN_WEBHOOK_SIGNING_KEY": "sandbox-mailgun-signing-key",
            "MANDRILL_WEBHOOK_KEY": "sandbox-mandrill-webhook-key",
        }
        for setting, value in cases.items():
            with self.subTest(setting):
                self.assertEqual(
                    sandbox_ids(ANYMAIL={"WEBHOOK_SECRET": REAL_SECRET, setting: value}), ["sandbox.E002"]
                )
        for secret in (
            "sandbox:sandbox-webhook-secret",
            f"{REAL_SECRET},sandbox:sandbox-webhook-secret",
            [REAL_SECRET, "sandbox:sandbox-webhook-secret"],
        ):
            with self.subTest(secret=secret):
                self.assertEqual(sandbox_ids(ANYMAIL={"WEBHOOK_SECRET": secret}), ["sandbox.E002"])

    def test_a_setting_outside_the_anymail_dict_is_read_too(self):
        """ANYMAIL_<SETTING> as a Django setting of its own is what Anymail reads as well."""
        self.assertEqual(
            sandbox_ids(ANYMAIL={}, ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY=DEV_VERIFICATION_KEY),
            ["sandbox.E002"],
        )

    def test_real_values_and_debug_pass(self):
        """The provider's own values raise nothing; with DEBUG on the published ones are fine."""
        real = {"WEBHOOK_SECRET": REAL_SECRET, "MANDRILL_WEBHOOK_KEY": "a-real-mandrill-key"}
        self.assertEqual(sandbox_ids(ANYMAIL=real), [])
        published = {"SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": DEV_VERIFICATION_KEY}
        self.assertEqual(sandbox_ids(DEBUG=True, ANYMAIL=published), [])


SANDBOX_SETTINGS = {
    "ANYMAIL": {
        "SENDGRID_API_URL": "http://127.0.0.1:8026/sendgrid/v3/",
        "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": DEV_VERIFICATION_KEY,
        "WEBHOOK_SECRET": REAL_SECRET,
    },
}


class ProductionTrialTests(SimpleTestCase):
    """SANDBOX_PRODUCTION_TRIAL: commands run, `check --deploy` still refuses."""

    def test_without_the_switch_every_command_stops(self):
        """DEBUG off and the sandbox: the plain checks (every command's) report each error."""
        self.assertEqual(sandbox_ids(**SANDBOX_SETTINGS), ["sandbox.E001", "sandbox.E002"])

    def test_the_switch_lets_commands_run(self):
        """With SANDBOX_PRODUCTION_TRIAL the checks every command runs report nothing."""
        self.assertEqual(sandbox_ids(SANDBOX_PRODUCTION_TRIAL=True, **SANDBOX_SETTINGS), [])

    def test_check_deploy_still_reports_the_trial(self):
        """Under --deploy each finding is still an error, its hint naming the switch."""
        with override_settings(DEBUG=False, SANDBOX_PRODUCTION_TRIAL=True, **SANDBOX_SETTINGS):
            errors = [
                m
                for m in run_checks(tags=[Tags.security], include_deployment_checks=True)
                if m.id.startswith("sandbox.")
            ]
        self.assertEqual(sorted(e.id for e in errors), ["sandbox.E001", "sandbox.E002"])
        self.assertTrue(all(e.is_serious() and "SANDBOX_PRODUCTION_TRIAL" in e.hint for e in errors))

    def test_check_deploy_without_the_switch_reports_each_error_once(self):
        """The deployment check adds nothing when the plain one already refuses."""
        self.assertEqual(sandbox_ids(deploy=True, **SANDBOX_SETTINGS), ["sandbox.E001", "sandbox.E002"])

    def test_a_switch_left_on_without_the_sandbox_is_pointed_out(self):
        """Under --deploy, the switch without anything of the sandbox is sandbox.W001."""
        ids = sandbox_ids(deploy=True, SANDBOX_PRODUCTION_TRIAL=True, ANYMAIL={"WEBHOOK_SECRET": REAL_SECRET})
        self.assertEqual(ids, ["sandbox.W001"])


def manage(*args: str, **values: str) -> subprocess.CompletedProcess:
    """manage.py with the project's own settings and only the given environment."""
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env = {**keep, "DJANGO_SETTINGS_MODULE": "smtest.settings", "PYTHONDONTWRITEBYTECODE": "1", **values}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


class ProductionTrialProcessTests(SimpleTestCase):
    """The trial as an operator runs it: DEBUG off, every provider at the sandbox (`make run`'s
    variables), from the environment alone."""

    environment = {
        **service_environment(),
        "DEBUG": "0",
        "SECRET_KEY": "trial-" + "k" * 50,
        "ALLOWED_HOSTS": "127.0.0.1",
    }

    def test_commands_stop_without_the_switch(self):
        """Without SANDBOX_PRODUCTION_TRIAL, `manage.py check` fails on the sandbox."""
        result = manage("check", **self.environment)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("sandbox.E001", result.stderr)

    def test_commands_run_with_the_switch_and_check_deploy_refuses(self):
        """With SANDBOX_PRODUCTION_TRIAL=1 `check` passes and `check --deploy` fails naming the sandbox."""
        plain = manage("check", **self.environment, SANDBOX_PRODUCTION_TRIAL="1")
        self.assertEqual(plain.returncode, 0, plain.stdout + plain.stderr)
        deploy = manage("check", "--deploy", **self.environment, SANDBOX_PRODUCTION_TRIAL="1")
        self.assertEqual(deploy.returncode, 1, deploy.stdout + deploy.stderr)
        self.assertIn("sandbox.E001", deploy.stderr)
        self.assertIn("sandbox.E002", deploy.stderr)
