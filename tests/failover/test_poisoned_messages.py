"""A message's own error never blames a provider (docs/failover.md, "What happens to a message"):
errors raised before a byte reaches the network are the message's (local_error), whatever
their class; only the provider's answers, or their absence, judge a provider. Real payloads go
through the real Anymail backends; `responses` answers whatever reaches HTTP."""

from __future__ import annotations

import base64
import email.errors
import http.client
import socket
import threading
from email.mime.base import MIMEBase

from anymail.exceptions import AnymailConfigurationError
from django.core.mail.backends.base import BaseEmailBackend

from failover.attempts import Outcome
from failover.errors import classify, is_content_error
from failover.exceptions import AllProvidersFailed
from failover.network import NetworkWatch
from tests.esp import CHAIN, SENDGRID
from tests.failover.base import FailoverTestCase

HEADER_TRAP = "tests.failover.test_poisoned_messages.HeaderTrapBackend"
AFTER_REQUEST = "tests.failover.test_poisoned_messages.BrokenAfterRequestBackend"


def nested(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"a": value}
    return value


def bad_inline_text() -> MIMEBase:
    """An inline text/plain part whose bytes are not UTF-8 (what a client's bad upload becomes)."""
    part = MIMEBase("text", "plain")
    part.set_payload(base64.b64encode(b"\xff\xfe not utf-8").decode())
    part["Content-Transfer-Encoding"] = "base64"
    part.add_header("Content-Disposition", "inline", filename="note.txt")
    part.add_header("Content-ID", "<note>")
    return part


class HeaderTrapBackend(BaseEmailBackend):
    """A custom backend whose header parser refuses one subject, as some SMTP libraries do."""

    sent: list = []

    def send_messages(self, messages):
        for message in messages:
            if "poison" in message.subject:
                raise email.errors.HeaderParseError("cannot parse this subject")
            type(self).sent.append(message)
        return len(messages)


class BrokenAfterRequestBackend(BaseEmailBackend):
    """Talks to a real local socket, then fails reading the answer: a provider's fault."""

    port = 0

    def send_messages(self, messages):
        connection = http.client.HTTPConnection("127.0.0.1", type(self).port, timeout=2)
        try:
            connection.request("POST", "/send", body=b"{}")
            connection.getresponse().read()
        finally:
            connection.close()
        raise ValueError("could not read the provider's answer")


class PoisonedPayloadTests(FailoverTestCase):
    """Every ESP of the chain is asked, none is called over HTTP, and none is marked failing."""

    def assert_blames_no_provider(self, message, error_class):
        with self.assertRaises(error_class):
            self.send(message)
        self.assertEqual([a.provider for a in message.failover_attempts], ["sendgrid", "mailgun", "mandrill"])
        self.assertEqual({a.outcome for a in message.failover_attempts}, {Outcome.LOCAL_ERROR})
        self.assertEqual(self.esp.total_calls(), 0)
        states = [row["state"] for row in self.connection().provider_states()]
        self.assertEqual(states, ["active", "standby", "standby"])
        plain = self.message()
        self.send(plain)
        self.assertEqual(plain.failover_provider, "sendgrid")

    def test_metadata_too_deep_to_serialize_is_the_messages_error(self):
        """RecursionError while serializing one message's metadata marks no provider failing."""
        message = self.message()
        message.metadata = {"deep": nested(100_000)}  # beyond any interpreter's recursion limit
        self.assert_blames_no_provider(message, RecursionError)

    def test_inline_text_attachment_that_is_not_utf8_is_the_messages_error(self):
        """UnicodeDecodeError while encoding one attachment marks no provider failing."""
        message = self.message()
        message.attach(bad_inline_text())
        self.assert_blames_no_provider(message, UnicodeError)

    def test_unserializable_metadata_goes_to_a_provider_that_can_send_it(self):
        """SendGrid cannot serialize the value, Mailgun sends it as text: sent, SendGrid not failing."""
        message = self.message()
        message.metadata = {"when": object()}
        self.assertEqual(self.send(message), 1)
        self.assertEqual(message.failover_provider, "mailgun")
        self.assertEqual(message.failover_attempts[0].outcome, Outcome.LOCAL_ERROR)
        self.assertIn("AnymailSerializationError", message.failover_attempts[0].error_class)
        self.assertEqual([row["state"] for row in self.connection().provider_states()][0], "active")


