"""GET/POST/DELETE /api/suppressions."""

import json

from django.test import TestCase

from mailservice.models import Suppression
from mailservice.services.suppressions import suppression_add
from tests.mailservice.helpers import GatewayMixin, gateway_settings


@gateway_settings()
class SuppressionApiTests(GatewayMixin, TestCase):
    def post(self, body):
        return self.client.post(
            "/api/suppressions", json.dumps(body), content_type="application/json", **self.auth
        )

    def test_post_adds_normalized_address(self):
        """POST adds the address, lowercased, with its reason; 201."""
        response = self.post({"address": "Jane <Jane@Example.com>", "reason": "complained"})
        self.assertEqual(response.status_code, 201, response.content)
        self.assertEqual(response.json()["address"], "jane@example.com")
        self.assertEqual(Suppression.objects.get().reason, "complained")

    def test_post_existing_is_200(self):
        """Adding an address already on the list is 200 and changes nothing."""
        self.post({"address": "jane@example.com"})
        response = self.post({"address": "JANE@example.com", "reason": "bounced"})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(Suppression.objects.get().reason, "manual")

    def test_post_invalid_address_is_422(self):
        """An invalid address is refused on `address`."""
        response = self.post({"address": "nope"})
        self.assertEqual((response.status_code, response.json()["errors"][0]["field"]), (422, "address"))
        self.assertFalse(Suppression.objects.exists())

    def test_post_address_with_a_lone_surrogate_is_422(self):
        """`a@\\ud800.example` (once a 500) is refused on `address`, as POST /api/messages refuses it."""
        for address in ("a@\\ud800.example", "\\udfff@example.com", "a\\u0000@example.com"):
            with self.subTest(address=address):
                body = '{"address": "' + address + '"}'
                response = self.client.post(
                    "/api/suppressions", body, content_type="application/json", **self.auth
                )
                self.assertEqual(
                    (response.status_code, response.json()["errors"][0]["field"]), (422, "address")
                )
        self.assertFalse(Suppression.objects.exists())

    def test_post_unknown_reason_is_422(self):
        """A reason outside the list is refused on `reason`."""
        response = self.post({"address": "jane@example.com", "reason": "dislike"})
        self.assertEqual((response.status_code, response.json()["errors"][0]["field"]), (422, "reason"))

    def test_get_lists_and_filters(self):
        """GET lists the suppressions, or one address with `address`."""
        suppression_add(address="a@example.com")
        suppression_add(address="b@example.com")
        body = self.client.get("/api/suppressions", **self.auth).json()
        self.assertEqual(body["count"], 2)
        body = self.client.get("/api/suppressions?address=A@example.com", **self.auth).json()
        self.assertEqual([s["address"] for s in body["items"]], ["a@example.com"])

    def test_delete_removes_the_address(self):
        """DELETE removes the address (204); again it is 404."""
        suppression_add(address="jane@example.com")
        self.assertEqual(
            self.client.delete("/api/suppressions/Jane@example.com", **self.auth).status_code, 204
        )
        self.assertFalse(Suppression.objects.exists())
        self.assertEqual(
            self.client.delete("/api/suppressions/jane@example.com", **self.auth).status_code, 404
        )


@gateway_settings()
class ProviderApiTests(GatewayMixin, TestCase):
    def test_lists_each_provider_with_state(self):
        """GET /api/providers shows the chain in order with states and last errors."""
        from django.test import override_settings

        with override_settings(FIRST_WORKING_EMAIL_BACKENDS=["sendgrid", "mailgun"]):
            body = self.client.get("/api/providers", **self.auth).json()
        self.assertEqual(
            [(p["name"], p["state"]) for p in body], [("sendgrid", "active"), ("mailgun", "standby")]
        )
        self.assertEqual(
            set(body[0]),
            {
                "name",
                "state",
                "active_until",
                "last_error",
                "last_error_class",
                "last_failure_at",
                "next_probe_at",
                "retry_after_until",
            },
        )

    def test_failing_provider_shows_its_last_error(self):
        """After a failure the provider is `failing` with its error and time."""
        import responses
        from django.test import override_settings

        from mailservice.services.delivery import message_deliver
        from tests.esp import mock_mailgun, mock_sendgrid

        with (
            override_settings(FIRST_WORKING_EMAIL_BACKENDS=["sendgrid", "mailgun"]),
            responses.RequestsMock() as rsps,
        ):
            mock_sendgrid(rsps, status=503)
            mock_mailgun(rsps)
            message_id = self.post_message({"to": "a@example.com", "text": "x"}).json()["id"]
            message_deliver(message_id=message_id)
            body = self.client.get("/api/providers", **self.auth).json()
        sendgrid = body[0]
        self.assertEqual(sendgrid["state"], "failing")
        self.assertIn("503", sendgrid["last_error"])
        self.assertIsNotNone(sendgrid["last_failure_at"])
        self.assertIsNotNone(sendgrid["next_probe_at"])  # when it is tried again first
        self.assertEqual(body[1]["state"], "active")


@gateway_settings()
class SuppressionPathTests(GatewayMixin, TestCase):
    def test_nul_in_the_address_path_is_a_404(self):
        """DELETE /api/suppressions/{address} with a NUL answers 404 (no database accepts it in a query)."""
        response = self.client.delete("/api/suppressions/a%00b@example.com", **self.auth)
        self.assertEqual(response.status_code, 404)
