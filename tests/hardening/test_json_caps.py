"""Caps on the free-form JSON fields and on a body's shape (docs/security.md, "Input limits"):
each cap is a 422 on its field before any row is written, and a hostile body (millions of
keys, deep nesting) is refused on its bytes, fast, without a 500."""

from __future__ import annotations

import functools
import json
import time

from django.test import SimpleTestCase, TestCase, override_settings

from mailservice.exceptions import InvalidRequest, MalformedRequest, PayloadTooLarge
from mailservice.jsonlimits import (
    FREE_FORM_FIELDS,
    MAX_JSON_DEPTH,
    MAX_MERGE_DATA_STRING,
    MAX_METADATA_STRING,
    body_shape,
    cap_problem,
    field_caps,
)
from mailservice.validation import body_values_limit, parse_json_body
from tests.mailservice.helpers import VALID, GatewayMixin, gateway_settings

LEVELS = 100_000


@functools.cache
def two_million_keys() -> str:
    """What the probe sent: two million metadata keys, 26 MB."""
    keys = ",".join(f'"k{i:07d}":0' for i in range(2_000_000))
    return '{"to": "jane@example.com", "text": "x", "metadata": {' + keys + "}}"


def deep_objects() -> str:
    return (
        '{"to": "jane@example.com", "text": "x", "metadata": ' + '{"a":' * LEVELS + "1" + "}" * LEVELS + "}"
    )


def deep_lists() -> str:
    return '{"to": "jane@example.com", "text": "x", "metadata": {"a": ' + "[" * LEVELS + "]" * LEVELS + "}}"


def nested(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"a": value}
    return value


