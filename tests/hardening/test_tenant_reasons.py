"""What a tenant reads about a failure (docs/api.md, "GET /api/messages/{id}"): a one-line
reason built from the attempt's outcome, HTTP status and error class, never the provider's own
answer; operators keep the full text in the database and the admin."""

import json

import requests
import responses
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import SimpleTestCase, TestCase, override_settings
from django.test.utils import CaptureQueriesContext

from failover.attempts import Outcome
from mailservice.models import DeliveryAttempt, Message
from mailservice.reasons import INTERRUPTED, attempt_reason
from mailservice.services.delivery import message_deliver
from mailservice.services.messages import message_cancel
from tests.esp import mock_mailgun
from tests.mailservice.helpers import MAILGUN_URL, SENDGRID_URL, VALID, GatewayMixin, esp_settings

# What providers answered, with what a tenant must not read: an account name, an echoed key,
# an internal host.
SENDGRID_401 = json.dumps(
    {"errors": [{"message": "Invalid API key SG.acme-corp-prod for account acme-corp-42"}]}
)
MAILGUN_503 = "upstream mg-eu-internal-7.mailgun.net unavailable"
SENDGRID_400 = json.dumps(
    {"errors": [{"message": "Content rejected: subscriber list acme-vip-2030", "field": "content"}]}
)


@esp_settings()
class TenantReasonTests(GatewayMixin, TestCase):
    def deliver(self, body=None) -> str:
        message_id = self.post_message(body or VALID).json()["id"]
        message_deliver(message_id=message_id)
        return message_id

    def shown(self, message_id: str) -> dict:
        response = self.client.get(f"/api/messages/{message_id}", **self.auth)
        self.assertEqual(response.status_code, 200, response.content)
        return response.json()

    @responses.activate
    def test_provider_answers_become_one_line_reasons(self):
        """A 401 and a 503: each attempt, the message's last_error and the recipient's error
        read as reasons; nothing of either provider's answer reaches the tenant."""
        responses.add(responses.POST, SENDGRID_URL, status=401, body=SENDGRID_401)
        mock_mailgun(responses, status=503, body=MAILGUN_503)
        message_id = self.deliver()
        body = self.shown(message_id)
        self.assertEqual(body["status"], "deferred")
        self.assertEqual(
            [(a["provider"], a["error"], a["status_code"]) for a in body["attempts"]],
            [
                ("sendgrid", "provider refused the API key (HTTP 401)", 401),
                ("mailgun", "provider unavailable (HTTP 503)", 503),
            ],
        )
        expected = (
            "sendgrid: provider refused the API key (HTTP 401); mailgun: provider unavailable (HTTP 503)"
        )
        self.assertEqual(body["last_error"], expected)
        self.assertEqual(body["recipients"][0]["error"], expected)
        text = json.dumps(body)
        for leaked in ("Invalid API key", "acme", "mg-eu-internal", "Unauthorized", "Service Unavailable"):
            self.assertNotIn(leaked, text)

    @responses.activate
    def test_the_full_answer_stays_in_the_database_and_the_admin(self):
        """Operators still read what the providers answered: stored whole, shown by the admin."""
        responses.add(responses.POST, SENDGRID_URL, status=401, body=SENDGRID_401)
        mock_mailgun(responses, status=503, body=MAILGUN_503)
        message_id = self.deliver()
        message = Message.objects.get(pk=message_id)
        self.assertIn("Invalid API key SG.acme-corp-prod", message.attempts.get(provider="sendgrid").error)
        self.assertIn("mg-eu-internal-7", message.last_error)
        admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.force_login(admin)
        page = self.client.get(f"/admin/mailservice/message/{message_id}/change/").content.decode()
        self.assertIn("Invalid API key SG.acme-corp-prod for account acme-corp-42", page)
        self.assertIn(MAILGUN_503, page)

    @responses.activate
    def test_message_refused_by_the_provider(self):
        """A 400 is the message's: "message refused by provider (HTTP 400)", without the answer."""
        responses.add(responses.POST, SENDGRID_URL, status=400, body=SENDGRID_400)
        message_id = self.deliver()
        body = self.shown(message_id)
        self.assertEqual(body["status"], "failed")
        self.assertEqual(body["attempts"][0]["error"], "message refused by provider (HTTP 400)")
        self.assertEqual(body["last_error"], "sendgrid: message refused by provider (HTTP 400)")
        self.assertNotIn("acme-vip", json.dumps(body))

    @responses.activate
    def test_timeouts(self):
        """A connect timeout and a read timeout (which may have sent it) each say so."""
        responses.add(
            responses.POST, SENDGRID_URL, body=requests.ConnectTimeout("connect to sg-internal-3 timed out")
        )
        responses.add(
            responses.POST, MAILGUN_URL, body=requests.ReadTimeout("read from mg-internal-9 timed out")
        )
        body = self.shown(self.deliver())
        self.assertEqual(
            [a["error"] for a in body["attempts"]],
            [
                "timed out connecting to provider",
                "timed out waiting for provider's answer; it may have sent the message",
            ],
        )
        self.assertNotIn("internal", json.dumps(body))

    @responses.activate
    def test_the_gateways_own_sentences_are_shown_as_they_are(self):
        """A cancelled message says so after its failed round, not what the providers answered."""
        responses.add(responses.POST, SENDGRID_URL, status=401, body=SENDGRID_401)
        mock_mailgun(responses, status=503, body=MAILGUN_503)
        message_id = self.deliver()
        message_cancel(message=Message.objects.get(pk=message_id))
        body = self.shown(message_id)
        self.assertEqual(body["last_error"], "Cancelled by an operator.")
        self.assertEqual(body["recipients"][0]["error"], "Cancelled by an operator.")
        self.assertEqual(body["attempts"][0]["error"], "provider refused the API key (HTTP 401)")

    @responses.activate
    def test_reasons_cost_no_query_per_recipient(self):
        """Reasons come from the rows the message's page already read: 1 or 40 failed
        recipients, the same number of queries."""
        responses.add(responses.POST, SENDGRID_URL, status=401, body=SENDGRID_401)
        mock_mailgun(responses, status=503, body=MAILGUN_503)
        counts = []
        for recipients in (1, 40):
            to = [f"user{index}@example.com" for index in range(recipients)]
            message_id = self.deliver({**VALID, "to": to})
            with CaptureQueriesContext(connection) as queries:
                body = self.shown(message_id)
            self.assertEqual(len(body["recipients"]), recipients)
            self.assertTrue(
                all(r["error"].startswith("sendgrid: provider refused") for r in body["recipients"])
            )
            counts.append(len(queries))
        self.assertEqual(counts[0], counts[1])


