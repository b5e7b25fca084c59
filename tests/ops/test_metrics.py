"""/metrics: the Prometheus format, each family's values from known rows, the token, and a
fixed number of queries whatever the table sizes (docs/monitoring.md)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from unittest import mock

import responses
from django.core.cache import caches
from django.db import OperationalError
from django.test import TestCase, override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from failover.backends import FirstWorkingEmailBackend
from mailservice import metrics
from mailservice.models import DeliveryAttempt, Message, TrackingEvent
from mailservice.statuses import MessageStatus
from tests.esp import mock_mailgun, mock_sendgrid
from tests.mailservice.helpers import VALID, GatewayMixin, esp_settings

LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "ops-metrics"}}
QUERIES_PER_SCRAPE = 6
_event_ids = itertools.count()


def message(status: str = MessageStatus.SENT, **fields) -> Message:
    return Message.objects.create(from_email="app@example.com", status=status, **fields)


def attempts(message_: Message, round_: int, *pairs: tuple[str, str]) -> None:
    for provider, outcome in pairs:
        DeliveryAttempt.objects.create(message=message_, round=round_, provider=provider, outcome=outcome)


def event(provider: str, event_type: str) -> TrackingEvent:
    return TrackingEvent.objects.create(
        provider=provider, event_id=f"ev-{next(_event_ids)}", event_type=event_type
    )


class ProbesOpenMixin:
    """Whatever guards /metrics leaves the probes alone."""

    def test_the_probes_stay_open(self):
        """/healthz and /readyz never need a token: load balancers hold none."""
        self.assertEqual(self.client.get("/healthz").status_code, 200)
        self.assertEqual(self.client.get("/readyz").status_code, 200)


class ScrapeMixin:
    def scrape(self, **headers) -> dict[str, dict[tuple, float]]:
        """{family name: {((label, value), ...) with the sample's name first: value}}."""
        response = self.client.get("/metrics", **headers)
        self.assertEqual(response.status_code, 200, response.content)
        families = {}
        for family in text_string_to_metric_families(response.content.decode()):
            families[family.name] = {
                (sample.name, *sorted(sample.labels.items())): sample.value for sample in family.samples
            }
        return families

    def values(self, family: str, sample: str | None = None, **scraped) -> dict[tuple, float]:
        """One family's samples named `sample` (the family's own name by default), keyed by label values."""
        found = scraped or self.scrape()
        wanted = sample or family
        return {
            tuple(value for _, value in key[1:]): number
            for key, number in found[family].items()
            if key[0] == wanted
        }


@override_settings(
    CACHES=LOCMEM, FIRST_WORKING_EMAIL_BACKENDS=["django.core.mail.backends.locmem.EmailBackend"]
)
class MetricsFormatTests(ScrapeMixin, TestCase):
    def test_prometheus_text_format_with_every_family(self):
        response = self.client.get("/metrics")
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response["Content-Type"].startswith("text/plain; version=0.0.4"))
        self.assertIn("no-cache", response["Cache-Control"])
        types = {
            family.name: family.type for family in text_string_to_metric_families(response.content.decode())
        }
        self.assertEqual(
            types,
            {
                "smtest_messages": "gauge",
                "smtest_provider_attempts": "counter",
                "smtest_failovers": "counter",
                "smtest_provider_state": "gauge",
                "smtest_delivery_seconds": "histogram",
                "smtest_queue_depth": "gauge",
                "smtest_queue_oldest_age_seconds": "gauge",
                "smtest_webhook_events": "counter",
            },
        )
        self.assertIn("# TYPE smtest_provider_attempts_total counter", response.content.decode())

    def test_openmetrics_when_asked(self):
        response = self.client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
        self.assertTrue(response["Content-Type"].startswith("application/openmetrics-text"))
        self.assertTrue(response.content.decode().endswith("# EOF\n"))

    def test_post_is_refused(self):
        self.assertEqual(self.client.post("/metrics").status_code, 405)

    def test_database_down_answers_503_and_logs(self):
        with (
            mock.patch.object(metrics, "messages_by_status", side_effect=OperationalError("gone")),
            self.assertLogs("mailservice.health", "WARNING") as logs,
        ):
            response = self.client.get("/metrics")
        self.assertEqual(response.status_code, 503)
        self.assertIn("database", response.json()["errors"][0]["message"])
        self.assertEqual(logs.records[0].error_class, "django.db.utils.OperationalError")


@override_settings(
    CACHES=LOCMEM, FIRST_WORKING_EMAIL_BACKENDS=["django.core.mail.backends.locmem.EmailBackend"]
)
class MetricValuesTests(ScrapeMixin, TestCase):
    def test_messages_by_status_with_zeros(self):
        for status in ("queued", "queued", "sent", "delivered", "partially_delivered"):
            message(status)
        found = self.values("smtest_messages")
        self.assertEqual(set(found), {(status,) for status in MessageStatus.values})
        self.assertEqual(found[("queued",)], 2)
        self.assertEqual(
            (found[("sent",)], found[("delivered",)], found[("partially_delivered",)]), (1, 1, 1)
        )
        self.assertEqual(found[("failed",)], 0)

    def test_provider_attempts(self):
        first, second = message(), message()
        attempts(first, 1, ("sendgrid", "provider_error"), ("mailgun", "sent"))
        attempts(second, 1, ("sendgrid", "provider_error"), ("mailgun", "ambiguous"), ("mandrill", "sent"))
        found = self.values("smtest_provider_attempts", "smtest_provider_attempts_total")
        self.assertEqual(
            found,
            {
                ("provider_error", "sendgrid"): 2,  # labels sorted by name: outcome, provider
                ("sent", "mailgun"): 1,
                ("ambiguous", "mailgun"): 1,
                ("sent", "mandrill"): 1,
            },
        )

    def test_failovers_within_one_round_in_id_order(self):
        moved, twice, retried, direct, abandoned, refused = (message() for _ in range(6))
        attempts(moved, 1, ("sendgrid", "provider_error"), ("mailgun", "sent"))
        attempts(twice, 1, ("sendgrid", "ambiguous"), ("mailgun", "local_error"), ("mandrill", "sent"))
        # Rounds apart: a retry, not a failover.
        attempts(retried, 1, ("sendgrid", "provider_error"))
        attempts(retried, 2, ("mailgun", "sent"))
        attempts(direct, 1, ("sendgrid", "sent"))
        # Recovery's record of a dead round names no provider.
        attempts(abandoned, 1, ("", "ambiguous"))
        attempts(abandoned, 2, ("sendgrid", "sent"))
        attempts(refused, 1, ("sendgrid", "message_error"))
        found = self.values("smtest_failovers", "smtest_failovers_total")
        # Labels sorted by name: from, reason, to.
        self.assertEqual(
            found,
            {
                ("sendgrid", "provider_error", "mailgun"): 1,
                ("sendgrid", "ambiguous", "mailgun"): 1,
                ("mailgun", "local_error", "mandrill"): 1,
            },
        )

    @override_settings(
        FIRST_WORKING_EMAIL_BACKENDS=["sendgrid", "mailgun", "mandrill"],
        FIRST_WORKING_EMAIL_CACHE_TIMEOUT=600,
    )
    def test_provider_state_from_the_failover_memory(self):
        caches["default"].clear()
        store = FirstWorkingEmailBackend().memory
        state = store.load()
        store.record_failure(state, "sendgrid", error="HTTP 503", error_class="x.Error", probe=False)
        store.record_success(state, "mailgun")
        store.save(state)
        found = self.values("smtest_provider_state")
        self.assertEqual(
            {key: value for key, value in found.items() if value == 1},
            {("sendgrid", "failing"): 1, ("mailgun", "active"): 1, ("mandrill", "standby"): 1},
        )
        self.assertEqual(len(found), 12)  # every state of every provider, zeros included

    @override_settings(FIRST_WORKING_EMAIL_BACKENDS=[])
    def test_a_misconfigured_chain_leaves_the_other_families(self):
        with self.assertLogs("mailservice.metrics", "WARNING"):
            scraped = self.scrape()
        self.assertEqual(scraped["smtest_provider_state"], {})
        self.assertIn("smtest_messages", scraped)

    def test_delivery_seconds_histogram(self):
        accepted = timezone.now() - timedelta(hours=3)
        for seconds in (0.05, 0.3, 3, 45, 7200):
            message(created_at=accepted, sent_at=accepted + timedelta(seconds=seconds))
        message(MessageStatus.QUEUED, created_at=accepted)  # not sent: not counted
        scraped = self.scrape()
        buckets = self.values("smtest_delivery_seconds", "smtest_delivery_seconds_bucket", **scraped)
        self.assertEqual(
            {le: count for (le,), count in buckets.items()},
            {
                "0.1": 1,
                "0.25": 1,
                "0.5": 2,
                "1.0": 2,
                "2.5": 2,
                "5.0": 3,
                "10.0": 3,
                "30.0": 3,
                "60.0": 4,
                "120.0": 4,
                "300.0": 4,
                "600.0": 4,
                "1800.0": 4,
                "3600.0": 4,
                "+Inf": 5,
            },
        )
        self.assertEqual(
            self.values("smtest_delivery_seconds", "smtest_delivery_seconds_count", **scraped), {(): 5}
        )
        total = self.values("smtest_delivery_seconds", "smtest_delivery_seconds_sum", **scraped)[()]
        self.assertAlmostEqual(total, 0.05 + 0.3 + 3 + 45 + 7200, places=3)

    def test_queue_depth_and_oldest_due_age(self):
        now = timezone.now()
        message(MessageStatus.QUEUED, next_attempt_at=now - timedelta(seconds=30))
        message(MessageStatus.DEFERRED, next_attempt_at=now - timedelta(seconds=120))
        message(MessageStatus.DEFERRED, next_attempt_at=now + timedelta(seconds=600))  # retry not due yet
        message(MessageStatus.QUEUED, next_attempt_at=now + timedelta(seconds=600))  # send_at later
        message(MessageStatus.SENDING, next_attempt_at=now - timedelta(seconds=900))  # a worker holds it
        message(MessageStatus.SENT)
        scraped = self.scrape()
        self.assertEqual(self.values("smtest_queue_depth", **scraped), {(): 2})
        age = self.values("smtest_queue_oldest_age_seconds", **scraped)[()]
        self.assertGreaterEqual(age, 120)
        self.assertLess(age, 130)

    def test_empty_queue_has_age_zero(self):
        message(MessageStatus.SENT)
        scraped = self.scrape()
        self.assertEqual(self.values("smtest_queue_depth", **scraped), {(): 0})
        self.assertEqual(self.values("smtest_queue_oldest_age_seconds", **scraped), {(): 0})

    def test_webhook_events(self):
        for provider, event_type in [
            ("sendgrid", "delivered"),
            ("sendgrid", "delivered"),
            ("sendgrid", "bounced"),
            ("mailgun", "delivered"),
        ]:
            event(provider, event_type)
        found = self.values("smtest_webhook_events", "smtest_webhook_events_total")
        # Labels sorted by name: provider, type.
        self.assertEqual(
            found, {("sendgrid", "delivered"): 2, ("sendgrid", "bounced"): 1, ("mailgun", "delivered"): 1}
        )


@override_settings(
    CACHES=LOCMEM, FIRST_WORKING_EMAIL_BACKENDS=["django.core.mail.backends.locmem.EmailBackend"]
)
class MetricsCostTests(TestCase):
    def fill(self, count: int) -> None:
        now = timezone.now()
        for index in range(count):
            sent = message(created_at=now - timedelta(seconds=10), sent_at=now)
            attempts(sent, 1, (f"esp{index % 3}", "provider_error"), ("mailgun", "sent"))
            message(MessageStatus.DEFERRED, next_attempt_at=now - timedelta(seconds=index))
            event(f"esp{index % 4}", "delivered")

    def test_fixed_number_of_queries_whatever_the_table_sizes(self):
        for count in (1, 40):
            with self.subTest(count=count):
                self.fill(count)
                with self.assertNumQueries(QUERIES_PER_SCRAPE):
                    self.assertEqual(self.client.get("/metrics").status_code, 200)


@override_settings(CACHES=LOCMEM, MAILSERVICE_METRICS_TOKEN="metrics-token-0123456789")
class MetricsTokenTests(ProbesOpenMixin, TestCase):
    def test_required_when_set(self):
        response = self.client.get("/metrics")
        self.assertEqual(response.status_code, 401)
        self.assertEqual(response["Content-Type"], "application/json")
        self.assertIn("Bearer", response.json()["errors"][0]["message"])
        self.assertIn("Bearer", response["WWW-Authenticate"])

    def test_right_token(self):
        for header in ("Bearer metrics-token-0123456789", "bearer metrics-token-0123456789"):
            with self.subTest(header):
                self.assertEqual(self.client.get("/metrics", HTTP_AUTHORIZATION=header).status_code, 200)

    def test_wrong_token(self):
        for header in (
            "Bearer metrics-token-012345678",
            "Bearer metrics-token-0123456789x",
            "Basic metrics-token-0123456789",
            "metrics-token-0123456789",
            "Bearer ",
        ):
            with self.subTest(header):
                self.assertEqual(self.client.get("/metrics", HTTP_AUTHORIZATION=header).status_code, 401)

    def test_not_taken_from_the_url(self):
        self.assertEqual(self.client.get("/metrics?token=metrics-token-0123456789").status_code, 401)

    def test_compared_in_constant_time(self):
        with mock.patch("mailservice.health.hmac.compare_digest", return_value=True) as compare:
            self.assertEqual(self.client.get("/metrics", HTTP_AUTHORIZATION="Bearer guess").status_code, 200)
        compare.assert_called_once_with(b"guess", b"metrics-token-0123456789")

    @override_settings(MAILSERVICE_METRICS_TOKEN="", MAILSERVICE_METRICS_PUBLIC=True)
    def test_open_without_a_token_when_declared_public(self):
        """No token and MAILSERVICE_METRICS_PUBLIC=1: anyone may scrape."""
        self.assertEqual(self.client.get("/metrics").status_code, 200)

    @override_settings(MAILSERVICE_METRICS_PUBLIC=True)
    def test_a_set_token_is_required_even_when_declared_public(self):
        """The token wins over MAILSERVICE_METRICS_PUBLIC: set, it is always required."""
        self.assertEqual(self.client.get("/metrics").status_code, 401)


@override_settings(CACHES=LOCMEM, MAILSERVICE_METRICS_TOKEN="", MAILSERVICE_METRICS_PUBLIC=False)
class MetricsClosedByDefaultTests(ProbesOpenMixin, TestCase):
    """With DEBUG off /metrics needs a token, or MAILSERVICE_METRICS_PUBLIC=1 to be open."""

    def test_closed_with_debug_off_and_no_token(self):
        """DEBUG off, no token, not declared public: 403 naming both settings, nothing computed."""
        with mock.patch.object(metrics, "registry") as registry:
            response = self.client.get("/metrics")
        self.assertEqual(response.status_code, 403)
        self.assertEqual(response["Content-Type"], "application/json")
        message = response.json()["errors"][0]["message"]
        self.assertIn("MAILSERVICE_METRICS_TOKEN", message)
        self.assertIn("MAILSERVICE_METRICS_PUBLIC=1", message)
        self.assertFalse(response.has_header("WWW-Authenticate"))  # no token could open it
        registry.assert_not_called()

    def test_a_token_opens_it(self):
        """With MAILSERVICE_METRICS_TOKEN set, a scrape carrying it is answered."""
        with override_settings(MAILSERVICE_METRICS_TOKEN="metrics-token-0123456789"):
            response = self.client.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-token-0123456789")
        self.assertEqual(response.status_code, 200)

    @override_settings(DEBUG=True)
    def test_open_with_debug_on(self):
        """In development (DEBUG on) /metrics stays open without a token."""
        self.assertEqual(self.client.get("/metrics").status_code, 200)


@esp_settings()
class MetricsFromRealDeliveryTests(GatewayMixin, ScrapeMixin, TestCase):
    """Through the real path: accepted over the API, SendGrid failing, Mailgun taking it."""

    @responses.activate
    def test_a_failover_is_counted_everywhere(self):
        from mailservice.services.delivery import message_deliver

        mock_sendgrid(responses, status=503)
        mock_mailgun(responses)
        message_id = self.post_message(VALID).json()["id"]
        self.assertEqual(self.values("smtest_queue_depth"), {(): 1})
        message_deliver(message_id=message_id, now=timezone.now())
        scraped = self.scrape()
        self.assertEqual(
            self.values("smtest_failovers", "smtest_failovers_total", **scraped),
            {("sendgrid", "provider_error", "mailgun"): 1},
        )
        self.assertEqual(
            self.values("smtest_provider_attempts", "smtest_provider_attempts_total", **scraped),
            {("provider_error", "sendgrid"): 1, ("sent", "mailgun"): 1},
        )
        states = {
            key: value for key, value in self.values("smtest_provider_state", **scraped).items() if value
        }
        self.assertEqual(states, {("sendgrid", "failing"): 1, ("mailgun", "active"): 1})
        self.assertEqual(self.values("smtest_messages", **scraped)[("sent",)], 1)
        self.assertEqual(
            self.values("smtest_delivery_seconds", "smtest_delivery_seconds_count", **scraped), {(): 1}
        )
        self.assertEqual(self.values("smtest_queue_depth", **scraped), {(): 0})
