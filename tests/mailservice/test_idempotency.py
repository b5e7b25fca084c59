"""Idempotency-Key: same key and body -> first message, sent once; another body -> 409."""

import threading
from datetime import timedelta

from django.db import connection
from django.test import TestCase, TransactionTestCase, override_settings
from django.utils import timezone

from mailservice.models import IdempotencyKey, Message
from mailservice.services.keys import api_key_create
from mailservice.services.recovery import message_recover
from tests.mailservice.helpers import VALID, GatewayMixin, gateway_settings


@gateway_settings()
class IdempotencyTests(GatewayMixin, TestCase):
    def post(self, body, key="order-42", auth=None):
        headers = {"HTTP_IDEMPOTENCY_KEY": key}
        if auth:
            headers["HTTP_AUTHORIZATION"] = auth
        return self.post_message(body, headers=headers)

    def test_same_key_same_body_returns_first_message(self):
        """A retry with the same key and body answers the first message's id; one is stored."""
        first = self.post(VALID)
        second = self.post(VALID)
        self.assertEqual((first.status_code, second.status_code), (202, 202))
        self.assertEqual(first.json()["id"], second.json()["id"])
        self.assertEqual(second["Idempotent-Replayed"], "true")
        self.assertEqual(Message.objects.count(), 1)

    def test_key_order_does_not_matter(self):
        """The parsed body is compared, so key order and `to` as string or list are the same."""
        first = self.post({"to": "jane@example.com", "subject": "Hello", "text": "Hi Jane"})
        second = self.post({"text": "Hi Jane", "subject": "Hello", "to": ["jane@example.com"]})
        self.assertEqual(first.json()["id"], second.json()["id"])

    def test_same_key_other_body_is_409(self):
        """The same key with a different body is a conflict and stores nothing new."""
        self.post(VALID)
        response = self.post({**VALID, "subject": "Changed"})
        self.assertEqual(response.status_code, 409)
        self.assertIsNone(response.json()["errors"][0]["field"])
        self.assertEqual(Message.objects.count(), 1)

    def test_keys_are_scoped_to_the_api_key(self):
        """Another API key using the same Idempotency-Key gets its own message."""
        _, other_raw = api_key_create(name="other")
        first = self.post(VALID)
        second = self.post(VALID, auth=f"Bearer {other_raw}")
        self.assertNotEqual(first.json()["id"], second.json()["id"])

    def test_no_key_means_two_messages(self):
        """Without the header every request is a new message."""
        self.post_message(VALID)
        self.post_message(VALID)
        self.assertEqual(Message.objects.count(), 2)

    def test_invalid_key_header_is_422(self):
        """An Idempotency-Key over 255 characters is refused."""
        self.assert_refused(self.post(VALID, key="k" * 256), 422, None, "Idempotency-Key")

    @override_settings(MAILSERVICE_IDEMPOTENCY_TTL=60)
    def test_key_expires_after_retention(self):
        """After the retention period the key is forgotten and may be used again."""
        first = self.post(VALID)
        IdempotencyKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        second = self.post({**VALID, "subject": "A new one"})
        self.assertEqual(second.status_code, 202)
        self.assertNotEqual(first.json()["id"], second.json()["id"])

    def test_recovery_pass_deletes_expired_keys(self):
        """The recovery pass drops expired idempotency keys."""
        self.post(VALID)
        IdempotencyKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        message_recover()
        self.assertFalse(IdempotencyKey.objects.exists())


@gateway_settings()
class ConcurrentIdempotencyTests(GatewayMixin, TransactionTestCase):
    def test_two_concurrent_requests_with_one_key_store_one_message(self):
        """Two requests racing with one key both answer the same message; one is stored."""
        if connection.vendor == "sqlite" and connection.settings_dict["NAME"].startswith(
            ("file:memorydb", ":memory:")
        ):
            self.fail("The concurrency test needs a file database (see DATABASES TEST NAME in settings).")
        barrier = threading.Barrier(2)
        answers = []

        def send():
            from django.db import connection as thread_connection
            from django.test import Client

            try:
                barrier.wait(timeout=5)
                response = Client().post(
                    "/api/messages",
                    VALID,
                    content_type="application/json",
                    HTTP_IDEMPOTENCY_KEY="race",
                    **self.auth,
                )
                answers.append((response.status_code, response.json().get("id")))
            finally:
                thread_connection.close()

        threads = [threading.Thread(target=send) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        self.assertEqual([status for status, _ in answers], [202, 202], answers)
        self.assertEqual(len({message_id for _, message_id in answers}), 1)
        self.assertEqual(Message.objects.count(), 1)


@gateway_settings()
class IdempotencyRaceTests(GatewayMixin, TestCase):
    def test_losing_the_insert_race_returns_the_winner(self):
        """When the key appears between the check and the insert, the winner's message is returned."""
        from unittest import mock

        from mailservice.schemas import MessageIn
        from mailservice.services import messages as message_services
        from mailservice.services.messages import request_fingerprint
        from mailservice.validation import check_message

        winner = self.post_message(VALID, headers={"HTTP_IDEMPOTENCY_KEY": "race"}).json()["id"]
        payload = MessageIn.model_validate(VALID)
        fingerprint = request_fingerprint(
            payload.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        )
        real_replay = message_services._replay
        calls = []

        def replay_missing_first(**kwargs):
            calls.append(kwargs)
            return None if len(calls) == 1 else real_replay(**kwargs)

        with mock.patch.object(message_services, "_replay", side_effect=replay_missing_first):
            message, replayed = message_services.message_accept(
                draft=check_message(payload),
                api_key=self.api_key,
                idempotency_key="race",
                request_hash=fingerprint,
            )
        self.assertEqual((str(message.pk), replayed, len(calls)), (winner, True, 2))
        self.assertEqual(Message.objects.count(), 1)