class CustomBackendTests(FailoverTestCase):
    chain = [{"NAME": "trap", "BACKEND": HEADER_TRAP}, SENDGRID]

    def setUp(self):
        super().setUp()
        HeaderTrapBackend.sent = []

    def test_header_parse_error_in_a_custom_backend_keeps_later_traffic_on_it(self):
        """email.errors.HeaderParseError for one subject: that message moves on, later ones stay."""
        poisoned = self.message(subject="poison pill")
        self.send(poisoned)
        self.assertEqual(poisoned.failover_provider, "sendgrid")
        self.assertEqual(poisoned.failover_attempts[0].outcome, Outcome.LOCAL_ERROR)
        later = [self.message(subject=f"fine {n}") for n in range(3)]
        self.send(*later)
        self.assertEqual([m.failover_provider for m in later], ["trap"] * 3)
        self.assertEqual(len(HeaderTrapBackend.sent), 3)


class _OneAnswerServer:
    """A loopback HTTP server answering 200 to anything, for attempts that reach the network."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with client:
                client.recv(65536)
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")

    def close(self):
        self.listener.close()


class NetworkReachedTests(FailoverTestCase):
    chain = [{"NAME": "broken", "BACKEND": AFTER_REQUEST}, SENDGRID]

    def setUp(self):
        super().setUp()
        self.server = _OneAnswerServer()
        self.addCleanup(self.server.close)
        BrokenAfterRequestBackend.port = self.server.port

    def test_an_error_after_the_request_went_out_is_the_providers(self):
        """The same ValueError that is local before the network blames the provider after it."""
        message = self.message()
        self.send(message)
        self.assertEqual(message.failover_attempts[0].outcome, Outcome.PROVIDER_ERROR)
        self.assertEqual(message.failover_provider, "sendgrid")
        self.assertEqual([row["state"] for row in self.connection().provider_states()][0], "failing")

    def test_watch_sees_a_connection_only_in_its_own_thread(self):
        """A socket connected in another thread does not count for this thread's watch."""
        with NetworkWatch() as watch:
            worker = threading.Thread(
                target=lambda: socket.create_connection(("127.0.0.1", self.server.port)).close()
            )
            worker.start()
            worker.join()
        self.assertFalse(watch.reached)
        with NetworkWatch() as outer:
            with NetworkWatch() as inner:
                socket.create_connection(("127.0.0.1", self.server.port)).close()
        self.assertTrue(inner.reached)
        self.assertTrue(outer.reached)


class ClassificationTests(FailoverTestCase):
    def test_errors_before_the_network_are_local_whatever_their_class(self):
        """Raised with nothing sent: local_error, for content errors and others alike."""
        for error in (
            RecursionError(),
            UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
            email.errors.HeaderParseError(),
            TypeError("x"),
            RuntimeError("bug"),
        ):
            with self.subTest(error=type(error).__name__):
                self.assertEqual(classify(error, reached_network=False), Outcome.LOCAL_ERROR)

    def test_an_sdk_wrapping_its_transport_error_still_blames_the_provider(self):
        """A DNS failure or refused connection wrapped in a backend's own class is the provider's."""
        import requests

        class SdkError(Exception):
            pass

        for transport in (
            requests.ConnectionError("Name or service not known"),
            ConnectionRefusedError(111, "refused"),
            socket.gaierror(-2, "Name or service not known"),
        ):
            with self.subTest(transport=type(transport).__name__):
                try:
                    try:
                        raise transport
                    except Exception as cause:
                        raise SdkError("could not reach the API") from cause
                except SdkError as wrapped:
                    self.assertEqual(classify(wrapped, reached_network=False), Outcome.PROVIDER_ERROR)
                self.assertEqual(classify(transport, reached_network=False), Outcome.PROVIDER_ERROR)

    def test_a_content_error_after_the_request_went_out_is_ambiguous(self):
        """Failing to decode the provider's answer: it may have taken the message."""
        error = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        self.assertEqual(classify(error, reached_network=True), Outcome.AMBIGUOUS)
        self.assertEqual(classify(error, reached_network=False), Outcome.LOCAL_ERROR)

    def test_content_errors_are_told_from_other_local_errors(self):
        """Content errors will not improve by waiting; a backend's bug might."""
        self.assertTrue(is_content_error(RecursionError()))
        self.assertTrue(is_content_error(email.errors.HeaderParseError()))
        self.assertFalse(is_content_error(RuntimeError("bug")))