@gateway_settings(MAILSERVICE_API_RATE_LIMIT="0")
class FieldCapTests(GatewayMixin, TestCase):
    def test_metadata_over_its_byte_limit_is_a_422_on_metadata(self):
        """Metadata over MAILSERVICE_MAX_METADATA_BYTES (10,000) as JSON is refused on `metadata`."""
        metadata = {f"k{i}": "x" * 500 for i in range(25)}
        self.assert_refused(
            self.post_message({**VALID, "metadata": metadata}), 422, "metadata", "10000 bytes"
        )

    def test_metadata_over_its_key_limit_is_a_422_on_metadata(self):
        """More than MAILSERVICE_MAX_METADATA_KEYS (100) keys is refused on `metadata`."""
        metadata = {f"k{i}": i for i in range(101)}
        self.assert_refused(
            self.post_message({**VALID, "metadata": metadata}), 422, "metadata", "at most 100 keys"
        )

    def test_keys_are_counted_at_every_level_with_list_items(self):
        """Keys hidden one level down, or list items, count against the limit too."""
        for metadata in ({"a": {f"k{i}": i for i in range(100)}}, {"a": list(range(100))}):
            with self.subTest(metadata=str(metadata)[:30]):
                self.assert_refused(
                    self.post_message({**VALID, "metadata": metadata}), 422, "metadata", "at most 100"
                )

    def test_a_long_string_is_a_422_naming_its_path(self):
        """A metadata string over 1,000 characters is refused on `metadata`, naming where it is."""
        response = self.post_message({**VALID, "metadata": {"note": "x" * (MAX_METADATA_STRING + 1)}})
        self.assert_refused(response, 422, "metadata", "metadata.note has 1001")

    def test_a_long_key_is_a_422_too(self):
        """A key over the string limit is refused like a value."""
        response = self.post_message({**VALID, "metadata": {"k" * (MAX_METADATA_STRING + 1): 1}})
        self.assert_refused(response, 422, "metadata", "in a key")

    def test_merge_data_has_its_own_larger_caps(self):
        """merge_global_data takes what metadata may not (a 50 KB string), up to its own caps."""
        big = {"block": "x" * 50_000}
        self.assert_refused(self.post_message({**VALID, "metadata": big}), 422, "metadata")
        too_long = {"block": "x" * (MAX_MERGE_DATA_STRING + 1)}
        self.assert_refused(
            self.post_message({**VALID, "merge_global_data": too_long}), 422, "merge_global_data"
        )
        self.assertEqual(self.post_message({**VALID, "merge_global_data": big}).status_code, 202)

    @override_settings(MAILSERVICE_MAX_MERGE_DATA_KEYS=10, MAILSERVICE_MAX_MERGE_DATA_BYTES=200)
    def test_merge_caps_follow_their_settings_for_each_field(self):
        """MAILSERVICE_MAX_MERGE_DATA_KEYS and _BYTES cap merge_data and merge_global_data, each."""
        many = {f"k{i}": i for i in range(11)}
        response = self.post_message({**VALID, "merge_global_data": many})
        self.assert_refused(response, 422, "merge_global_data", "at most 10")
        per_recipient = {"jane@example.com": {"text": "y" * 250}}
        self.assert_refused(
            self.post_message({**VALID, "merge_data": per_recipient}), 422, "merge_data", "200 bytes"
        )

    def test_bytes_are_counted_in_utf8(self):
        """The byte limit counts UTF-8 bytes, not characters: 4,000 euro signs are 12,000 bytes."""
        metadata = {f"k{i}": "€" * 400 for i in range(10)}
        self.assert_refused(self.post_message({**VALID, "metadata": metadata}), 422, "metadata", "got 12")

    def test_values_at_the_limits_are_accepted(self):
        """100 keys in all, 32 levels, 1,000-character strings within 10,000 bytes: accepted."""
        at_limit = {f"k{i:02d}": "x" * 60 for i in range(67)}
        at_limit["deep"] = nested(MAX_JSON_DEPTH - 1)  # 31 more keys, the last level empty
        at_limit["long"] = "x" * MAX_METADATA_STRING
        response = self.post_message({**VALID, "metadata": at_limit, "merge_global_data": {"s": "x" * 1000}})
        self.assertEqual(response.status_code, 202, response.content)

    def test_depth_is_capped_inside_the_field(self):
        """One level past MAX_JSON_DEPTH is a 422 on the field, as before the caps."""
        response = self.post_message({**VALID, "metadata": nested(MAX_JSON_DEPTH + 1)})
        self.assert_refused(response, 422, "metadata", f"more than {MAX_JSON_DEPTH} levels")

    def test_send_url_takes_the_same_caps(self):
        """The send URL's JSON body is capped like the API's."""
        body = json.dumps({**VALID, "metadata": {f"k{i}": i for i in range(101)}})
        response = self.client.post("/", body, content_type="application/json", **self.auth)
        self.assert_refused(response, 422, "metadata", "at most 100")


class CapProblemTests(SimpleTestCase):
    def test_every_free_form_field_has_caps_template_data_included(self):
        """metadata, merge_data, merge_global_data and template_data each have caps."""
        self.assertEqual(
            set(FREE_FORM_FIELDS), {"metadata", "merge_data", "merge_global_data", "template_data"}
        )
        self.assertEqual(field_caps("template_data"), field_caps("merge_global_data"))

    def test_a_value_far_over_the_keys_cap_costs_no_more_than_one_at_it(self):
        """A million keys one level down are refused after counting the first container's."""
        caps = field_caps("metadata")
        value = {"a": {str(i): i for i in range(1_000_000)}}
        started = time.monotonic()
        self.assertIn("at most 100 keys", cap_problem(value, caps, "metadata").lower())
        self.assertLess(time.monotonic() - started, 0.05)


