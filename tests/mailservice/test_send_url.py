"""The send URL: GET /?to=addr[&subject=&text=] and POST / (form or JSON)."""

import json

from django.test import TestCase, override_settings

from mailservice.models import Message
from tests.mailservice.helpers import VALID, GatewayMixin, gateway_settings


@gateway_settings()
class SendUrlTests(GatewayMixin, TestCase):
    @override_settings(MAILSERVICE_SEND_URL_SUBJECT="Ping", MAILSERVICE_SEND_URL_TEXT="Pong")
    def test_get_with_to_alone_sends_the_test_message(self):
        """GET /?to=addr queues a message with the configured default subject and text."""
        response = self.client.get("/?to=jane@example.com", **self.auth)
        self.assertEqual(response.status_code, 202)
        self.assertEqual(set(response.json()), {"id", "status", "url"})
        message = Message.objects.get(pk=response.json()["id"])
        self.assertEqual((message.subject, message.text), ("Ping", "Pong"))
        self.assertEqual(message.recipients.get().email, "jane@example.com")

    def test_json_nested_past_the_parsers_depth_is_a_400(self):
        """A JSON body too deep to parse answers 400 like any malformed JSON, not a 500."""
        response = self.client.post("/", "[" * 200000, content_type="application/json", **self.auth)
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["errors"][0]["message"], "The request body is not valid JSON.")

    def test_get_takes_subject_and_text(self):
        """subject and text given in the query are used."""
        response = self.client.get("/", {"to": "jane@example.com", "subject": "S", "text": "T"}, **self.auth)
        message = Message.objects.get(pk=response.json()["id"])
        self.assertEqual((message.subject, message.text), ("S", "T"))

    def test_get_repeated_to_sends_to_each(self):
        """to may be repeated for several recipients."""
        response = self.client.get("/?to=a@example.com&to=b@example.com", **self.auth)
        self.assertEqual(Message.objects.get(pk=response.json()["id"]).recipients.count(), 2)

    def test_post_form(self):
        """POST / with a form body works like the API."""
        response = self.client.post("/", {"to": "jane@example.com", "subject": "S", "text": "T"}, **self.auth)
        self.assertEqual(response.status_code, 202, response.content)

    def test_post_json_takes_the_api_fields(self):
        """POST / with JSON takes every API field, headers included."""
        body = {**VALID, "headers": {"X-Campaign": "spring"}}
        response = self.client.post("/", json.dumps(body), content_type="application/json", **self.auth)
        self.assertEqual(response.status_code, 202, response.content)
        self.assertEqual(Message.objects.get().headers, {"X-Campaign": "spring"})

    def test_post_json_errors_match_the_api(self):
        """POST / refuses bad input with the same field paths as the API."""
        body = {**VALID, "to": ["ok@example.com", "bad"]}
        response = self.client.post("/", json.dumps(body), content_type="application/json", **self.auth)
        self.assert_refused(response, 422, "to[1]")

    def test_post_malformed_json_is_400(self):
        """POST / with broken JSON is 400."""
        response = self.client.post("/", "{", content_type="application/json", **self.auth)
        self.assert_refused(response, 400, None)

    def test_unknown_parameter_is_refused(self):
        """A typo in a parameter name is refused on that name."""
        self.assert_refused(self.client.get("/?to=jane@example.com&subjct=x", **self.auth), 422, "subjct")

    def test_invalid_address_is_refused(self):
        """An invalid address is refused at to[0]."""
        self.assert_refused(self.client.get("/?to=nobody", **self.auth), 422, "to[0]")

    def test_without_key_is_401(self):
        """The send URL needs the same API key."""
        response = self.client.get("/?to=jane@example.com")
        self.assert_refused(response, 401, None)

    def test_key_in_query_is_refused(self):
        """A key in the query string is refused, even with a valid header."""
        response = self.client.get(f"/?to=jane@example.com&key={self.raw_key}", **self.auth)
        self.assert_refused(response, 401, None, "Authorization header")

    def test_json_only_field_in_query_is_refused(self):
        """Nested fields (headers, attachments...) need a JSON body."""
        self.assert_refused(self.client.get("/?to=jane@example.com&headers=x", **self.auth), 422, "headers")

    def test_idempotency_key_applies(self):
        """Idempotency-Key works on the send URL too."""
        first = self.client.get("/?to=jane@example.com", HTTP_IDEMPOTENCY_KEY="k1", **self.auth)
        second = self.client.get("/?to=jane@example.com", HTTP_IDEMPOTENCY_KEY="k1", **self.auth)
        self.assertEqual(first.json()["id"], second.json()["id"])

    def test_other_methods_get_json_405(self):
        """PUT / is answered 405 in the error format."""
        response = self.client.put("/", **self.auth)
        self.assertEqual(response.status_code, 405)
        self.assertIn("errors", response.json())
