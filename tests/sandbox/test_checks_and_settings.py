"""The production guard (sandbox.E001), the sandbox's settings, and the pure rules behind faults
and address conventions."""

import dataclasses
import socket
from unittest import mock

from django.core.checks.registry import registry
from django.test import SimpleTestCase, override_settings

from sandbox.checks import check_sandbox_not_in_production
from sandbox.conf import SandboxSettings, is_sandbox_url, service_environment
from sandbox.conventions import Fate, fate_of
from sandbox.exceptions import FaultSpecError, SandboxConfigError, UnknownProviderError
from sandbox.faults import Action, Fault, FaultBoard, fault_from_words, parse_fault_flag
from sandbox.providers import PROVIDERS

SANDBOX_URL = "http://127.0.0.1:8026/sendgrid/v3/"


def sandbox_check_ids(**settings) -> list[str]:
    with override_settings(**settings):
        return sorted(message.id for message in check_sandbox_not_in_production())


class ProductionCheckTests(SimpleTestCase):
    def test_the_check_is_registered(self):
        """Installing the app registers the check, so `manage.py check` and every command run it."""
        self.assertIn(check_sandbox_not_in_production, registry.get_checks())

    def test_sandbox_api_url_without_debug_is_an_error(self):
        """An ANYMAIL *_API_URL at the sandbox with DEBUG off is sandbox.E001."""
        ids = sandbox_check_ids(DEBUG=False, ANYMAIL={"SENDGRID_API_URL": SANDBOX_URL})
        self.assertEqual(ids, ["sandbox.E001"])

    def test_sandbox_api_url_with_debug_is_fine(self):
        """In development (DEBUG on) the sandbox is allowed."""
        self.assertEqual(sandbox_check_ids(DEBUG=True, ANYMAIL={"SENDGRID_API_URL": SANDBOX_URL}), [])

    def test_each_sandbox_url_is_reported(self):
        """Every provider pointed at the sandbox gets its own error, naming the setting."""
        anymail = {
            "SENDGRID_API_URL": SANDBOX_URL,
            "MAILGUN_API_URL": "http://localhost:8027/mailgun/v3",
            "MANDRILL_API_URL": "http://[::1]:8028/mandrill/api/1.0",
        }
        with override_settings(DEBUG=False, ANYMAIL=anymail):
            errors = check_sandbox_not_in_production()
        self.assertEqual(len(errors), 3)
        self.assertIn("ANYMAIL['MAILGUN_API_URL']", " ".join(e.msg for e in errors))

    def test_failover_entry_options_are_checked_too(self):
        """An api_url in a FIRST_WORKING_EMAIL_BACKENDS entry's OPTIONS is refused as well."""
        entry = {"NAME": "sendgrid", "BACKEND": "sendgrid", "OPTIONS": {"api_url": SANDBOX_URL}}
        self.assertEqual(
            sandbox_check_ids(DEBUG=False, ANYMAIL={}, FIRST_WORKING_EMAIL_BACKENDS=[entry]), ["sandbox.E001"]
        )

    def test_real_provider_urls_pass(self):
        """Real API URLs, and loopback URLs outside the sandbox paths, raise nothing."""
        anymail = {
            "SENDGRID_API_URL": "https://api.sendgrid.com/v3/",
            "MAILGUN_API_URL": "http://127.0.0.1:9000/v3",
        }
        self.assertEqual(sandbox_check_ids(DEBUG=False, ANYMAIL=anymail), [])

    def test_sandbox_url_recognition(self):
        """Loopback host plus a provider path is the sandbox; a public host is not."""
        self.assertTrue(is_sandbox_url("http://127.0.0.2:1/mailgun/v3"))
        public = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("203.0.113.5", 0))]
        with mock.patch("sandbox.conf.socket.getaddrinfo", return_value=public):  # no DNS in tests
            self.assertFalse(is_sandbox_url("https://sandbox.example.com/sendgrid/v3/"))
        self.assertFalse(is_sandbox_url("not a url"))