@gateway_settings(MAILSERVICE_API_RATE_LIMIT="0")
class HostileBodyTests(GatewayMixin, TestCase):
    """The probe's bodies, through the test client: answered in well under a second."""

    def timed(self, body: str, *, path: str = "/api/messages"):
        started = time.monotonic()
        response = self.client.post(path, body, content_type="application/json", **self.auth)
        return response, time.monotonic() - started

    def test_two_million_metadata_keys_are_refused_on_the_bytes(self):
        """26 MB of metadata keys (202 after 16 s before the caps): 413 before the body is parsed."""
        response, elapsed = self.timed(two_million_keys())
        self.assert_refused(response, 413, None, "too many JSON values")
        self.assertLess(elapsed, 2.0)

    def test_a_body_just_over_a_field_cap_is_answered_on_the_field(self):
        """200,000 metadata keys are still parsed and answered on `metadata`."""
        body = json.dumps({**VALID, "metadata": {f"k{i}": 0 for i in range(200_000)}})
        response, elapsed = self.timed(body)
        self.assert_refused(response, 422, "metadata", "got 200000")
        self.assertLess(elapsed, 2.0)

    def test_100000_levels_of_objects_are_a_422_on_the_field(self):
        """Objects nested 100,000 deep: 422 on `metadata` (not a 400 "not valid JSON"), no
        RecursionError."""
        response, elapsed = self.timed(deep_objects())
        self.assert_refused(response, 422, "metadata", f"more than {MAX_JSON_DEPTH} levels")
        self.assertLess(elapsed, 1.0)

    def test_100000_levels_of_lists_are_a_422_on_the_field(self):
        """Lists nested 100,000 deep: 422 on `metadata`."""
        response, elapsed = self.timed(deep_lists())
        self.assert_refused(response, 422, "metadata", f"more than {MAX_JSON_DEPTH} levels")
        self.assertLess(elapsed, 1.0)

    def test_the_send_url_refuses_them_alike(self):
        """The send URL measures its JSON body the same way."""
        response, _ = self.timed(two_million_keys(), path="/")
        self.assert_refused(response, 413, None)
        response, _ = self.timed(deep_objects(), path="/")
        self.assert_refused(response, 422, "metadata")

    def test_reading_the_largest_accepted_message_back_is_fast(self):
        """A message at the metadata and merge caps is stored and read back quickly."""
        body = {
            **VALID,
            "metadata": {f"k{i:02d}": "x" * 80 for i in range(100)},
            "merge_global_data": {f"k{i}": i for i in range(19_999)},
        }
        response = self.post_message(body)
        self.assertEqual(response.status_code, 202, response.content)
        started = time.monotonic()
        self.assertEqual(self.client.get(response["Location"], **self.auth).status_code, 200)
        self.assertLess(time.monotonic() - started, 1.0)


class BodyShapeTests(SimpleTestCase):
    def test_values_and_depth_are_read_outside_strings(self):
        """Brackets, commas and quotes inside strings (escaped ones too) do not count."""
        raw = json.dumps({"a": '[[{,,"]]', "b": [1, {"c": '\\"{'}]}).encode()
        shape = body_shape(raw, max_values=1000)
        self.assertEqual((shape.balanced, shape.depth), (True, 3))
        self.assertEqual(shape.values, 6)  # two commas, the body, a list, an object, and one

    def test_unbalanced_brackets_are_malformed_without_parsing(self):
        """A body of 200,000 opening brackets is a 400, answered before the parser would recurse."""
        with self.assertRaises(MalformedRequest):
            parse_json_body(b"[" * 200_000)

    @override_settings(
        MAILSERVICE_MAX_RECIPIENTS=10, MAILSERVICE_MAX_METADATA_KEYS=10, MAILSERVICE_MAX_MERGE_DATA_KEYS=10
    )
    def test_the_values_limit_follows_the_other_limits(self):
        """The body's values limit grows and shrinks with the recipients and key settings."""
        small = body_values_limit()
        with override_settings(MAILSERVICE_MAX_MERGE_DATA_KEYS=1000):
            self.assertEqual(body_values_limit() - small, 4 * 3 * 990)
        with self.assertRaises(PayloadTooLarge):
            parse_json_body(json.dumps({"tags": list(range(small))}).encode())

    def test_a_too_deep_body_names_its_top_level_field(self):
        """The field refused for depth is the top-level key holding the deep value."""
        raw = json.dumps({"to": "a@example.com", "merge_data": {"b@example.com": nested(40)}}).encode()
        with self.assertRaises(InvalidRequest) as caught:
            parse_json_body(raw)
        self.assertEqual(caught.exception.errors[0].field, "merge_data")
