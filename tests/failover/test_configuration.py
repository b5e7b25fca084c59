"""FIRST_WORKING_EMAIL_BACKENDS entries, names, timeouts and Django 6.1 MAILERS aliases."""

from unittest import skipUnless

import django
from django.test import SimpleTestCase, override_settings

from failover.backends import FirstWorkingEmailBackend
from failover.exceptions import FailoverConfigurationError
from failover.providers import expand_backend_path, load_providers
from tests.esp import MAILGUN, MAILGUN_EU, MAILGUN_EU_API_URL, SENDGRID
from tests.failover.base import FailoverTestCase

HAS_MAILERS = django.VERSION >= (6, 1)


class ChainParsingTests(SimpleTestCase):
    def test_anymail_short_names_expand_to_their_backend(self):
        """`sendgrid` means anymail.backends.sendgrid.EmailBackend."""
        self.assertEqual(expand_backend_path("sendgrid"), "anymail.backends.sendgrid.EmailBackend")
        self.assertEqual(expand_backend_path("Mailgun"), "anymail.backends.mailgun.EmailBackend")

    def test_names_default_to_esp_name_or_module(self):
        """Anymail backends are named for their ESP, other backends for their module."""
        providers = load_providers(["sendgrid", "django.core.mail.backends.console.EmailBackend"])
        self.assertEqual([p.name for p in providers], ["sendgrid", "console"])

    def test_dict_entries_keep_name_backend_and_options(self):
        """A dict entry gives its own NAME and OPTIONS."""
        (provider,) = load_providers([MAILGUN_EU])
        self.assertEqual(provider.name, "mailgun-eu")
        self.assertEqual(provider.backend_path, "anymail.backends.mailgun.EmailBackend")
        self.assertEqual(provider.options["sender_domain"], "eu.example.com")

    def test_chain_is_parsed_once_per_value_of_the_setting(self):
        """The same chain is parsed once; a changed setting is parsed anew, even when assigned directly."""
        from django.conf import settings

        with override_settings(FIRST_WORKING_EMAIL_BACKENDS=["sendgrid"]):
            first = load_providers()
            self.assertIs(load_providers()[0], first[0])
            settings.FIRST_WORKING_EMAIL_BACKENDS = ["mailgun"]  # as a shell or a script would
            self.assertEqual([p.name for p in load_providers()], ["mailgun"])

    def test_empty_chain_is_refused(self):
        """No provider at all is a configuration error naming the setting."""
        with self.assertRaisesMessage(FailoverConfigurationError, "FIRST_WORKING_EMAIL_BACKENDS is empty"):
            load_providers([])

    def test_duplicate_names_are_refused(self):
        """Two entries of one ESP need distinct NAMEs."""
        with self.assertRaisesMessage(FailoverConfigurationError, "Two providers are named 'mailgun'"):
            load_providers(["mailgun", "anymail.backends.mailgun.EmailBackend"])

    def test_malformed_entries_are_refused_with_their_position(self):
        """Bad entries name their index and what is wrong."""
        cases = [
            ([42], "FIRST_WORKING_EMAIL_BACKENDS[0] must be"),
            (["sendgrid", {"NAME": "x"}], "FIRST_WORKING_EMAIL_BACKENDS[1] needs a BACKEND"),
            ([{"BACKEND": "sendgrid", "OPTION": {}}], "unknown keys ['OPTION']"),
            ([{"BACKEND": "sendgrid", "OPTIONS": "key"}], "['OPTIONS'] must be a dict"),
            ([" "], "FIRST_WORKING_EMAIL_BACKENDS[0] is empty"),
        ]
        for entries, text in cases:
            with self.subTest(entries=entries):
                with self.assertRaisesMessage(FailoverConfigurationError, text):
                    load_providers(entries)

    @override_settings(FIRST_WORKING_EMAIL_BACKENDS=[])
    def test_backend_refuses_to_build_without_providers(self):
        """Building the backend fails loudly instead of silently dropping mail."""
        with self.assertRaises(FailoverConfigurationError):
            FirstWorkingEmailBackend()


