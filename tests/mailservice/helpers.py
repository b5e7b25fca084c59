"""Shared test setup: a gateway with an API key and a failover chain; `esp_settings()` sends to
the ESP HTTP APIs tests/esp.py mocks."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from django.core.cache import caches
from django.test import override_settings

from mailservice.models import Message
from mailservice.services.keys import api_key_create
from tests.esp import ENDPOINTS, MAILGUN_API_URL, SENDGRID_API_URL
from tests.failover.base import sending_through

FAILOVER = "failover.backends.FirstWorkingEmailBackend"
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"
# Where `esp_settings()` sends: tests/esp.py's fake hosts, which its mock_sendgrid and
# mock_mailgun answer.
SENDGRID_URL = ENDPOINTS["sendgrid"]
MAILGUN_URL = ENDPOINTS["mailgun"]
ANYMAIL = {
    "SENDGRID_API_KEY": "SG.test-sendgrid-key",
    "SENDGRID_API_URL": SENDGRID_API_URL,
    "MAILGUN_API_KEY": "test-mailgun-key",
    "MAILGUN_API_URL": MAILGUN_API_URL,
    "MAILGUN_SENDER_DOMAIN": "mg.example.com",
}
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


# The database task queue, whatever TASKS_BACKEND the suite runs with (rq in CI's server run):
# tests read its rows (django_tasks_db's DBTaskResult) to see what was enqueued.
DATABASE_TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


def bearer(raw_key: str) -> dict[str, str]:
    """The test client's keyword for an API key sent as a Bearer token."""
    return {"HTTP_AUTHORIZATION": f"Bearer {raw_key}"}


def gateway_settings(**extra):
    """The failover backend over locmem, a private cache, no jitter, the database task queue:
    deterministic sends."""
    values = {
        "TASKS": DATABASE_TASKS,
        **sending_through(FAILOVER),
        "FIRST_WORKING_EMAIL_BACKENDS": [LOCMEM],
        "CACHES": {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "gateway"}
        },
        "MAILSERVICE_RETRY_JITTER": 0,
        "ANYMAIL": ANYMAIL,
    }
    return override_settings(**{**values, **extra})


def esp_settings(**extra):
    """SendGrid first, Mailgun second, both answered by `responses`."""
    return gateway_settings(FIRST_WORKING_EMAIL_BACKENDS=["sendgrid", "mailgun"], **extra)


class GatewayMixin:
    """An API key and helpers to call the API with it."""

    def setUp(self):
        super().setUp()
        caches["default"].clear()
        # Every scope, so each test reaches every endpoint (tests/mailservice/test_scopes.py
        # tests the scopes themselves).
        self.api_key, self.raw_key = api_key_create(
            name=f"test-{uuid.uuid4().hex[:6]}", scopes=("send", "read", "manage")
        )
        self.auth = bearer(self.raw_key)

    def post_message(self, body, *, headers=None, raw=False):
        data = body if raw else json.dumps(body)
        return self.client.post(
            "/api/messages", data, content_type="application/json", **{**self.auth, **(headers or {})}
        )

    def assert_refused(self, response, status, field, message_part=None):
        """The answer is `status` with an error on `field`, and nothing was stored."""
        self.assertEqual(response.status_code, status, response.content)
        errors = response.json()["errors"]
        fields = [error["field"] for error in errors]
        self.assertIn(field, fields, errors)
        if message_part:
            messages = " ".join(e["message"] for e in errors if e["field"] == field)
            self.assertIn(message_part.lower(), messages.lower())
        self.assertEqual(Message.objects.count(), 0)


def later(seconds: float, start: datetime = T0) -> datetime:
    return start + timedelta(seconds=seconds)


VALID = {"to": "jane@example.com", "subject": "Hello", "text": "Hi Jane"}