class AttemptReasonTests(SimpleTestCase):
    def test_reasons_by_status(self):
        """Each HTTP status a provider answers reads as one reason, its status in brackets."""
        cases = {
            (Outcome.PROVIDER_ERROR, 401): "provider refused the API key (HTTP 401)",
            (Outcome.PROVIDER_ERROR, 403): "provider refused access to the account (HTTP 403)",
            (Outcome.PROVIDER_ERROR, 404): "provider endpoint not found (HTTP 404)",
            (Outcome.PROVIDER_ERROR, 402): "provider refused the request (HTTP 402)",
            (Outcome.PROVIDER_ERROR, 429): "provider rate limit reached (HTTP 429)",
            (Outcome.PROVIDER_ERROR, 500): "provider unavailable (HTTP 500)",
            (Outcome.PROVIDER_ERROR, 503): "provider unavailable (HTTP 503)",
            (Outcome.PROVIDER_ERROR, 200): "provider answered with something other than its API (HTTP 200)",
            (Outcome.MESSAGE_ERROR, 400): "message refused by provider (HTTP 400)",
            (Outcome.MESSAGE_ERROR, 422): "message refused by provider (HTTP 422)",
            (
                Outcome.AMBIGUOUS,
                200,
            ): "provider's answer could not be read; it may have sent the message (HTTP 200)",
        }
        for (outcome, status), reason in cases.items():
            with self.subTest(status=status, outcome=outcome):
                self.assertEqual(
                    attempt_reason(outcome=outcome, status_code=status, provider="sendgrid"), reason
                )

    def test_reasons_without_a_status(self):
        """Without an HTTP answer the outcome and the error class say it; a sent attempt says nothing."""
        cases = [
            (Outcome.SENT, "", "sendgrid", ""),
            (Outcome.LOCAL_ERROR, "UnicodeEncodeError", "sendgrid", "could not be encoded for this provider"),
            (
                Outcome.LOCAL_ERROR,
                "anymail.exceptions.AnymailUnsupportedFeature",
                "mailgun",
                "uses a feature this provider does not support",
            ),
            (
                Outcome.MESSAGE_ERROR,
                "anymail.exceptions.AnymailRecipientsRefused",
                "sendgrid",
                "every recipient refused by provider",
            ),
            (
                Outcome.PROVIDER_ERROR,
                "requests.exceptions.ConnectionError",
                "sendgrid",
                "could not connect to provider",
            ),
            (
                Outcome.PROVIDER_ERROR,
                "failover.exceptions.ProviderBuildError",
                "sendgrid",
                "provider not configured correctly on this service",
            ),
            (
                Outcome.AMBIGUOUS,
                "requests.exceptions.ConnectionError",
                "sendgrid",
                "no answer from provider; it may have sent the message",
            ),
            (Outcome.AMBIGUOUS, "", "", INTERRUPTED),
            (Outcome.PROVIDER_ERROR, "some.library.StrangeError", "sendgrid", "provider error"),
        ]
        for outcome, error_class, provider, reason in cases:
            with self.subTest(outcome=outcome, error_class=error_class):
                reasoned = attempt_reason(
                    outcome=outcome, status_code=None, error_class=error_class, provider=provider
                )
                self.assertEqual(reasoned, reason)


@override_settings(FIRST_WORKING_EMAIL_BACKENDS=["django.core.mail.backends.locmem.EmailBackend"])
class InterruptedRoundTests(GatewayMixin, TestCase):
    def test_an_abandoned_round_reads_as_interrupted(self):
        """Recovery's record of a worker that died mid-send (no provider) reads as interrupted."""
        message_id = self.post_message(VALID).json()["id"]
        text = "The worker's lease expired before it recorded an outcome; it may have sent the message."
        DeliveryAttempt.objects.create(message_id=message_id, round=0, outcome=Outcome.AMBIGUOUS, error=text)
        Message.objects.filter(pk=message_id).update(last_error=text)
        body = self.client.get(f"/api/messages/{message_id}", **self.auth).json()
        self.assertEqual((body["attempts"][0]["error"], body["last_error"]), (INTERRUPTED, INTERRUPTED))
