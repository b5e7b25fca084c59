"""Provider health beyond a timer: probes back to a recovered provider, Retry-After, send-rate
caps, message-specific local errors, and the `failover` signal. All on an injected clock."""

from io import StringIO

from django.core.management import call_command
from django.test import override_settings

from failover import signals
from failover.attempts import Outcome
from failover.backends import FirstWorkingEmailBackend
from tests.esp import MAILGUN, SENDGRID
from tests.failover.base import FailoverTestCase

LOCMEM = {"NAME": "locmem", "BACKEND": "django.core.mail.backends.locmem.EmailBackend"}


class SignalRecorder:
    def __init__(self, test, signal):
        self.calls = []
        signal.connect(self.receive)
        test.addCleanup(signal.disconnect, self.receive)

    def receive(self, sender, **kwargs):
        self.calls.append(kwargs)


class ProbeTests(FailoverTestCase):
    """FIRST_WORKING_EMAIL_PROBE_INTERVAL defaults to 60 s; the memory here lasts 600 s."""

    def detour_to_mailgun(self):
        self.esp.down("sendgrid")
        self.assertEqual(self.sent_by(), "mailgun")

    def sent_by(self) -> str | None:
        message = self.message()
        self.send(message)
        return message.failover_provider

    def test_recovered_primary_is_back_at_the_first_probe(self):
        """A probe one interval after the failure finds the primary working, and the chain returns to it."""
        self.detour_to_mailgun()
        self.esp.ok("sendgrid")
        self.clock.advance(59)
        self.assertEqual(self.sent_by(), "mailgun")  # not due yet
        self.clock.advance(1)
        self.assertEqual(self.sent_by(), "sendgrid")  # the probe
        self.assertEqual(self.sent_by(), "sendgrid")  # and the chain is back
        self.assertEqual(self.connection().provider_states()[0]["state"], "active")

    def test_failed_probe_passes_the_message_on_and_backs_off(self):
        """A failing probe costs one try; the next waits twice as long, capped by the memory."""
        self.detour_to_mailgun()
        self.clock.advance(60)
        self.assertEqual(self.sent_by(), "mailgun")
        self.assertEqual(self.esp.calls("sendgrid"), 2)  # the failure, then the probe
        self.clock.advance(119)
        self.sent_by()
        self.assertEqual(self.esp.calls("sendgrid"), 2)  # the next probe is 120 s after the last
        self.clock.advance(1)
        self.sent_by()
        self.assertEqual(self.esp.calls("sendgrid"), 3)

    def test_only_one_probe_per_interval_across_processes(self):
        """Two processes that read the same memory: only one of them probes."""
        self.detour_to_mailgun()
        self.clock.advance(60)
        first, second = FirstWorkingEmailBackend(), FirstWorkingEmailBackend()
        state_one, state_two = first.memory.load(), second.memory.load()
        self.assertEqual(first.memory.probe_due(state_one), "sendgrid")
        self.assertEqual(second.memory.probe_due(state_two), "sendgrid")
        self.assertTrue(first.memory.claim_probe(state_one, "sendgrid"))
        self.assertFalse(second.memory.claim_probe(state_two, "sendgrid"))

    def test_probe_is_logged_with_its_finding(self):
        """The logs say that a probe happened and what it found."""
        self.detour_to_mailgun()
        self.clock.advance(60)
        with self.assertLogs("failover.backends", "INFO") as logs:
            self.sent_by()
        text = "\n".join(logs.output)
        self.assertIn("failover probe provider=sendgrid", text)
        self.assertIn("failover probe failed provider=sendgrid next_probe_in=120s", text)

    @override_settings(FIRST_WORKING_EMAIL_PROBE_INTERVAL=3600)
    def test_memory_timeout_stays_the_upper_bound(self):
        """However long the interval, the memory ends at FIRST_WORKING_EMAIL_CACHE_TIMEOUT."""
        self.detour_to_mailgun()
        self.esp.ok("sendgrid")
        self.clock.advance(601)
        self.assertEqual(self.sent_by(), "sendgrid")

    def test_failover_status_shows_the_next_probe(self):
        """failover_status prints when a failing provider is probed next."""
        self.detour_to_mailgun()
        out = StringIO()
        call_command("failover_status", stdout=out)
        self.assertIn("next probe", out.getvalue())


