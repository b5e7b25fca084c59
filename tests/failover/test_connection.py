"""The failover backend as a drop-in Django connection: sessions, copies, send_mail through any
inner backend, Anymail's exception contract, and one-line attempt records."""

import tempfile
from pathlib import Path
from unittest import mock

from anymail.exceptions import AnymailAPIError
from django.core import mail
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend

from failover.exceptions import AllProvidersFailed
from tests.esp import SENDGRID
from tests.failover.base import FailoverTestCase

LOCMEM = {"NAME": "locmem", "BACKEND": "django.core.mail.backends.locmem.EmailBackend"}


class CountingBackend(LocmemBackend):
    """Locmem that counts the sessions opened and closed on it (class-wide, per test)."""

    opened = 0
    closed = 0

    def open(self):
        type(self).opened += 1
        return True

    def close(self):
        type(self).closed += 1


COUNTING = {"NAME": "counting", "BACKEND": f"{__name__}.CountingBackend"}


class SessionTests(FailoverTestCase):
    def setUp(self):
        super().setUp()
        CountingBackend.opened = CountingBackend.closed = 0

    def test_with_block_opens_each_inner_backend_once_and_closes_it_at_the_end(self):
        """`with connection:` is one session: inner backends open once and close when it ends."""
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[COUNTING]):
            connection = self.connection()
            with connection as open_connection:
                open_connection.send_messages([self.message()])
                open_connection.send_messages([self.message()])
                self.assertEqual((CountingBackend.opened, CountingBackend.closed), (1, 0))
            self.assertEqual((CountingBackend.opened, CountingBackend.closed), (1, 1))
            self.assertEqual(connection._pool.active, False)

    def test_repeated_blocks_leave_nothing_open(self):
        """Each block closes what it opened; the session depth never grows."""
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[COUNTING]):
            connection = self.connection()
            for _ in range(3):
                with connection:
                    connection.send_messages([self.message()])
            self.assertEqual((CountingBackend.opened, CountingBackend.closed), (3, 3))
            self.assertEqual(connection._pool.active, False)

    def test_djangos_own_open_close_pattern_inside_a_block(self):
        """`created = c.open(); ...; if created: c.close()` inside `with c:` leaves the block in charge."""
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[COUNTING]):
            connection = self.connection()
            with connection:
                created = connection.open()
                connection.send_messages([self.message()])
                if created:
                    connection.close()
                self.assertFalse(created)
            self.assertEqual((CountingBackend.opened, CountingBackend.closed), (1, 1))
            self.assertFalse(connection._pool.active)

    def test_a_failed_connection_is_not_reused(self):
        """After a provider error the inner backend is closed and the next message starts afresh."""
        connection = self.connection()
        with connection:
            self.esp.fail("sendgrid", 503)
            connection.send_messages([self.message()])
            self.assertNotIn("sendgrid", connection._pool.instances)

    def test_a_send_outside_a_block_is_its_own_session(self):
        """send_messages without open() opens and closes the inner backend itself."""
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[COUNTING]):
            self.send(self.message())
        self.assertEqual((CountingBackend.opened, CountingBackend.closed), (1, 1))

    def test_anymail_session_is_shared_within_the_block_and_closed_after(self):
        """Anymail's requests session is reused by every send of the block, then closed."""
        connection = self.connection()
        with connection:
            connection.send_messages([self.message()])
            session = connection._pool.instances["sendgrid"].session
            connection.send_messages([self.message()])
            self.assertIs(connection._pool.instances["sendgrid"].session, session)
            inner = connection._pool.instances["sendgrid"]
        self.assertIsNone(inner.session)
        self.assertEqual(self.esp.calls("sendgrid"), 2)


