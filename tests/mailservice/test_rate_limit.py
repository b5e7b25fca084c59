"""The per-key rate limit (MAILSERVICE_API_RATE_LIMIT; docs/security.md): counted in the shared
cache by django-ratelimit, 429 JSON with Retry-After past it, nothing stored. The library's clock
is fixed, so no test sleeps."""

from unittest import mock

from django.core.exceptions import ImproperlyConfigured
from django.test import SimpleTestCase, TestCase, override_settings

from mailservice.models import Message
from mailservice.services.keys import api_key_create
from tests.mailservice.helpers import VALID, GatewayMixin, gateway_settings

# A period start: the library's windows are fixed periods, offset per key.
T0 = 1_900_000_020.0


class FixedClock:
    """Stands in for the `time` module django-ratelimit reads its clock from."""

    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now


@gateway_settings(MAILSERVICE_API_RATE_LIMIT="3/m")
class RateLimitTests(GatewayMixin, TestCase):
    def setUp(self):
        super().setUp()
        self.clock = FixedClock(T0)
        patcher = mock.patch("django_ratelimit.core.time", self.clock)
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_past_the_limit_the_answer_is_429_with_retry_after_and_nothing_is_stored(self):
        """Three posts a minute pass; the fourth is a JSON 429 with Retry-After, not stored."""
        for _ in range(3):
            self.assertEqual(self.post_message(VALID).status_code, 202)
        response = self.post_message(VALID)
        self.assertEqual(response.status_code, 429, response.content)
        self.assertEqual(response["Content-Type"], "application/json")
        self.assertIn("rate limit", response.json()["errors"][0]["message"])
        self.assertTrue(1 <= int(response["Retry-After"]) <= 60)
        self.assertEqual(Message.objects.count(), 3)

    def test_the_limit_counts_every_call_of_the_key(self):
        """Reads count too, and the send URL shares the key's counter."""
        self.client.get("/api/messages", **self.auth)
        self.client.get("/api/providers", **self.auth)
        self.assertEqual(self.client.get("/?to=jane@example.com", **self.auth).status_code, 202)
        response = self.client.get("/?to=jane@example.com", **self.auth)
        self.assertEqual(response.status_code, 429)
        self.assertIn("Retry-After", response)
        self.assertEqual(self.client.get("/api/messages", **self.auth).status_code, 429)
        self.assertEqual(Message.objects.count(), 1)

    def test_each_key_has_its_own_limit(self):
        """One key over its limit does not limit another."""
        for _ in range(4):
            self.client.get("/api/messages", **self.auth)
        _, other = api_key_create(name="other", scopes=["send", "read"])
        self.assertEqual(
            self.client.get("/api/messages", HTTP_AUTHORIZATION=f"Bearer {other}").status_code, 200
        )

    def test_the_limit_lifts_once_retry_after_has_passed(self):
        """After Retry-After seconds the key is served again."""
        for _ in range(3):
            self.client.get("/api/messages", **self.auth)
        refused = self.client.get("/api/messages", **self.auth)
        self.assertEqual(refused.status_code, 429)
        self.clock.now += int(refused["Retry-After"]) - 1
        self.assertEqual(self.client.get("/api/messages", **self.auth).status_code, 429)
        self.clock.now += 1
        self.assertEqual(self.client.get("/api/messages", **self.auth).status_code, 200)

    def test_unauthenticated_calls_are_not_counted_against_a_key(self):
        """A wrong key is a 401 and does not use up the real key's limit."""
        for _ in range(5):
            self.assertEqual(
                self.client.get("/api/messages", HTTP_AUTHORIZATION="Bearer smt_wrong").status_code, 401
            )
        self.assertEqual(self.client.get("/api/messages", **self.auth).status_code, 200)

    def test_zero_turns_the_limit_off(self):
        """MAILSERVICE_API_RATE_LIMIT=0: no limit."""
        with self.settings(MAILSERVICE_API_RATE_LIMIT="0"):
            for _ in range(10):
                self.assertEqual(self.client.get("/api/messages", **self.auth).status_code, 200)

    def test_a_cache_that_cannot_count_lets_requests_through(self):
        """A failing cache is logged and does not refuse the key's requests."""
        with mock.patch("mailservice.api.auth.get_usage", side_effect=ConnectionError("cache down")):
            with self.assertLogs("mailservice.api.auth", "WARNING"):
                self.assertEqual(self.client.get("/api/messages", **self.auth).status_code, 200)

    def test_a_malformed_limit_is_a_configuration_error(self):
        """A value that is not requests/period stops with a message naming the setting."""
        from mailservice.api.auth import api_rate_limit

        for value, expected in (("600/m", ("600/m", 600)), ("100/5m", ("100/5m", 100)), ("0", None)):
            with self.subTest(value=value), self.settings(MAILSERVICE_API_RATE_LIMIT=value):
                self.assertEqual(api_rate_limit(), expected)
        with (
            self.settings(MAILSERVICE_API_RATE_LIMIT="lots"),
            self.assertRaisesMessage(ImproperlyConfigured, "MAILSERVICE_API_RATE_LIMIT"),
        ):
            api_rate_limit()

    def test_the_default_limit_is_generous(self):
        """Unset, the limit is 600 requests a minute per key."""
        from mailservice import conf

        self.assertEqual(conf.DEFAULTS["MAILSERVICE_API_RATE_LIMIT"], "600/m")


class RateLimitCheckTests(SimpleTestCase):
    def test_malformed_limit_is_reported_at_startup(self):
        """mailservice.E104 names a MAILSERVICE_API_RATE_LIMIT that is not requests/period."""
        from mailservice.checks import check_api_rate_limit

        with override_settings(MAILSERVICE_API_RATE_LIMIT="lots"):
            self.assertEqual([error.id for error in check_api_rate_limit()], ["mailservice.E104"])
        with override_settings(MAILSERVICE_API_RATE_LIMIT="600/m"):
            self.assertEqual(check_api_rate_limit(), [])