class ConfigurationErrorTests(FailoverTestCase):
    def test_a_one_provider_chain_that_cannot_be_built_raises_that_providers_error(self):
        """No API key: AnymailConfigurationError, as the SendGrid backend alone would raise."""
        unbuildable = {"NAME": "sendgrid", "BACKEND": "sendgrid", "OPTIONS": {}}
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[unbuildable], ANYMAIL={}):
            message = self.message()
            with self.assertRaises(AnymailConfigurationError):
                self.send(message)
        self.assertEqual(message.failover_attempts[0].outcome, Outcome.PROVIDER_ERROR)

    def test_every_provider_unbuildable_raises_the_first_ones_error(self):
        """The first provider's own error, not a later one's, with every attempt on it."""
        unbuildable = {"NAME": "sendgrid", "BACKEND": "sendgrid", "OPTIONS": {}}
        broken = {"NAME": "broken", "BACKEND": "django.core.mail.backends.filebased.EmailBackend"}
        with self.settings(
            FIRST_WORKING_EMAIL_BACKENDS=[unbuildable, broken], ANYMAIL={}, EMAIL_FILE_PATH=None
        ):
            message = self.message()
            with self.assertRaises(AnymailConfigurationError) as caught:
                self.send(message)
        self.assertEqual([a.provider for a in caught.exception.failover_attempts], ["sendgrid", "broken"])
        self.assertEqual(message.failover_attempts, caught.exception.failover_attempts)

    def test_one_buildable_provider_failing_still_raises_all_providers_failed(self):
        """Only a chain where nothing could be built reads as a configuration error."""
        unbuildable = {"NAME": "mailgun", "BACKEND": "mailgun", "OPTIONS": {}}
        self.esp.fail("sendgrid", 503)
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[unbuildable, SENDGRID], ANYMAIL={}):
            with self.assertRaises(AllProvidersFailed):
                self.send(self.message())


class CallerOpenedSessionTests(FailoverTestCase):
    chain = CHAIN

    def test_a_failed_send_keeps_the_callers_sessions_open_until_it_closes(self):
        """Anymail's contract: a session the caller opened stays open after a send raised, then closes."""
        connection = self.connection()
        connection.open()
        connection.send_messages([self.message()])
        first = connection._pool.instances["sendgrid"]
        self.esp.fail("sendgrid", 503)
        self.esp.fail("mailgun", 503)
        self.esp.fail("mandrill", 503)
        with self.assertRaises(AllProvidersFailed):
            connection.send_messages([self.message()])
        self.assertIsNotNone(first.session)  # wait for the caller to close it
        connection.close()
        self.assertIsNone(first.session)
        self.assertEqual(connection._pool.retired, [])
        self.assertEqual(connection._pool.instances, {})

    def test_a_provider_failing_again_and_again_keeps_one_backend_aside(self):
        """Each failure sets the failed backend aside; an older one of the same provider is closed."""
        self.esp.fail("sendgrid", 503)
        connection = self.connection(backends=[SENDGRID], probe_interval=1)
        connection.open()
        self.addCleanup(connection.close)
        backends = []
        for _ in range(3):
            connection.forget()  # so each message asks SendGrid again
            with self.assertRaises(AllProvidersFailed):
                connection.send_messages([self.message()])
            backends.append(connection._pool.retired[-1][1])
        self.assertEqual([name for name, _ in connection._pool.retired], ["sendgrid"])
        self.assertEqual([backend.session is None for backend in backends], [True, True, False])
