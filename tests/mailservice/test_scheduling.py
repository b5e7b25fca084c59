"""The scheduling horizon (MAILSERVICE_MAX_SCHEDULE_DAYS) and cancelling a message no provider
has taken yet: DELETE /api/messages/{id} and the admin's action, one service (docs/api.md,
"DELETE /api/messages/{id}"; docs/delivery.md, "Operator actions")."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.core import mail
from django.test import TestCase, override_settings
from django.utils import timezone

from mailservice.models import Message, Recipient
from mailservice.services.claiming import messages_claim
from mailservice.services.delivery import message_deliver
from mailservice.services.keys import api_key_create
from mailservice.services.messages import message_cancel
from tests.mailservice.helpers import VALID, GatewayMixin, bearer, gateway_settings


@gateway_settings(MAILSERVICE_API_RATE_LIMIT="0")
class ScheduleHorizonTests(GatewayMixin, TestCase):
    def send_at(self, days: float) -> str:
        return (timezone.now() + timedelta(days=days)).isoformat()

    def test_send_at_past_the_horizon_is_a_422_on_send_at(self):
        """send_at 31 days ahead, past the default 30, is refused on `send_at` naming the setting."""
        response = self.post_message({**VALID, "send_at": self.send_at(31)})
        self.assert_refused(response, 422, "send_at", "MAILSERVICE_MAX_SCHEDULE_DAYS")

    def test_send_at_within_the_horizon_is_accepted(self):
        """send_at 29 days ahead is accepted and the message waits until then."""
        response = self.post_message({**VALID, "send_at": self.send_at(29)})
        self.assertEqual(response.status_code, 202, response.content)
        self.assertEqual(response.json()["status"], "queued")

    @override_settings(MAILSERVICE_MAX_SCHEDULE_DAYS=1)
    def test_the_horizon_follows_its_setting(self):
        """With MAILSERVICE_MAX_SCHEDULE_DAYS=1, two days ahead is too far."""
        self.assert_refused(
            self.post_message({**VALID, "send_at": self.send_at(2)}), 422, "send_at", "at most 1 days"
        )

    @override_settings(MAILSERVICE_MAX_SCHEDULE_DAYS=0)
    def test_zero_turns_the_horizon_off(self):
        """MAILSERVICE_MAX_SCHEDULE_DAYS=0 accepts any time the database stores."""
        response = self.post_message({**VALID, "send_at": "9000-01-01T00:00:00Z"})
        self.assertEqual(response.status_code, 202, response.content)

    def test_the_send_url_has_the_same_horizon(self):
        """GET /?to=…&send_at=… is refused alike."""
        response = self.client.get("/", {"to": "jane@example.com", "send_at": self.send_at(365)}, **self.auth)
        self.assert_refused(response, 422, "send_at")


@gateway_settings(MAILSERVICE_API_RATE_LIMIT="0")
class CancelApiTests(GatewayMixin, TestCase):
    def submit(self, body=None, **headers) -> str:
        response = self.post_message(body or VALID, headers=headers)
        self.assertEqual(response.status_code, 202, response.content)
        return response.json()["id"]

    def cancel(self, message_id: str, auth: dict | None = None):
        return self.client.delete(f"/api/messages/{message_id}", **(auth or self.auth))

    def test_cancelling_a_queued_message_answers_200_with_it_cancelled(self):
        """DELETE of a queued message: 200, the message `cancelled` with its recipients, never sent."""
        message_id = self.submit({**VALID, "cc": "cc@example.com"})
        response = self.cancel(message_id)
        self.assertEqual(response.status_code, 200, response.content)
        body = response.json()
        self.assertEqual((body["id"], body["status"]), (message_id, "cancelled"))
        self.assertEqual({r["status"] for r in body["recipients"]}, {"cancelled"})
        self.assertEqual(body["last_error"], "Cancelled through the API.")
        self.assertIsNone(message_deliver(message_id=message_id))
        self.assertEqual(mail.outbox, [])
        self.assertIsNone(Message.objects.get(pk=message_id).next_attempt_at)

    def test_a_scheduled_message_can_be_cancelled(self):
        """A message waiting for its send_at is cancelled and not sent when the time comes."""
        send_at = timezone.now() + timedelta(hours=1)
        message_id = self.submit({**VALID, "send_at": send_at.isoformat()})
        self.assertEqual(self.cancel(message_id).status_code, 200)
        self.assertIsNone(message_deliver(message_id=message_id, now=send_at + timedelta(minutes=1)))

    def test_a_deferred_message_can_be_cancelled(self):
        """A message every provider deferred (no provider took it) is cancelled before its retry."""
        message_id = self.submit()
        Message.objects.filter(pk=message_id).update(status="deferred")
        Recipient.objects.filter(message_id=message_id).update(status="deferred")
        self.assertEqual(self.cancel(message_id).json()["status"], "cancelled")

    def test_a_message_being_sent_is_a_409_naming_its_status(self):
        """A message a worker holds (`sending`) is too late: 409 naming `sending`, nothing changed."""
        message_id = self.submit()
        messages_claim(owner="worker-1", now=timezone.now(), limit=10, message_id=message_id)
        response = self.cancel(message_id)
        self.assertEqual(response.status_code, 409, response.content)
        self.assertIn("sending", response.json()["errors"][0]["message"])
        self.assertEqual(Message.objects.get(pk=message_id).status, "sending")

    def test_a_sent_message_is_a_409_naming_its_status(self):
        """A message a provider took is too late: 409 naming `sent`."""
        message_id = self.submit()
        message_deliver(message_id=message_id)
        response = self.cancel(message_id)
        self.assertEqual(response.status_code, 409)
        self.assertIn("the message is sent", response.json()["errors"][0]["message"])

    def test_cancelling_twice_is_a_409_naming_cancelled(self):
        """A second DELETE answers 409: the message is already `cancelled`."""
        message_id = self.submit()
        self.cancel(message_id)
        response = self.cancel(message_id)
        self.assertEqual(response.status_code, 409)
        self.assertIn("cancelled", response.json()["errors"][0]["message"])

    def test_unknown_and_malformed_ids_are_404(self):
        """An id no message has, or not an id at all, answers 404 as GET does."""
        for message_id in (str(uuid.uuid4()), "not-an-id"):
            with self.subTest(message_id=message_id):
                self.assertEqual(self.cancel(message_id).status_code, 404)

    def test_a_send_key_cancels_its_own_messages_only(self):
        """A `send` key cancels what it sent; another key's message is a 404, left queued."""
        _, raw_a = api_key_create(name="a", scopes=["send"])
        _, raw_b = api_key_create(name="b", scopes=["send"])
        mine = self.client.post(
            "/api/messages", VALID, content_type="application/json", **bearer(raw_a)
        ).json()["id"]
        self.assertEqual(self.cancel(mine, bearer(raw_b)).status_code, 404)
        self.assertEqual(Message.objects.get(pk=mine).status, "queued")
        self.assertEqual(self.cancel(mine, bearer(raw_a)).status_code, 200)

    def test_a_manage_key_cancels_any_message(self):
        """A `manage` key cancels another key's message."""
        _, raw_sender = api_key_create(name="sender", scopes=["send"])
        _, raw_manager = api_key_create(name="ops", scopes=["manage"])
        response = self.client.post(
            "/api/messages", VALID, content_type="application/json", **bearer(raw_sender)
        )
        theirs = response.json()["id"]
        self.assertEqual(self.cancel(theirs, bearer(raw_manager)).json()["status"], "cancelled")

    def test_a_read_only_key_is_403(self):
        """Cancelling needs `send` (own messages) or `manage`: a `read` key gets 403."""
        message_id = self.submit()
        _, raw_reader = api_key_create(name="reader", scopes=["read"])
        self.assertEqual(self.cancel(message_id, bearer(raw_reader)).status_code, 403)
        self.assertEqual(Message.objects.get(pk=message_id).status, "queued")

    def test_the_operation_is_in_the_openapi_schema(self):
        """DELETE /api/messages/{message_id} is documented with its 200 and 409 answers."""
        schema = self.client.get("/api/openapi.json").json()
        operation = schema["paths"]["/api/messages/{message_id}"]["delete"]
        self.assertLessEqual({"200", "404", "409"}, set(operation["responses"]))