class SettingsTests(SimpleTestCase):
    def test_non_loopback_hosts_are_refused(self):
        """0.0.0.0, a LAN address or a host name other than localhost cannot be bound."""
        for host in ("0.0.0.0", "192.168.1.10", "::", "example.com"):
            with self.subTest(host=host), self.assertRaises(SandboxConfigError):
                SandboxSettings(host=host)

    def test_loopback_hosts_are_accepted(self):
        """127.0.0.1, other 127/8 addresses, ::1 and localhost are loopback."""
        for host in ("127.0.0.1", "127.0.0.5", "::1", "localhost"):
            with self.subTest(host=host):
                self.assertEqual(SandboxSettings(host=host).host, host)

    def test_provider_ports_follow_the_control_port(self):
        """By default SendGrid, Mailgun and Mandrill listen on port + 1, + 2, + 3."""
        ports = SandboxSettings(port=9000).resolved_provider_ports()
        self.assertEqual(ports, {"sendgrid": 9001, "mailgun": 9002, "mandrill": 9003})

    def test_environment_variables_override_fallbacks(self):
        """SANDBOX_* variables win over the project's values, which win over the defaults."""
        settings = SandboxSettings.from_env(
            {
                "SANDBOX_PORT": "9100",
                "SANDBOX_MAILGUN_API_KEY": "from-env",
                "SANDBOX_MAILGUN_DOMAINS": "a.example, b.example",
            },
            api_keys={"mailgun": "from-project", "mandrill": "project-mandrill"},
            webhook_secret="u:p",
        )
        self.assertEqual(settings.port, 9100)
        self.assertEqual(settings.api_keys["mailgun"], "from-env")
        self.assertEqual(settings.api_keys["mandrill"], "project-mandrill")
        self.assertEqual(settings.webhook_secret, "u:p")
        self.assertEqual(settings.sender_domains, {"mailgun": ("a.example", "b.example")})

    def test_invalid_values_name_the_variable(self):
        """A non-number port says which variable is wrong."""
        with self.assertRaisesMessage(SandboxConfigError, "SANDBOX_PORT"):
            SandboxSettings.from_env({"SANDBOX_PORT": "eighty"})

    def test_service_environment_points_every_provider_at_the_default_sandbox(self):
        """What `make run` gives web and worker: the chain in order, URLs, keys and secrets."""
        env = service_environment()
        self.assertEqual(env["FIRST_WORKING_EMAIL_BACKENDS"], "sendgrid,mailgun,mandrill")
        self.assertEqual(env["ANYMAIL_MAILGUN_API_URL"], "http://127.0.0.1:8027/mailgun/v3")
        self.assertEqual(env["ANYMAIL_SENDGRID_API_KEY"], "SG.sandbox-sendgrid-key")
        self.assertEqual(env["ANYMAIL_WEBHOOK_SECRET"], "sandbox:sandbox-webhook-secret")
        self.assertTrue(all(is_sandbox_url(v) for k, v in env.items() if k.endswith("_API_URL")))

    def test_a_providers_credential_setting_is_its_own(self):
        """An ESP whose credential is not `<NAME>_API_KEY` (Postmark's `SERVER_TOKEN`) gets its key
        under the setting its spec names."""
        postmark = dataclasses.replace(PROVIDERS[0], api_key_setting="SENDGRID_SERVER_TOKEN")
        with mock.patch("sandbox.conf.PROVIDERS", (postmark, *PROVIDERS[1:])):
            env = service_environment()
        self.assertEqual(env["ANYMAIL_SENDGRID_SERVER_TOKEN"], "SG.sandbox-sendgrid-key")
        self.assertNotIn("ANYMAIL_SENDGRID_API_KEY", env)

    def test_clashing_ports_are_refused(self):
        """A provider port equal to the control port is an error."""
        with self.assertRaises(SandboxConfigError):
            SandboxSettings(port=9000, provider_ports={"mailgun": 9000})


class FaultRuleTests(SimpleTestCase):
    def test_down_wins_over_everything(self):
        """A provider that is down refuses, whatever else its fault says."""
        board = FaultBoard()
        board.set("sendgrid", Fault(down=True, status=503, timeout=True))
        self.assertEqual(board.decide("sendgrid").action, Action.REFUSE_CONNECTION)

    def test_timeout_wins_over_status(self):
        """A held answer comes before an error status."""
        board = FaultBoard()
        board.set("sendgrid", Fault(timeout=True, status=503))
        self.assertEqual(board.decide("sendgrid").action, Action.TIMEOUT)

    def test_fault_flags_parse(self):
        """--fault PROVIDER:KIND[:VALUE] covers each kind."""
        self.assertEqual(parse_fault_flag("mailgun:down"), ("mailgun", Fault(down=True)))
        self.assertEqual(parse_fault_flag("sendgrid:503"), ("sendgrid", Fault(status=503)))
        self.assertEqual(parse_fault_flag("mandrill:slow:2000")[1], Fault(delay_ms=2000))
        rate = parse_fault_flag("sendgrid:error-rate:0.25", seed=5)[1]
        self.assertEqual(rate, Fault(error_rate=0.25, seed=5))

    def test_bad_flags_are_refused(self):
        """An unknown provider or kind, or a missing value, is a FaultSpecError."""
        with self.assertRaises(UnknownProviderError):
            parse_fault_flag("postmark:down")
        for words in (("slow",), ("status", "abc"), ("explode",), ("error-rate", "3")):
            with self.subTest(words=words), self.assertRaises(FaultSpecError):
                fault_from_words(*words)


class ConventionTests(SimpleTestCase):
    def test_local_part_prefix_names_the_fate(self):
        """bounce+, complain+, reject+ and invalid+ (and the bare words) choose the fate, any case."""
        self.assertEqual(fate_of("bounce+1@example.net"), Fate.BOUNCE)
        self.assertEqual(fate_of("Complain@example.net"), Fate.COMPLAIN)
        self.assertEqual(fate_of("REJECT+x@example.net"), Fate.REJECT)
        self.assertEqual(fate_of("invalid+y@example.net"), Fate.INVALID)
        self.assertEqual(fate_of("bouncer@example.net"), Fate.DELIVER)
        self.assertEqual(fate_of("user+bounce@example.net"), Fate.DELIVER)
