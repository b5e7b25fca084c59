"""Each fault, seen through the real Anymail backends and classified by the failover backend as
docs/sandbox.md ("Faults") says: down, 5xx, 429 and 401 are the provider's; a read timeout is
ambiguous; a refused recipient is the message's."""

import socket
import time

from anymail.exceptions import AnymailRecipientsRefused, AnymailRequestsAPIError
from django.core.cache import caches

from failover.attempts import Outcome
from sandbox.faults import Fault
from sandbox.store import ReplyKind
from tests.sandbox.base import READ_TIMEOUT, SandboxTestCase


class FailoverClassificationTests(SandboxTestCase):
    def send_expecting_failover(self, *names: str, **options):
        """Send one message; the first provider fails, the second takes it. Returns the first attempt."""
        message = self.message()
        self.assertEqual(self.failover(*names, **options).send_messages([message]), 1)
        first, second = message.failover_attempts
        self.assertEqual((second.provider, second.outcome), (names[1] if names else "mailgun", Outcome.SENT))
        self.assertEqual(message.failover_provider, second.provider)
        return first

    def test_down_is_a_provider_error(self):
        """A provider that is down refuses the connection; the failover backend moves on, not ambiguous."""
        self.fault("sendgrid", down=True)
        first = self.send_expecting_failover()
        self.assertEqual((first.provider, first.outcome), ("sendgrid", Outcome.PROVIDER_ERROR))
        self.assertIn("ConnectionError", first.error_class)
        self.assertEqual(self.received("sendgrid"), [])

    def test_down_refuses_the_connection_at_tcp_level(self):
        """Down closes the provider's port: a plain connect() is refused, the control port still answers."""
        self.fault("mailgun", down=True)
        port = self.sandbox.listeners["mailgun"].port
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        socket.create_connection(("127.0.0.1", self.sandbox.control.port), timeout=2).close()

    def test_down_drops_open_keep_alive_connections_too(self):
        """A session that already holds a connection to the provider also sees a refused connection."""
        backend = self.failover("sendgrid", "mailgun")
        with backend:  # one session for both sends, as a batch or a long-lived connection would
            first_message = self.message()
            backend.send_messages([first_message])
            self.assertEqual(first_message.failover_provider, "sendgrid")
            self.fault("sendgrid", down=True)
            second_message = self.message()
            backend.send_messages([second_message])
        self.assertEqual(second_message.failover_attempts[0].outcome, Outcome.PROVIDER_ERROR)
        self.assertEqual(second_message.failover_provider, "mailgun")

    def test_clearing_down_serves_again_on_the_same_port(self):
        """After the fault is cleared the provider listens on its old port and takes mail."""
        port = self.sandbox.listeners["sendgrid"].port
        self.fault("sendgrid", down=True)
        self.sandbox.faults.clear("sendgrid")
        self.assertEqual(self.sandbox.listeners["sendgrid"].port, port)
        self.assertEqual(self.backend("sendgrid").send_messages([self.message()]), 1)

    def test_http_5xx_is_a_provider_error(self):
        """500, 502 and 503 move the message to the next provider, with the status recorded."""
        for status in (500, 502, 503):
            with self.subTest(status=status):
                self.caches_forget()
                self.fault("sendgrid", status=status)
                first = self.send_expecting_failover()
                self.assertEqual((first.outcome, first.status_code), (Outcome.PROVIDER_ERROR, status))

    def test_http_429_is_a_provider_error(self):
        """A throttled provider is skipped for this message."""
        self.fault("mailgun", status=429)
        first = self.send_expecting_failover("mailgun", "mandrill")
        self.assertEqual((first.outcome, first.status_code), (Outcome.PROVIDER_ERROR, 429))

    def test_http_401_is_a_provider_error(self):
        """A 401 (a revoked key) is the provider's problem, not the message's."""
        self.fault("mandrill", status=401)
        first = self.send_expecting_failover("mandrill", "sendgrid")
        self.assertEqual((first.outcome, first.status_code), (Outcome.PROVIDER_ERROR, 401))

    def test_auth_fault_answers_as_the_provider_does_to_a_revoked_key(self):
        """`auth` gives Mandrill's own 500 Invalid_Key; the failover backend still moves on."""
        self.fault("mandrill", auth=True)
        first = self.send_expecting_failover("mandrill", "mailgun")
        self.assertEqual((first.outcome, first.status_code), (Outcome.PROVIDER_ERROR, 500))
        self.assertEqual(self.received("mandrill")[0]["fault"], "auth")

    def test_read_timeout_is_ambiguous_and_the_message_was_taken(self):
        """A held answer times the client out: ambiguous, failed over, and the sandbox kept the message."""
        self.fault("sendgrid", timeout=True)
        started = time.monotonic()
        first = self.send_expecting_failover(read_timeout=READ_TIMEOUT)
        self.assertEqual(first.outcome, Outcome.AMBIGUOUS)
        self.assertIn("ReadTimeout", first.error_class)
        self.assertGreaterEqual(first.duration, READ_TIMEOUT)
        self.assertLess(time.monotonic() - started, 10)  # the client's timeout, not the 60 s hold
        self.assertEqual(self.received("sendgrid")[0]["outcome"], ReplyKind.TIMEOUT)

    def test_a_timeout_shorter_than_the_clients_read_timeout_is_just_slow(self):
        """hold_ms below the read timeout: the client waits and gets the normal answer."""
        self.fault("sendgrid", timeout=True, hold_ms=200)
        message = self.message()
        self.failover().send_messages([message])
        self.assertEqual([a.outcome for a in message.failover_attempts], [Outcome.SENT])

    def test_slow_provider_answers_after_the_delay(self):
        """delay_ms slows the answer but the message is sent by the same provider."""
        self.fault("sendgrid", delay_ms=200)
        message = self.message()
        self.failover().send_messages([message])
        (attempt,) = message.failover_attempts
        self.assertEqual(attempt.outcome, Outcome.SENT)
        self.assertGreaterEqual(attempt.duration, 0.2)

    def test_rejected_recipient_is_a_message_error_and_no_other_provider_is_tried(self):
        """SendGrid's 400 for a reject+ address is final: the message is not offered to Mailgun."""
        message = self.message(to=["reject+x@example.net"])
        with self.assertRaises(AnymailRequestsAPIError) as caught:
            self.failover().send_messages([message])
        self.assertEqual(caught.exception.status_code, 400)
        self.assertEqual([a.outcome for a in message.failover_attempts], [Outcome.MESSAGE_ERROR])
        self.assertEqual(self.received("mailgun") + self.received("mandrill"), [])

    def test_mandrill_rejecting_every_recipient_is_a_message_error(self):
        """AnymailRecipientsRefused from Mandrill's per-recipient answer stops the chain."""
        message = self.message(to=["reject+x@example.net"])
        with self.assertRaises(AnymailRecipientsRefused):
            self.failover("mandrill", "sendgrid").send_messages([message])
        self.assertEqual([a.outcome for a in message.failover_attempts], [Outcome.MESSAGE_ERROR])
        self.assertEqual(self.received("sendgrid"), [])

    def test_clearing_a_fault_restores_the_provider(self):
        """DELETE (clear) makes a failing provider healthy again."""
        self.fault("sendgrid", status=503)
        self.sandbox.faults.clear("sendgrid")
        message = self.message()
        self.failover().send_messages([message])
        self.assertEqual(message.failover_provider, "sendgrid")

    def caches_forget(self) -> None:
        """Forget which provider worked, so each subtest starts at the primary."""
        caches["default"].clear()