class SendMailTests(FailoverTestCase):
    """Django's send_mail() puts the connection on the message; inner backends may copy it."""

    def test_send_mail_through_locmem_which_deep_copies_the_message(self):
        """Locmem deep-copies each message, connection included: the copy shares the backend."""
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[LOCMEM, SENDGRID]):
            mail.outbox = []
            self.assertEqual(mail.send_mail("Hi", "Body", "app@example.com", ["user@example.net"]), 1)
        self.assertEqual(len(mail.outbox), 1)
        self.assertEqual(self.esp.total_calls(), 0)

    def test_send_mail_through_the_file_backend(self):
        """The file backend writes the message."""
        with tempfile.TemporaryDirectory() as folder:
            entry = {
                "NAME": "file",
                "BACKEND": "django.core.mail.backends.filebased.EmailBackend",
                "OPTIONS": {"file_path": folder},
            }
            with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[entry]):
                self.assertEqual(mail.send_mail("Hi", "Body", "app@example.com", ["user@example.net"]), 1)
            self.assertIn("Subject: Hi", "".join(path.read_text() for path in Path(folder).iterdir()))

    def test_send_mail_through_the_console_backend(self):
        """The console backend prints the message."""
        entry = {"NAME": "console", "BACKEND": "django.core.mail.backends.console.EmailBackend"}
        with mock.patch("sys.stdout") as stdout, self.settings(FIRST_WORKING_EMAIL_BACKENDS=[entry]):
            self.assertEqual(mail.send_mail("Hi", "Body", "app@example.com", ["user@example.net"]), 1)
        self.assertIn("Subject: Hi", "".join(str(call.args[0]) for call in stdout.write.call_args_list))

    def test_send_mail_through_smtp(self):
        """The SMTP backend gets the message (an SMTP server stand-in answers)."""
        entry = {
            "NAME": "smtp",
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "smtp.test"},
        }
        with mock.patch("smtplib.SMTP") as smtp, self.settings(FIRST_WORKING_EMAIL_BACKENDS=[entry]):
            self.assertEqual(mail.send_mail("Hi", "Body", "app@example.com", ["user@example.net"]), 1)
        self.assertEqual(smtp.return_value.sendmail.call_count, 1)

    def test_send_mail_through_anymail(self):
        """An Anymail backend sends it over HTTP."""
        self.assertEqual(mail.send_mail("Hi", "Body", "app@example.com", ["user@example.net"]), 1)
        self.assertEqual(self.esp.calls("sendgrid"), 1)


class ExceptionContractTests(FailoverTestCase):
    def test_all_providers_failed_is_an_anymail_api_error(self):
        """Code written for one Anymail backend (`except AnymailAPIError`) still catches the
        chain's failure."""
        for name in ("sendgrid", "mailgun", "mandrill"):
            self.esp.fail(name, 503)
        with self.assertRaises(AnymailAPIError) as caught:
            self.send(self.message())
        self.assertIsInstance(caught.exception, AllProvidersFailed)
        self.assertEqual(list(caught.exception.errors), ["sendgrid", "mailgun", "mandrill"])
        self.assertTrue(str(caught.exception).startswith("All 3 providers failed: sendgrid: HTTP 503"))

    def test_a_secret_echoed_by_the_provider_is_masked_before_it_is_cut(self):
        """An API key the ESP quotes back never shows, even in part, however long the answer."""
        from tests.esp import SENDGRID_KEY

        self.esp.fail("sendgrid", 401, "x" * 150 + f" bad key {SENDGRID_KEY}")
        message = self.message()
        self.send(message)
        self.assertNotIn(SENDGRID_KEY[:6], message.failover_attempts[0].error)

    def test_attempt_errors_are_one_line(self):
        """A provider answer spread over lines is recorded on one line."""
        self.esp.fail("sendgrid", 500, "first line\nsecond line\r\n  third")
        message = self.message()
        self.send(message)
        error = message.failover_attempts[0].error
        self.assertNotIn("\n", error)
        self.assertNotIn("\r", error)
        self.assertIn("first line second line third", error)
