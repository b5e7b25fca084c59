"""Each hostile input of the probe (issue "Hardening") gets a JSON 4xx on its field and stores
nothing; the limits are checked before expensive work (docs/security.md, "Input limits")."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

from django.test import TestCase, override_settings

from mailservice.models import Message
from mailservice.validation import MAX_ERRORS
from tests.mailservice.helpers import VALID, GatewayMixin, gateway_settings

CONTROLS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x00", "\x7f", "\x85", "\u2028"]


@gateway_settings(MAILSERVICE_API_RATE_LIMIT="0")
class ControlCharacterTests(GatewayMixin, TestCase):
    def assert_each_refused(self, make_body, field):
        for char in CONTROLS:
            with self.subTest(char=repr(char)):
                response = self.post_message(make_body(char))
                self.assert_refused(response, 422, field(char) if callable(field) else field)
                self.assertEqual(response["Content-Type"], "application/json")

    def test_subject(self):
        self.assert_each_refused(lambda c: {**VALID, "subject": f"Hi{c}there"}, "subject")

    def test_header_value(self):
        self.assert_each_refused(
            lambda c: {**VALID, "headers": {"X-Campaign": f"a{c}b"}}, "headers.X-Campaign"
        )

    def test_header_name(self):
        self.assert_each_refused(
            lambda c: {**VALID, "headers": {f"X-A{c}": "v"}}, lambda c: f"headers.X-A{c}"
        )

    def test_display_names(self):
        for field in ("to", "cc", "bcc", "reply_to"):
            self.assert_each_refused(
                lambda c, field=field: {**VALID, field: [f"Jo{c}e <joe@example.net>"]}, f"{field}[0]"
            )
        self.assert_each_refused(lambda c: {**VALID, "from": f"Sh{c}op <shop@example.com>"}, "from")

    def test_attachment_filename_and_content_id(self):
        self.assert_each_refused(
            lambda c: {**VALID, "attachments": [{"filename": f"a{c}.txt", "content": "aGk="}]},
            "attachments[0].filename",
        )
        self.assert_each_refused(
            lambda c: {
                **VALID,
                "attachments": [{"filename": "a.png", "content": "aGk=", "content_id": f"l{c}"}],
            },
            "attachments[0].content_id",
        )

    def test_tab_is_allowed(self):
        body = {**VALID, "subject": "a\tb", "headers": {"X-A": "a\tb"}, "to": "Jo\te <joe@example.net>"}
        self.assertEqual(self.post_message(body).status_code, 202)

    def test_line_break_messages_are_kept(self):
        self.assert_refused(self.post_message({**VALID, "subject": "a\nb"}), 422, "subject", "Line breaks")
        self.assert_refused(
            self.post_message({**VALID, "headers": {"X-A\r": "v"}}), 422, "headers.X-A\r", "Line breaks"
        )

    def test_send_url_refuses_them_too(self):
        """GET /?to=…&subject=… goes through the same validation."""
        response = self.client.get("/", {"to": "jane@example.com", "subject": "a\x0bb"}, **self.auth)
        self.assert_refused(response, 422, "subject", "control characters")
        response = self.client.post("/", {"to": "Jo\x1fe <jane@example.com>", "text": "x"}, **self.auth)
        self.assert_refused(response, 422, "to[0]")
        response = self.client.post(
            "/",
            json.dumps({**VALID, "headers": {"X-A": "\x00"}}),
            content_type="application/json",
            **self.auth,
        )
        self.assert_refused(response, 422, "headers.X-A")


@gateway_settings(MAILSERVICE_API_RATE_LIMIT="0")
class JsonValueTests(GatewayMixin, TestCase):
    def raw(self, extra: str):
        return self.post_message('{"to": "jane@example.com", "text": "x", ' + extra + "}", raw=True)

    def test_nan_and_infinity_anywhere(self):
        cases = {
            '"metadata": {"a": NaN}': "metadata.a",
            '"metadata": {"a": [1, {"b": Infinity}]}': "metadata.a[1].b",
            '"metadata": {"a": -Infinity}': "metadata.a",
            '"metadata": {"a": 1e400}': "metadata.a",
            '"merge_global_data": {"n": NaN}': "merge_global_data.n",
            '"merge_data": {"jane@example.com": {"n": Infinity}}': "merge_data.jane@example.com.n",
        }
        for extra, field in cases.items():
            with self.subTest(extra):
                self.assert_refused(self.raw(extra), 422, field, "NaN and Infinity")

    def test_nul_and_lone_surrogates_anywhere(self):
        self.assert_refused(self.raw('"html": "a\\u0000b"'), 422, "html", "NUL")
        self.assert_refused(self.raw('"subject": "\\ud800"'), 422, "subject", "surrogate")
        self.assert_refused(self.raw('"metadata": {"\\udfff": 1}'), 422, "metadata.\udfff", "surrogate")

    def test_send_url_refuses_them_too(self):
        body = '{"to": "jane@example.com", "text": "x", "metadata": {"a": NaN}}'
        response = self.client.post("/", body, content_type="application/json", **self.auth)
        self.assert_refused(response, 422, "metadata.a")


# The edges of what the database stores; the scheduling horizon, which keeps `send_at` far from
# them by default, is tested in tests/mailservice/test_scheduling.py.
@gateway_settings(MAILSERVICE_API_RATE_LIMIT="0", MAILSERVICE_MAX_SCHEDULE_DAYS=0)
class CalendarEdgeTests(GatewayMixin, TestCase):
    def test_send_at_at_the_edges(self):
        for value in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "9999-06-01T00:00:00Z"):
            with self.subTest(value):
                self.assert_refused(
                    self.post_message({**VALID, "send_at": value}), 422, "send_at", "must lie between"
                )

    def test_send_at_in_range_is_accepted(self):
        for value in ("0001-01-01T00:00:00Z", "9998-12-31T00:00:00+01:00"):
            with self.subTest(value):
                self.assertEqual(self.post_message({**VALID, "send_at": value}).status_code, 202)

    def test_since_at_the_edges(self):
        for value in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
            with self.subTest(value):
                response = self.client.get("/api/messages", {"since": value}, **self.auth)
                self.assert_refused(response, 422, "since", "must lie between")
        for value in ("0001-01-01T00:00:00", "9999-12-31T23:59:59Z"):
            response = self.client.get("/api/messages", {"since": value}, **self.auth)
            self.assertEqual(response.status_code, 200, response.content)

    def test_wide_time_zone_offsets_are_stored_in_utc(self):
        """ISO 8601 allows offsets up to ±23:59, PostgreSQL only about ±16 h: times are used in UTC."""
        response = self.client.get("/api/messages", {"since": "2224-10-27T13:21:50-21:18"}, **self.auth)
        self.assertEqual(response.status_code, 200, response.content)
        response = self.post_message({**VALID, "send_at": "2224-10-27T13:21:50-21:18"})
        self.assertEqual(response.status_code, 202, response.content)
        self.assertEqual(Message.objects.get().send_at, datetime(2224, 10, 28, 10, 39, 50, tzinfo=UTC))

    def test_offset_beyond_64_bits(self):
        for path in ("/api/messages", "/api/suppressions"):
            with self.subTest(path):
                response = self.client.get(path, {"offset": "99999999999999999999"}, **self.auth)
                self.assert_refused(response, 422, "offset")
                response = self.client.get(path, {"offset": str(2**63 - 1)}, **self.auth)
                self.assertEqual(response.status_code, 200, response.content)
                self.assertEqual(response.json()["items"], [])

    def test_nul_in_filters(self):
        self.assert_refused(
            self.client.get("/api/messages", {"recipient": "a\x00"}, **self.auth), 422, "recipient"
        )
        self.assert_refused(
            self.client.get("/api/suppressions", {"address": "a\x00"}, **self.auth), 422, "address"
        )


@gateway_settings(MAILSERVICE_API_RATE_LIMIT="0")
class CountTests(GatewayMixin, TestCase):
    def test_200000_recipients_are_refused_fast(self):
        """Counted before any address is parsed (the probe took 16 s, about 21 s here before)."""
        body = json.dumps({**VALID, "to": [f"u{i}@example.com" for i in range(200_000)]})
        started = time.monotonic()
        response = self.post_message(body, raw=True)
        elapsed = time.monotonic() - started
        self.assert_refused(response, 422, "to", "at most 1000")
        self.assertLess(elapsed, 2.0)

    def test_recipients_counted_across_to_cc_bcc_before_parsing(self):
        body = {**VALID, "to": ["bad"] * 600, "cc": ["bad"] * 300, "bcc": ["bad"] * 300}
        response = self.post_message(body)
        self.assert_refused(response, 422, "to", "got 1200")
        self.assertNotIn("to[0]", {e["field"] for e in response.json()["errors"]})

    def test_100000_invalid_addresses_give_a_small_body(self):
        response = self.post_message({**VALID, "to": [f"bad{i}" for i in range(100_000)]})
        self.assert_refused(response, 422, "to")
        self.assertLess(len(response.content), 2_000)

    @override_settings(MAILSERVICE_MAX_RECIPIENTS=100_000)
    def test_error_list_is_capped_with_a_count(self):
        response = self.post_message({**VALID, "to": [f"bad{i}" for i in range(500)]})
        errors = response.json()["errors"]
        self.assert_refused(response, 422, "to[0]")
        self.assertEqual(len(errors), MAX_ERRORS + 1)
        self.assertEqual(errors[-1]["field"], None)
        self.assertIn("400 more errors", errors[-1]["message"])

    def test_pydantic_error_lists_are_capped_too(self):
        response = self.post_message({**VALID, "to": list(range(500))})
        self.assertEqual(response.status_code, 422)
        self.assertEqual(len(response.json()["errors"]), MAX_ERRORS + 1)

    def test_list_limits_are_checked_before_the_items(self):
        cases = {
            "attachments": [1] * 101,
            "headers": {f"X-{i}": i for i in range(101)},
            "tags": [1] * 101,
        }
        for field, value in cases.items():
            with self.subTest(field):
                response = self.post_message({**VALID, field: value})
                self.assert_refused(response, 422, field, "at most 100")
                self.assertEqual(len(response.json()["errors"]), 1)


@gateway_settings(MAILSERVICE_API_RATE_LIMIT="0")
class OpenApiExampleTests(GatewayMixin, TestCase):
    def test_every_request_body_has_an_example_that_is_accepted(self):
        """The docs' "Try it out" works on first use: each body's example is accepted, sent in the
        schema's order with its parameters' examples (POST /api/templates's example creates the
        template that the later ones address)."""
        schema = self.client.get("/api/openapi.json").json()
        posted = 0
        for path, item in schema["paths"].items():
            for method, operation in item.items():
                if "requestBody" not in operation:
                    continue
                content = operation["requestBody"]["content"]["application/json"]["schema"]
                name = content["$ref"].rsplit("/", 1)[-1]
                component = schema["components"]["schemas"][name]
                with self.subTest(f"{method.upper()} {path}"):
                    self.assertIn("example", component)
                    self.assertEqual(component["examples"], [component["example"]])
                    url, query = path, {}
                    for parameter in operation.get("parameters", []):
                        if parameter["in"] == "path":
                            url = url.replace("{" + parameter["name"] + "}", parameter["example"])
                        elif "example" in parameter:
                            query[parameter["name"]] = parameter["example"]
                    response = self.client.generic(
                        method.upper(),
                        url + ("?" + urlencode(query) if query else ""),
                        json.dumps(component["example"]),
                        content_type="application/json",
                        **self.auth,
                    )
                    self.assertIn(response.status_code, (200, 201, 202), response.content)
                    posted += 1
        self.assertEqual(posted, 5)  # a message, a suppression, a template, its change, its preview
        self.assertEqual(Message.objects.count(), 1)