class RetryAfterTests(SandboxTestCase):
    def test_429_carries_retry_after_defaulting_to_one_second(self):
        """A 429 fault answers with Retry-After: 1 unless told otherwise."""
        self.fault("sendgrid", status=429)
        with self.assertRaises(AnymailRequestsAPIError) as caught:
            self.backend("sendgrid").send_messages([self.message()])
        self.assertEqual(caught.exception.response.headers["Retry-After"], "1")
        self.assertEqual(caught.exception.response.json()["errors"][0]["message"], "too many requests")

    def test_retry_after_is_configurable(self):
        """retry_after sets the header's seconds."""
        self.fault("mailgun", status=429, retry_after=7)
        with self.assertRaises(AnymailRequestsAPIError) as caught:
            self.backend("mailgun").send_messages([self.message()])
        self.assertEqual(caught.exception.response.headers["Retry-After"], "7")


class ErrorRateTests(SandboxTestCase):
    def pattern(self, fault: Fault, sends: int = 24) -> list[bool]:
        """Set the fault, send `sends` messages straight to SendGrid; True where one failed."""
        self.sandbox.set_fault("sendgrid", fault)
        backend = self.backend("sendgrid")
        failed = []
        for _ in range(sends):
            try:
                backend.send_messages([self.message()])
                failed.append(False)
            except AnymailRequestsAPIError as err:
                self.assertEqual(err.status_code, fault.error_status)
                failed.append(True)
        return failed

    def test_the_same_seed_gives_the_same_failures(self):
        """Two runs with one seed fail on exactly the same sends, and some but not all fail."""
        first = self.pattern(Fault(error_rate=0.5, seed=7))
        second = self.pattern(Fault(error_rate=0.5, seed=7))
        self.assertEqual(first, second)
        self.assertTrue(any(first) and not all(first))

    def test_another_seed_gives_other_failures(self):
        """Different seeds give different sequences."""
        one, two = self.pattern(Fault(error_rate=0.5, seed=1)), self.pattern(Fault(error_rate=0.5, seed=2))
        self.assertNotEqual(one, two)

    def test_error_status_is_configurable(self):
        """Every failing draw answers the configured status (here 502, rate 1)."""
        self.assertTrue(all(self.pattern(Fault(error_rate=1.0, error_status=502, seed=1), sends=3)))

    def test_rate_zero_never_fails(self):
        """error_rate 0 is a healthy provider."""
        self.assertFalse(any(self.pattern(Fault(error_rate=0.0), sends=5)))


class SandboxSeedTests(SandboxTestCase):
    sandbox_options = {"seed": 99}

    def test_faults_without_a_seed_use_the_sandboxs_seed(self):
        """--seed makes error-rate faults that name no seed repeatable too."""
        patterns = []
        for _ in range(2):
            self.sandbox.set_fault("sendgrid", Fault(error_rate=0.5))
            backend = self.backend("sendgrid")
            outcome = []
            for _ in range(16):
                try:
                    backend.send_messages([self.message()])
                    outcome.append(True)
                except AnymailRequestsAPIError:
                    outcome.append(False)
            patterns.append(outcome)
        self.assertEqual(patterns[0], patterns[1])