@gateway_settings(MAILSERVICE_API_RATE_LIMIT="0")
class CancelRaceTests(GatewayMixin, TestCase):
    """Cancelling and a worker's claim are both conditional UPDATEs on the ready statuses:
    whichever comes first wins, and the other changes nothing."""

    def test_a_claim_between_reading_and_cancelling_wins(self):
        """The message read as queued, then claimed by a worker: the cancel is refused (sending)."""
        message_id = self.post_message(VALID).json()["id"]
        read_before = Message.objects.get(pk=message_id)
        messages_claim(owner="worker-1", now=timezone.now(), limit=10, message_id=message_id)
        with self.assertRaisesMessage(Exception, "not sending") as caught:
            message_cancel(message=read_before, by="api")
        self.assertEqual(caught.exception.status, "sending")
        message = Message.objects.get(pk=message_id)
        self.assertEqual((message.status, message.lease_owner), ("sending", "worker-1"))
        self.assertEqual(set(message.recipients.values_list("status", flat=True)), {"sending"})

    def test_a_cancelled_message_is_never_claimed(self):
        """After the cancel, a worker's claim finds nothing, however due the message was."""
        message_id = self.post_message(VALID).json()["id"]
        message_cancel(message=Message.objects.get(pk=message_id), by="api")
        claimed = messages_claim(owner="worker-1", now=timezone.now() + timedelta(days=365), limit=10)
        self.assertEqual(claimed, [])

    def test_recipients_a_provider_took_are_left_alone(self):
        """Only waiting recipients are cancelled: one a provider took keeps its status."""
        message_id = self.post_message({**VALID, "cc": "cc@example.com"}).json()["id"]
        Recipient.objects.filter(message_id=message_id, kind="cc").update(status="sent")
        message_cancel(message=Message.objects.get(pk=message_id), by="operator")
        statuses = dict(Recipient.objects.filter(message_id=message_id).values_list("kind", "status"))
        self.assertEqual(statuses, {"to": "cancelled", "cc": "sent"})
