"""No HTML and no bare 500 under /api/ or from the send URL: always the JSON error format."""

from unittest import mock

from django.test import TestCase, override_settings

from tests.mailservice.helpers import VALID, GatewayMixin, gateway_settings


@gateway_settings()
class JsonErrorTests(GatewayMixin, TestCase):
    def test_unknown_api_path_is_json_404(self):
        """A path under /api/ that does not exist answers 404 in JSON."""
        response = self.client.get("/api/no-such-thing", **self.auth)
        self.assertEqual(response.status_code, 404)
        self.assertEqual(response.json(), {"errors": [{"field": None, "message": "Not Found."}]})

    @override_settings(DEBUG=True)
    def test_unknown_api_path_is_json_even_in_debug(self):
        """Django's debug 404 page is replaced by JSON too."""
        response = self.client.get("/api/no-such-thing", **self.auth)
        self.assertEqual(response["Content-Type"], "application/json")

    def test_wrong_method_is_json_405(self):
        """PUT on a collection answers 405 in JSON with the Allow header."""
        response = self.client.put("/api/messages", **self.auth)
        self.assertEqual(response.status_code, 405)
        self.assertIn("errors", response.json())

    def test_unexpected_error_is_json_500_without_details(self):
        """A bug answers 500 in JSON, without a traceback or the exception text."""
        with mock.patch("mailservice.api.messages.submit_message", side_effect=RuntimeError("secret detail")):
            with self.assertLogs("mailservice.api.errors", "ERROR"):
                response = self.post_message(VALID)
        self.assertEqual(response.status_code, 500)
        self.assertNotIn("secret detail", response.content.decode())
        self.assertEqual(response.json()["errors"][0]["field"], None)

    def test_send_url_unexpected_error_is_json_500(self):
        """The send URL's unexpected errors are JSON too."""
        self.client.raise_request_exception = False
        with mock.patch("mailservice.views.submit_message", side_effect=RuntimeError("boom")):
            response = self.client.get("/?to=jane@example.com", **self.auth)
        self.assertEqual(response.status_code, 500)
        self.assertEqual(response["Content-Type"], "application/json")

    def test_pages_outside_the_gateway_are_untouched(self):
        """The admin keeps its HTML pages."""
        response = self.client.get("/admin/login/")
        self.assertEqual(response.status_code, 200)
        self.assertIn("text/html", response["Content-Type"])
