"""One bad message never marks a provider failing (docs/delivery.md, "A message's own errors"):
what can be detected is refused at accept with a 422 on the field; what cannot fails that
message alone with local_error attempts, and the next message goes to the primary as before."""

import base64
from unittest import mock

import django
import responses
from django.test import TestCase

from failover.backends import FirstWorkingEmailBackend
from mailservice.jsonlimits import MAX_JSON_DEPTH
from mailservice.models import Message
from mailservice.services.delivery import message_deliver
from tests.esp import mock_mailgun, mock_sendgrid
from tests.mailservice.helpers import T0, VALID, GatewayMixin, esp_settings


def nested(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"a": value}
    return value


NOT_UTF8 = base64.b64encode(b"\xff\xfe not utf-8").decode()


@esp_settings()
class RefusedAtAcceptTests(GatewayMixin, TestCase):
    def test_metadata_nested_too_deep_is_a_422_on_metadata(self):
        """Metadata nested 500 levels deep is refused before anything is stored."""
        response = self.post_message({**VALID, "metadata": {"deep": nested(500)}})
        self.assert_refused(response, 422, "metadata", f"more than {MAX_JSON_DEPTH} levels")

    def test_merge_data_at_the_depth_limit_is_accepted(self):
        """Exactly MAX_JSON_DEPTH levels inside the field is fine."""
        response = self.post_message({**VALID, "merge_global_data": nested(MAX_JSON_DEPTH - 1)})
        self.assertEqual(response.status_code, 202, response.content)

    def test_inline_text_attachment_that_is_not_utf8_is_a_422_on_its_content(self):
        """An inline text/* part must be UTF-8; the error names the attachment's content."""
        attachment = {"filename": "note.txt", "content": NOT_UTF8, "inline": True}
        response = self.post_message({**VALID, "attachments": [attachment]})
        self.assert_refused(response, 422, "attachments[0].content", "UTF-8")

    def test_the_same_bytes_as_a_regular_attachment_are_accepted(self):
        """Non-inline text attachments with other bytes are sent as binary: accepted."""
        attachment = {"filename": "note.txt", "content": NOT_UTF8}
        self.assertEqual(self.post_message({**VALID, "attachments": [attachment]}).status_code, 202)


@esp_settings()
class StoredPoisonTests(GatewayMixin, TestCase):
    """Messages stored before these checks existed, or by other code, reach the worker as they are."""

    def poisoned(self, **fields) -> Message:
        response = self.post_message(VALID)
        self.assertEqual(response.status_code, 202, response.content)
        Message.objects.filter(pk=response.json()["id"]).update(
            created_at=T0, window_start=T0, next_attempt_at=T0, **fields
        )
        return Message.objects.get(pk=response.json()["id"])

    def provider_states(self) -> list[str]:
        return [row["state"] for row in FirstWorkingEmailBackend().provider_states()]

    @responses.activate
    def test_inline_text_that_is_not_utf8_fails_alone(self):
        """A stored attachment that cannot be encoded fails its message with local_error
        attempts and no provider call; the next message is sent by SendGrid, still active."""
        mock_sendgrid(responses)
        mock_mailgun(responses)
        attachment = {
            "filename": "n.txt",
            "content": NOT_UTF8,
            "mimetype": "text/plain",
            "inline": True,
            "content_id": "n",
        }
        poisoned = message_deliver(message_id=self.poisoned(attachments=[attachment]).pk, now=T0)
        if django.VERSION < (
            6,
            0,
        ):  # Django 6 builds inline parts as MIMEPart, which sends these bytes as they are
            self.assertEqual(poisoned.status, "failed")
            self.assertEqual(set(poisoned.attempts.values_list("outcome", flat=True)), {"local_error"})
            self.assertIn("utf-8", poisoned.last_error.lower())
            self.assertEqual(len(responses.calls), 0)
        self.assertEqual(self.provider_states(), ["active", "standby"])
        healthy = message_deliver(message_id=self.poisoned().pk, now=T0)
        self.assertEqual((healthy.status, healthy.provider), ("sent", "sendgrid"))

    @responses.activate
    def test_a_backend_bug_before_the_network_is_retried_not_failed(self):
        """An error that is not about the content (a bug) blames no provider and is deferred."""
        with (
            mock.patch(
                "anymail.backends.sendgrid.EmailBackend.build_message_payload", side_effect=KeyError("x")
            ),
            mock.patch(
                "anymail.backends.mailgun.EmailBackend.build_message_payload", side_effect=KeyError("x")
            ),
        ):
            message = message_deliver(message_id=self.poisoned().pk, now=T0)
        self.assertEqual(message.status, "deferred")
        self.assertEqual(set(message.attempts.values_list("outcome", flat=True)), {"local_error"})
        self.assertEqual(self.provider_states(), ["active", "standby"])
