"""Which errors move a message to the next provider, and which are final (docs/failover.md,
"What happens to a message")."""

import requests
from anymail.exceptions import AnymailRecipientsRefused, AnymailRequestsAPIError
from django.core.mail import EmailMultiAlternatives

from failover.attempts import Outcome
from failover.exceptions import AllProvidersFailed, AmbiguousSendError
from tests.esp import MAILGUN, MANDRILL, SENDGRID
from tests.failover.base import FailoverTestCase


class HealthyPrimaryTests(FailoverTestCase):
    def test_healthy_primary_takes_the_message_in_one_call(self):
        """A working primary costs exactly one HTTP request and no other provider is touched."""
        message = self.message()
        self.assertEqual(self.send(message), 1)
        self.assertEqual(self.esp.calls("sendgrid"), 1)
        self.assertEqual(self.esp.total_calls(), 1)
        self.assertEqual(message.failover_provider, "sendgrid")
        self.assertEqual([a.outcome for a in message.failover_attempts], [Outcome.SENT])

    def test_message_carries_the_sending_providers_anymail_status(self):
        """anymail_status is the status reported by the provider that sent the message."""
        self.esp.fail("sendgrid", 503)
        message = self.message()
        self.send(message)
        self.assertEqual(message.failover_provider, "mailgun")
        self.assertEqual(message.anymail_status.status, {"queued"})
        self.assertEqual(message.anymail_status.message_id, "<20261125.1@mg.example.com>")


class ProviderErrorTests(FailoverTestCase):
    """Each of these says "this provider cannot take mail now": the next provider gets it."""

    def assert_failed_over(self, error_class_fragment: str | None = None):
        message = self.message()
        mailgun_before = self.esp.calls("mailgun")
        self.assertEqual(self.send(message), 1)
        self.assertEqual(message.failover_provider, "mailgun")
        first, second = message.failover_attempts
        self.assertEqual(first.provider, "sendgrid")
        self.assertEqual(first.outcome, Outcome.PROVIDER_ERROR)
        self.assertFalse(first.ambiguous)
        if error_class_fragment:
            self.assertIn(error_class_fragment, first.error_class)
        self.assertEqual(second.outcome, Outcome.SENT)
        self.assertEqual(self.esp.calls("mailgun"), mailgun_before + 1)
        return first

    def test_http_5xx_fails_over(self):
        """A 500/502/503 from the provider moves the message on."""
        for status in (500, 502, 503):
            with self.subTest(status=status):
                self.clock.advance(3600)  # forget the previous subtest's detour
                self.esp.fail("sendgrid", status)
                attempt = self.assert_failed_over()
                self.assertEqual(attempt.status_code, status)

    def test_http_429_fails_over(self):
        """A provider that throttles us is skipped for this message."""
        self.esp.fail("sendgrid", 429)
        self.assertEqual(self.assert_failed_over().status_code, 429)

    def test_http_401_and_403_fail_over(self):
        """A revoked or wrong API key is the provider's problem, not the message's."""
        for status in (401, 403):
            with self.subTest(status=status):
                self.clock.advance(3600)
                self.esp.fail("sendgrid", status)
                self.assertEqual(self.assert_failed_over().status_code, status)

    def test_http_404_from_send_endpoint_fails_over(self):
        """A wrong URL, account or Mailgun domain ("Domain not found") fails over."""
        self.esp.fail("sendgrid", 404, "Not Found")
        self.assertEqual(self.assert_failed_over().status_code, 404)

    def test_connection_refused_fails_over(self):
        """An unreachable provider is skipped."""
        self.esp.down("sendgrid")
        self.assert_failed_over("ConnectionError")

    def test_connect_timeout_fails_over_and_is_not_ambiguous(self):
        """A connect timeout sent nothing, so failing over cannot duplicate."""
        self.esp.connect_timeout("sendgrid")
        self.assert_failed_over("ConnectTimeout")

    def test_missing_provider_configuration_fails_over(self):
        """A provider whose backend cannot be built (no API key) is skipped with its reason."""
        self.chain = [
            {"NAME": "sendgrid", "BACKEND": "sendgrid", "OPTIONS": {"api_url": "https://x.test/"}},
            MAILGUN,
        ]
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=self.chain):
            attempt = self.assert_failed_over("ProviderBuildError")
        self.assertIn("SENDGRID_API_KEY", attempt.error)

    def test_unimportable_backend_fails_over(self):
        """A backend path that does not import is a provider error, not a lost message."""
        chain = [{"NAME": "sendgrid", "BACKEND": "nowhere.backends.EmailBackend"}, MAILGUN]
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=chain):
            self.assert_failed_over("ProviderBuildError")

    def test_unsupported_feature_fails_over_to_a_provider_that_has_it(self):
        """Mandrill cannot send two HTML parts; SendGrid can, so it gets the message."""
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[MANDRILL, SENDGRID]):
            message = EmailMultiAlternatives(
                subject="Two html parts", body="text", from_email="app@example.com", to=["user@example.net"]
            )
            message.attach_alternative("<p>one</p>", "text/html")
            message.attach_alternative("<p>two</p>", "text/html")
            self.assertEqual(self.send(message), 1)
        self.assertEqual(message.failover_provider, "sendgrid")
        self.assertIn("AnymailUnsupportedFeature", message.failover_attempts[0].error_class)
        self.assertEqual(self.esp.calls("mandrill"), 0)


