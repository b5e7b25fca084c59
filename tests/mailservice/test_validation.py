"""Every refused input answers a field-level 4xx and stores nothing (docs/api.md, "Errors")."""

from django.test import TestCase, override_settings

from tests.mailservice.helpers import VALID, GatewayMixin, gateway_settings


def with_attachments(*attachments: dict) -> dict:
    """A valid message with these attachments."""
    return {**VALID, "attachments": list(attachments)}


@gateway_settings()
class RefusedInputTests(GatewayMixin, TestCase):
    def test_malformed_json_is_400(self):
        """A body that is not JSON is 400 with a request-level error."""
        self.assert_refused(self.post_message('{"to": ', raw=True), 400, None, "not valid JSON")

    def test_empty_body_is_400(self):
        """An empty body is 400."""
        self.assert_refused(self.post_message("", raw=True), 400, None)

    def test_json_array_is_422(self):
        """Valid JSON that is not an object is 422."""
        self.assert_refused(self.post_message([VALID]), 422, None)

    def test_unknown_top_level_field_is_422(self):
        """A typo in a field name surfaces as an error on that field."""
        self.assert_refused(self.post_message({**VALID, "subjet": "x"}), 422, "subjet")

    def test_no_recipient_is_422_on_to(self):
        """Without to, cc or bcc the error is on `to`."""
        self.assert_refused(self.post_message({"subject": "x", "text": "y"}), 422, "to", "recipient")

    def test_invalid_address_is_422_on_its_index(self):
        """An invalid address is reported at its position in the list."""
        self.assert_refused(self.post_message({**VALID, "to": ["ok@example.com", "nope"]}), 422, "to[1]")

    def test_invalid_cc_bcc_reply_to_and_from(self):
        """cc, bcc, reply_to and from are checked like to."""
        response = self.post_message(
            {**VALID, "cc": ["x@"], "bcc": "@y", "reply_to": "z", "from": "not an address"}
        )
        self.assert_refused(response, 422, "cc[0]")
        fields = {e["field"] for e in response.json()["errors"]}
        self.assertTrue({"bcc[0]", "reply_to[0]", "from"} <= fields, fields)

    def test_two_addresses_in_one_item_are_refused(self):
        """A comma-separated string is not smuggled in as several recipients."""
        self.assert_refused(self.post_message({**VALID, "to": "a@example.com, b@example.com"}), 422, "to[0]")

    def test_display_name_forms_and_idn_are_accepted(self):
        """Display names (quoted, with commas) and internationalized domains are valid."""
        response = self.post_message(
            {**VALID, "to": ['"Doe, Jane" <jane@example.com>', "Jörg <j@bücher.de>", "k@xn--bcher-kva.de"]}
        )
        self.assertEqual(response.status_code, 202, response.content)

    def test_address_with_line_break_is_refused(self):
        """CR/LF in an address (header injection) is refused."""
        self.assert_refused(
            self.post_message({**VALID, "to": "a@example.com\r\nBcc: x@evil.test"}), 422, "to[0]"
        )

    def test_non_ascii_local_part_is_refused(self):
        """An address whose local part is not ASCII is refused (no SMTPUTF8 promise)."""
        self.assert_refused(self.post_message({**VALID, "to": "jörg@example.com"}), 422, "to[0]")

    @override_settings(MAILSERVICE_MAX_RECIPIENTS=3)
    def test_too_many_recipients_is_422_on_to(self):
        """More recipients than the limit across to, cc and bcc is refused on `to`."""
        body = {
            **VALID,
            "to": ["a@example.com", "b@example.com"],
            "cc": ["c@example.com"],
            "bcc": "d@example.com",
        }
        self.assert_refused(self.post_message(body), 422, "to", "at most 3")

    def test_default_recipient_limit_is_1000(self):
        """1,001 recipients are refused by default."""
        body = {**VALID, "to": [f"u{i}@example.com" for i in range(1001)]}
        self.assert_refused(self.post_message(body), 422, "to", "at most 1000")

    def test_no_content_is_422_on_text(self):
        """Neither text nor html nor template_id is refused on `text`."""
        self.assert_refused(self.post_message({"to": "a@example.com", "subject": "x"}), 422, "text")

    def test_template_alone_is_content(self):
        """A template id is enough content."""
        response = self.post_message({"to": "a@example.com", "template_id": "welcome"})
        self.assertEqual(response.status_code, 202)

    def test_subject_over_998_characters_is_refused(self):
        """The subject is at most 998 characters."""
        self.assert_refused(self.post_message({**VALID, "subject": "x" * 999}), 422, "subject", "998")

    def test_subject_with_line_break_is_refused(self):
        """CR/LF in the subject is refused."""
        self.assert_refused(self.post_message({**VALID, "subject": "Hi\nBcc: x@evil.test"}), 422, "subject")

    def test_header_value_with_line_break_is_refused(self):
        """CR/LF in a header value is refused at headers.<name>."""
        body = {**VALID, "headers": {"X-Campaign": "a\r\nBcc: x@evil.test"}}
        self.assert_refused(self.post_message(body), 422, "headers.X-Campaign")

    def test_header_name_with_line_break_is_refused(self):
        """CR/LF in a header name is refused."""
        self.assert_refused(
            self.post_message({**VALID, "headers": {"X-A\r\nBcc": "x"}}), 422, "headers.X-A\r\nBcc"
        )

    def test_header_name_not_rfc5322_is_refused(self):
        """A header name with a space or colon is refused."""
        self.assert_refused(self.post_message({**VALID, "headers": {"X Bad": "x"}}), 422, "headers.X Bad")

    def test_header_value_over_998_characters_is_refused(self):
        """A header value is at most 998 characters."""
        self.assert_refused(
            self.post_message({**VALID, "headers": {"X-Long": "v" * 999}}), 422, "headers.X-Long"
        )

    def test_headers_the_gateway_owns_are_refused(self):
        """From, To, Subject, Message-ID, Content-* and the others cannot be set in headers."""
        owned = [
            "From",
            "to",
            "Cc",
            "BCC",
            "Reply-To",
            "Subject",
            "Sender",
            "Date",
            "Message-ID",
            "Return-Path",
            "MIME-Version",
            "Content-Type",
            "Content-Transfer-Encoding",
        ]
        response = self.post_message({**VALID, "headers": dict.fromkeys(owned, "x")})
        self.assert_refused(response, 422, "headers.From")
        self.assertEqual({e["field"] for e in response.json()["errors"]}, {f"headers.{n}" for n in owned})

    def test_header_value_must_be_a_string(self):
        """A header value of another type is refused at its path."""
        self.assert_refused(self.post_message({**VALID, "headers": {"X-Count": 3}}), 422, "headers.X-Count")

    def test_attachment_bad_base64_is_refused(self):
        """Attachment content that is not base64 is refused at attachments[i].content."""
        body = with_attachments(
            {"filename": "a.txt", "content": "aGk="}, {"filename": "b.txt", "content": "not base64!"}
        )
        self.assert_refused(self.post_message(body), 422, "attachments[1].content")

    def test_attachment_without_filename_is_refused(self):
        """A missing or blank filename is refused at attachments[i].filename."""
        self.assert_refused(
            self.post_message(with_attachments({"content": "aGk="})), 422, "attachments[0].filename"
        )
        self.assert_refused(
            self.post_message(with_attachments({"filename": " ", "content": "aGk="})),
            422,
            "attachments[0].filename",
        )

    def test_attachment_unknown_field_is_refused(self):
        """A typo inside an attachment surfaces at its path."""
        body = with_attachments({"filename": "a", "content": "aGk=", "mime": "text/plain"})
        self.assert_refused(self.post_message(body), 422, "attachments[0].mime")

    def test_send_at_bad_format_is_refused(self):
        """send_at must be an ISO 8601 time."""
        self.assert_refused(self.post_message({**VALID, "send_at": "tomorrow"}), 422, "send_at")

    def test_send_at_without_time_zone_is_refused(self):
        """send_at without a time zone is ambiguous, so refused."""
        self.assert_refused(self.post_message({**VALID, "send_at": "2030-01-01T10:00:00"}), 422, "send_at")

    def test_wrong_type_is_422_at_its_path(self):
        """A value of the wrong type is refused at its path (here tags[1])."""
        self.assert_refused(self.post_message({**VALID, "tags": ["ok", 5]}), 422, "tags[1]")

    @override_settings(MAILSERVICE_MAX_ATTACHMENTS_BYTES=10)
    def test_attachments_over_limit_are_413(self):
        """Decoded attachments over the limit in all are refused with 413."""
        body = with_attachments(
            {"filename": "a", "content": "YWFhYWFh"}, {"filename": "b", "content": "YWFhYWFh"}
        )
        self.assert_refused(self.post_message(body), 413, "attachments")

    @override_settings(MAILSERVICE_MAX_REQUEST_BYTES=200)
    def test_request_body_over_limit_is_413(self):
        """A request body over the size limit is refused with 413 before it is read."""
        self.assert_refused(self.post_message({**VALID, "text": "x" * 500}), 413, None)

    def test_default_request_limit_is_30_mb(self):
        """The request body limit defaults to 30 MB, the decoded attachments' to 25 MB."""
        from mailservice import conf

        self.assertEqual((conf.max_request_bytes(), conf.max_attachments_bytes()), (30 * 2**20, 25 * 2**20))