class TwoAccountsTests(FailoverTestCase):
    chain = [MAILGUN, MAILGUN_EU, SENDGRID]

    def test_two_accounts_of_one_esp_fail_over_to_each_other(self):
        """mailgun (US) down: mailgun-eu, the same ESP with other credentials, takes the message."""
        self.esp.fail("mailgun", 401)
        message = self.message()
        self.send(message)
        self.assertEqual(message.failover_provider, "mailgun-eu")
        (request,) = self.esp.received["mailgun-eu"]
        self.assertTrue(request.url.startswith(MAILGUN_EU_API_URL))
        self.assertEqual(self.esp.calls("sendgrid"), 0)


class TimeoutTests(FailoverTestCase):
    def last_timeout(self, name):
        return self.esp.received[name][-1].req_kwargs["timeout"]

    def test_short_default_timeouts_reach_the_http_client(self):
        """Providers get (connect, read) timeouts of seconds, not Anymail's 30 s."""
        self.send(self.message())
        self.assertEqual(self.last_timeout("sendgrid"), (3.05, 15.0))

    def test_timeouts_come_from_settings(self):
        """FIRST_WORKING_EMAIL_CONNECT_TIMEOUT and _READ_TIMEOUT set them for every provider."""
        with self.settings(FIRST_WORKING_EMAIL_CONNECT_TIMEOUT=1, FIRST_WORKING_EMAIL_READ_TIMEOUT=4):
            self.send(self.message())
        self.assertEqual(self.last_timeout("sendgrid"), (1.0, 4.0))

    def test_an_entry_can_set_its_own_timeout(self):
        """OPTIONS['timeout'] of one provider wins over the defaults."""
        chain = [{**SENDGRID, "OPTIONS": {**SENDGRID["OPTIONS"], "timeout": (2, 60)}}]
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=chain):
            self.send(self.message())
        self.assertEqual(self.last_timeout("sendgrid"), (2, 60))

    def test_smtp_backend_gets_the_read_timeout(self):
        """Django's SMTP backend takes a single timeout: the read timeout."""
        smtp = {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "localhost", "port": 25},
        }
        (provider,) = load_providers([smtp])
        self.assertEqual(provider.build((1.0, 7.0)).timeout, 7.0)


class GetConnectionOptionsTests(FailoverTestCase):
    def test_connection_kwargs_override_settings(self):
        """A `backends` option (get_connection kwarg or MAILERS OPTIONS) replaces the setting."""
        connection = self.connection(backends=[MAILGUN])
        message = self.message()
        connection.send_messages([message])
        self.assertEqual(message.failover_provider, "mailgun")


@skipUnless(HAS_MAILERS, f"MAILERS arrives in Django 6.1; this run has Django {django.get_version()}")
class MailersTests(FailoverTestCase):
    def mailers(self):
        return {
            "default": {
                "BACKEND": "failover.backends.FirstWorkingEmailBackend",
                "OPTIONS": {"backends": ["transactional", "backup"]},
            },
            "transactional": {
                "BACKEND": "anymail.backends.sendgrid.EmailBackend",
                "OPTIONS": SENDGRID["OPTIONS"],
            },
            "backup": {"BACKEND": "anymail.backends.mailgun.EmailBackend", "OPTIONS": MAILGUN["OPTIONS"]},
        }

    def test_chain_entries_may_name_mailers_aliases(self):
        """On Django 6.1 an entry names a MAILERS alias; the alias is the provider's name."""
        from django.core.mail import mailers

        with self.settings(MAILERS=self.mailers()):
            self.esp.fail("sendgrid", 503)
            message = self.message()
            mailers.default.send_messages([message])
        self.assertEqual([a.provider for a in message.failover_attempts], ["transactional", "backup"])
        self.assertEqual(message.failover_provider, "backup")

    def test_chain_may_not_name_itself(self):
        """A MAILERS alias that is the failover backend itself is refused."""
        mailers = self.mailers()
        mailers["loop"] = {"BACKEND": "failover.backends.FirstWorkingEmailBackend"}
        with self.settings(MAILERS=mailers):
            with self.assertRaisesMessage(FailoverConfigurationError, "failover backend itself"):
                load_providers(["loop"])