class MessageErrorTests(FailoverTestCase):
    """A refusal of the message itself is final: no second provider ever sees it."""

    def assert_final(self, exception_class, message=None):
        message = message or self.message()
        with self.assertRaises(exception_class):
            self.send(message)
        self.assertEqual(self.esp.calls("mailgun"), 0)
        self.assertEqual(self.esp.calls("mandrill"), 0)
        self.assertIsNone(message.failover_provider)
        self.assertEqual(message.failover_attempts[-1].outcome, Outcome.MESSAGE_ERROR)
        return message

    def test_http_400_validation_error_is_final(self):
        """SendGrid's 400 (invalid payload) is not offered to Mailgun."""
        self.esp.fail("sendgrid", 400, {"errors": [{"message": "Invalid email", "field": "to"}]})
        message = self.assert_final(AnymailRequestsAPIError)
        self.assertEqual(message.failover_attempts[0].status_code, 400)

    def test_http_422_is_final(self):
        """A 422 unprocessable message is final."""
        self.esp.fail("sendgrid", 422)
        self.assert_final(AnymailRequestsAPIError)

    def test_every_recipient_refused_is_final(self):
        """Mandrill rejecting every recipient raises AnymailRecipientsRefused and stops."""
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[MANDRILL, SENDGRID, MAILGUN]):
            self.esp.answer(
                "mandrill",
                200,
                '[{"email": "user@example.net", "status": "rejected", "_id": "x",'
                ' "reject_reason": "hard-bounce"}]',
            )
            message = self.message()
            with self.assertRaises(AnymailRecipientsRefused):
                self.send(message)
        self.assertEqual(self.esp.calls("mandrill"), 1)
        self.assertEqual(self.esp.calls("sendgrid") + self.esp.calls("mailgun"), 0)
        self.assertEqual(message.failover_attempts[0].outcome, Outcome.MESSAGE_ERROR)

    def test_invalid_address_is_final_and_reaches_no_provider(self):
        """An address Anymail cannot parse fails before any HTTP call, and nowhere else."""
        from anymail.exceptions import AnymailInvalidAddress

        self.assert_final(AnymailInvalidAddress, self.message(to=["user@"]))
        self.assertEqual(self.esp.total_calls(), 0)

    def test_header_with_a_newline_is_final_on_every_django(self):
        """A subject with a line break (BadHeaderError on 5.2, ValueError on 6.1) is the message's fault."""
        chain = [{"NAME": "locmem", "BACKEND": "django.core.mail.backends.locmem.EmailBackend"}, MAILGUN]
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=chain):
            message = self.assert_final(ValueError, self.message(subject="Hello\nBcc: everyone@example.net"))
        self.assertEqual([a.provider for a in message.failover_attempts], ["locmem"])

    def test_refusals_of_recipients_are_told_from_refusals_of_content(self):
        """refuses_recipients says which message errors refuse the addresses (the gateway's "rejected")."""
        import smtplib

        from anymail.exceptions import AnymailInvalidAddress, AnymailSerializationError

        from failover.errors import refuses_recipients

        self.assertTrue(refuses_recipients(AnymailRecipientsRefused()))
        self.assertTrue(refuses_recipients(AnymailInvalidAddress()))
        self.assertTrue(refuses_recipients(smtplib.SMTPRecipientsRefused({})))
        self.assertFalse(refuses_recipients(AnymailSerializationError()))
        self.assertFalse(refuses_recipients(AnymailRequestsAPIError(status_code=400)))

    def test_fail_silently_returns_zero_for_a_message_error(self):
        """fail_silently=True reports 0 sent instead of raising."""
        self.esp.fail("sendgrid", 400)
        self.assertEqual(self.send(self.message(), fail_silently=True), 0)
        self.assertEqual(self.esp.calls("mailgun"), 0)