class RetryAfterTests(FailoverTestCase):
    def slow_down(self, name: str, status: int = 429, retry_after: str | None = "30"):
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.esp.behaviour[name] = (status, headers, '{"errors": [{"message": "slow down"}]}')

    def test_429_skips_the_provider_exactly_as_long_as_asked(self):
        """A 429 with Retry-After: 30 sends to the next provider, skips the first for 30 s, then
        tries it again."""
        failed = SignalRecorder(self, signals.provider_failed)
        self.slow_down("sendgrid")
        message = self.message()
        self.send(message)
        self.assertEqual(message.failover_provider, "mailgun")
        self.esp.ok("sendgrid")
        self.clock.advance(29)
        message = self.message()
        self.send(message)
        self.assertEqual((message.failover_provider, self.esp.calls("sendgrid")), ("mailgun", 1))
        self.clock.advance(1)
        message = self.message()
        self.send(message)
        self.assertEqual(message.failover_provider, "sendgrid")
        self.assertEqual(failed.calls, [])  # slow down is not down

    def test_503_with_retry_after_waits_and_without_it_fails(self):
        """A 503 with Retry-After is a wait; a bare 503 marks the provider failing."""
        self.slow_down("sendgrid", status=503, retry_after="120")
        self.send(self.message())
        self.assertEqual(self.connection().provider_states()[0]["state"], "waiting")
        self.clock.advance(121)
        self.esp.fail("sendgrid", 503)
        self.send(self.message())
        self.assertEqual(self.connection().provider_states()[0]["state"], "failing")

    def test_retry_after_as_a_date(self):
        """Retry-After may be an HTTP date."""
        from email.utils import formatdate

        self.slow_down("sendgrid", retry_after=formatdate(self.clock.now + 300, usegmt=True))
        self.send(self.message())
        until = self.connection().provider_states()[0]["retry_after_until"]
        self.assertAlmostEqual(until - self.clock.now, 300, delta=1)

    def test_retry_after_that_is_no_number_or_date_is_ignored(self):
        """A Retry-After of digits that are not ASCII (or of nonsense) counts as absent."""
        from failover.errors import _parse_retry_after

        self.assertIsNone(_parse_retry_after("²", self.clock.now))
        self.assertIsNone(_parse_retry_after("soon", self.clock.now))

    def test_retry_after_is_capped_by_the_memory(self):
        """A Retry-After of a day waits no longer than FIRST_WORKING_EMAIL_CACHE_TIMEOUT (600 s here)."""
        self.slow_down("sendgrid", retry_after="86400")
        self.send(self.message())
        self.assertEqual(self.connection().provider_states()[0]["retry_after_until"], self.clock.now + 600)

    def test_retry_after_wins_over_the_probe(self):
        """A failing provider that answers its probe with Retry-After is not probed again until
        the wait ends."""
        self.esp.down("sendgrid")
        self.send(self.message())
        self.clock.advance(60)
        self.slow_down("sendgrid", retry_after="300")
        self.send(self.message())  # the probe: asked to wait 300 s
        calls = self.esp.calls("sendgrid")
        self.clock.advance(299)
        self.send(self.message())
        self.assertEqual(self.esp.calls("sendgrid"), calls)

    def test_every_provider_waiting_fails_the_message_without_a_request(self):
        """When every provider asked to wait, nobody is asked, and the failure says why."""
        for name in ("sendgrid", "mailgun", "mandrill"):
            self.slow_down(name)
        self.send(self.message(), fail_silently=True)
        calls = self.esp.total_calls()
        from failover.exceptions import AllProvidersFailed

        with self.assertRaises(AllProvidersFailed) as caught:
            self.send(self.message())
        self.assertEqual(self.esp.total_calls(), calls)
        self.assertEqual(
            caught.exception.skipped,
            {"sendgrid": "retry_after", "mailgun": "retry_after", "mandrill": "retry_after"},
        )

    def test_failover_status_shows_the_wait(self):
        """failover_status prints the Retry-After deadline."""
        self.slow_down("sendgrid")
        self.send(self.message())
        out = StringIO()
        call_command("failover_status", stdout=out)
        self.assertIn("Retry-After", out.getvalue())