@gateway_settings()
class RepeatedRecipientTests(GatewayMixin, TestCase):
    def test_an_address_given_twice_is_refused_on_the_repeat(self):
        """to jane@ and cc Jane@ (any case) is one recipient twice: 422 on cc[0], nothing stored."""
        response = self.post_message({**VALID, "to": "jane@example.com", "cc": ["Jane@Example.com"]})
        self.assert_refused(response, 422, "cc[0]", "already a recipient (to[0])")


@gateway_settings()
class DocumentedLimitTests(GatewayMixin, TestCase):
    """The limits of docs/security.md, "Input limits", at their edges."""

    def test_header_name_at_most_76_characters(self):
        name = "X-" + "a" * 74
        longer = name + "a"
        self.assert_refused(
            self.post_message({**VALID, "headers": {longer: "v"}}), 422, f"headers.{longer}", "76"
        )
        self.assertEqual(self.post_message({**VALID, "headers": {name: "v"}}).status_code, 202)

    def test_mimetype_is_type_slash_subtype_of_at_most_255_characters(self):
        def body(mimetype):
            return with_attachments({"filename": "a", "content": "aGk=", "mimetype": mimetype})

        self.assert_refused(self.post_message(body("a/" + "b" * 300)), 422, "attachments[0].mimetype", "255")
        for bad in ("text", "text/plain; charset=utf-8", "/plain", "text/", "a" * 128 + "/b"):
            with self.subTest(bad):
                self.assert_refused(
                    self.post_message(body(bad)), 422, "attachments[0].mimetype", "type/subtype"
                )
        self.assertEqual(self.post_message(body("a" * 127 + "/" + "b" * 127)).status_code, 202)

    def test_at_most_100_attachments(self):
        attachment = {"filename": "a", "content": "aGk="}
        self.assert_refused(
            self.post_message({**VALID, "attachments": [attachment] * 101}), 422, "attachments", "at most 100"
        )
        self.assertEqual(self.post_message({**VALID, "attachments": [attachment] * 100}).status_code, 202)

    def test_control_character_message_names_it(self):
        response = self.post_message({**VALID, "subject": "ab\x0c"})
        self.assert_refused(response, 422, "subject", "U+000C at position 2")