class AmbiguousTests(FailoverTestCase):
    """A request that went out without an answer may have been sent."""

    def test_read_timeout_fails_over_and_is_flagged_ambiguous(self):
        """By default the message goes on, and the attempt says it may be a duplicate."""
        self.esp.read_timeout("sendgrid")
        message = self.message()
        self.assertEqual(self.send(message), 1)
        self.assertEqual(message.failover_provider, "mailgun")
        self.assertTrue(message.failover_attempts[0].ambiguous)
        self.assertEqual(message.failover_attempts[0].outcome, Outcome.AMBIGUOUS)

    def test_connection_aborted_after_sending_is_ambiguous(self):
        """A connection dropped mid-request is as ambiguous as a read timeout."""
        self.esp.aborted("sendgrid")
        message = self.message()
        self.send(message)
        self.assertTrue(message.failover_attempts[0].ambiguous)

    def test_unexpected_json_success_answer_is_ambiguous(self):
        """A 200 of JSON that Anymail cannot read is the ESP's API answering: it may have sent it."""
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[MAILGUN, SENDGRID]):
            self.esp.answer("mailgun", 200, '{"unexpected": "shape"}')
            message = self.message()
            self.send(message)
        self.assertEqual(message.failover_attempts[0].outcome, Outcome.AMBIGUOUS)
        self.assertEqual(message.failover_provider, "sendgrid")

    def test_empty_or_cut_off_success_answer_is_ambiguous(self):
        """An empty 200, or JSON cut short, may follow an accepted message: ambiguous."""
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[MAILGUN, SENDGRID]):
            for body in ("", '{"id": "<abc@mg'):
                with self.subTest(repr(body)):
                    self.esp.answer("mailgun", 200, body)
                    message = self.message()
                    self.send(message, cache_timeout=0)
                    self.assertEqual(message.failover_attempts[0].outcome, Outcome.AMBIGUOUS)

    def test_success_answer_that_is_not_the_esps_api_is_a_provider_error(self):
        """Mailgun's "Mailgun Magnificent API" page (a wrong API URL) sent nothing: not ambiguous."""
        with self.settings(FIRST_WORKING_EMAIL_BACKENDS=[MAILGUN, SENDGRID]):
            for body in ("Mailgun Magnificent API", "<html>proxy page</html>"):
                with self.subTest(body):
                    self.esp.answer("mailgun", 200, body)
                    message = self.message()
                    self.send(message, cache_timeout=0)
                    self.assertEqual(message.failover_attempts[0].outcome, Outcome.PROVIDER_ERROR)
                    self.assertFalse(message.failover_attempts[0].ambiguous)
                    self.assertEqual(message.failover_provider, "sendgrid")

    def test_setting_refuses_to_fail_over_on_ambiguous(self):
        """With FIRST_WORKING_EMAIL_FAILOVER_ON_AMBIGUOUS off, the message stays with the first provider."""
        self.esp.read_timeout("sendgrid")
        message = self.message()
        with self.settings(FIRST_WORKING_EMAIL_FAILOVER_ON_AMBIGUOUS=False):
            with self.assertRaises(AmbiguousSendError) as caught:
                self.send(message)
        self.assertEqual(self.esp.calls("mailgun"), 0)
        self.assertEqual(caught.exception.attempts[0].provider, "sendgrid")
        self.assertTrue(caught.exception.attempts[0].ambiguous)


class AllFailedTests(FailoverTestCase):
    def test_all_providers_failed_carries_each_providers_error(self):
        """AllProvidersFailed names every provider with its own error, in the order tried."""
        self.esp.fail("sendgrid", 503)
        self.esp.down("mailgun")
        self.esp.fail("mandrill", 500, {"status": "error", "name": "GeneralError", "message": "oops"})
        with self.assertRaises(AllProvidersFailed) as caught:
            self.send(self.message())
        failure = caught.exception
        self.assertEqual(list(failure.errors), ["sendgrid", "mailgun", "mandrill"])
        self.assertEqual([a.provider for a in failure.attempts], ["sendgrid", "mailgun", "mandrill"])
        self.assertEqual(failure.attempts[0].status_code, 503)
        self.assertIn("mailgun", str(failure))

    def test_errors_never_show_api_keys(self):
        """Neither the exception text nor the attempts contain a configured secret."""
        from tests.esp import MAILGUN_KEY, MANDRILL_KEY, SENDGRID_KEY

        self.esp.fail("sendgrid", 401, {"errors": [{"message": f"bad key {SENDGRID_KEY}"}]})
        self.esp.behaviour["mailgun"] = requests.ConnectionError(f"refused for {MAILGUN_KEY}")
        self.esp.fail("mandrill", 500, f'{{"message": "Invalid API key {MANDRILL_KEY}"}}')
        with self.assertRaises(AllProvidersFailed) as caught:
            self.send(self.message())
        text = str(caught.exception) + repr([a.as_dict() for a in caught.exception.attempts])
        for secret in (SENDGRID_KEY, MAILGUN_KEY, MANDRILL_KEY):
            self.assertNotIn(secret, text)

    def test_fail_silently_returns_zero_and_logs(self):
        """With fail_silently=True nothing is raised, 0 is returned, and the failure is logged."""
        for name in ("sendgrid", "mailgun", "mandrill"):
            self.esp.down(name)
        with self.assertLogs("failover.backends", "ERROR") as logs:
            self.assertEqual(self.send(self.message(), fail_silently=True), 0)
        self.assertIn("all providers failed", logs.output[-1])