class RateLimitTests(FailoverTestCase):
    chain = [{**SENDGRID, "OPTIONS": {**SENDGRID["OPTIONS"], "RATE_LIMIT": "2/s"}}, MAILGUN]

    def test_spent_rate_sends_to_the_next_provider_until_the_next_window(self):
        """With RATE_LIMIT 2/s, the third message of a second goes to the next provider."""
        moved = SignalRecorder(self, signals.failover)
        providers = []
        for _ in range(3):
            message = self.message()
            self.send(message)
            providers.append(message.failover_provider)
        self.assertEqual(providers, ["sendgrid", "sendgrid", "mailgun"])
        self.assertEqual(moved.calls[0]["reason"], "rate_limited")
        self.clock.advance(1)
        message = self.message()
        self.send(message)
        self.assertEqual(message.failover_provider, "sendgrid")

    def test_rate_limit_is_not_passed_to_the_backend(self):
        """RATE_LIMIT is the chain's option, not the backend's."""
        self.assertIsNone(self.connection()._by_name["sendgrid"].options.get("RATE_LIMIT"))

    def test_malformed_rate_limit_is_a_configuration_error(self):
        """A RATE_LIMIT that is not sends per period names the entry."""
        from failover.exceptions import FailoverConfigurationError
        from failover.providers import load_providers

        for value in ("fast", "5/0s", "0/s"):
            with self.subTest(value), self.assertRaisesMessage(FailoverConfigurationError, "RATE_LIMIT"):
                load_providers([{**SENDGRID, "OPTIONS": {"RATE_LIMIT": value}}])


class LocalErrorTests(FailoverTestCase):
    """An error raised while one message is encoded is that message's, not the provider's."""

    def unencodable(self):
        # A lone surrogate cannot be encoded in a MIME header; JSON (Anymail) escapes it.
        return self.message(headers={"X-Note": "\ud800"})

    def test_local_error_moves_the_message_on_without_marking_the_provider(self):
        """Locmem cannot encode the header, SendGrid's JSON can: sent, and locmem is not failing."""
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[LOCMEM, SENDGRID]):
            message = self.unencodable()
            self.send(message)
            self.assertEqual(message.failover_provider, "sendgrid")
            self.assertEqual(message.failover_attempts[0].outcome, Outcome.LOCAL_ERROR)
            self.assertEqual(
                [row["state"] for row in self.connection().provider_states()], ["active", "standby"]
            )
            plain = self.message()
            self.send(plain)
            self.assertEqual(plain.failover_provider, "locmem")

    def test_local_error_with_a_provider_skipped_is_retried_later(self):
        """A provider passed over (rate-limited, waiting) may still take it: AllProvidersFailed,
        not the message's fault."""
        from failover.exceptions import AllProvidersFailed

        limited = {**SENDGRID, "OPTIONS": {**SENDGRID["OPTIONS"], "RATE_LIMIT": "1/m"}}
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[limited, LOCMEM]):
            self.send(self.message())  # spends SendGrid's one send of the minute
            with self.assertRaises(AllProvidersFailed) as caught:
                self.send(self.unencodable())
        self.assertEqual(caught.exception.skipped, {"sendgrid": "rate_limited"})

    def test_unsupported_feature_is_this_messages_not_the_providers(self):
        """A feature one ESP lacks sends the message on, and never marks that ESP failing."""
        from django.core.mail import EmailMultiAlternatives

        from tests.esp import MANDRILL

        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[MANDRILL, SENDGRID]):
            message = EmailMultiAlternatives(
                subject="s", body="b", from_email="a@example.com", to=["u@example.net"]
            )
            message.attach_alternative("<p>one</p>", "text/html")
            message.attach_alternative("<p>two</p>", "text/html")  # Mandrill takes one HTML part
            self.send(message)
            self.assertEqual(message.failover_attempts[0].outcome, Outcome.LOCAL_ERROR)
            self.assertEqual(
                [row["state"] for row in self.connection().provider_states()], ["active", "standby"]
            )

    def test_local_error_everywhere_is_the_messages_error(self):
        """When no provider's backend can encode it, its own error is raised, not AllProvidersFailed."""
        other = {"NAME": "other", "BACKEND": "django.core.mail.backends.locmem.EmailBackend"}
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[LOCMEM, other]):
            with self.assertRaises(UnicodeError):
                self.send(self.unencodable())


class FailoverSignalTests(FailoverTestCase):
    def test_signal_says_from_to_and_why(self):
        """A message moved off its first choice fires `failover` once with from, to and reason."""
        moved = SignalRecorder(self, signals.failover)
        self.esp.fail("sendgrid", 500)
        message = self.message()
        self.send(message)
        self.assertEqual(len(moved.calls), 1)
        call = moved.calls[0]
        self.assertEqual(
            (call["message"], call["from_provider"], call["to_provider"], call["reason"]),
            (message, "sendgrid", "mailgun", "provider_error"),
        )

    def test_remembered_detour_is_not_a_failover(self):
        """Messages that start at the remembered provider did not move: no signal for them."""
        self.esp.down("sendgrid")
        self.send(self.message())
        moved = SignalRecorder(self, signals.failover)
        self.send(self.message())
        self.assertEqual(moved.calls, [])
