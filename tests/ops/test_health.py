"""/healthz, /readyz and their exemption from the HTTPS redirect (docs/monitoring.md)."""

from __future__ import annotations

import socket
import time
from unittest import mock

from django.conf import settings
from django.core.cache import caches
from django.db import OperationalError, connections
from django.test import SimpleTestCase, TestCase, override_settings

from tests.servers.real import RedisServer, missing

LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "ops-health"}}
REDIS_CACHE = "django.core.cache.backends.redis.RedisCache"
RQ_TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend"}}
SECRET = "hunter2-secret-password"


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HealthzTests(SimpleTestCase):
    """SimpleTestCase: any database query would fail the test."""

    def test_ok_without_auth_or_dependencies(self):
        with mock.patch.object(type(caches), "__getitem__", side_effect=AssertionError("cache touched")):
            response = self.client.get("/healthz")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok"})
        self.assertIn("no-cache", response["Cache-Control"])

    def test_head_is_answered_and_post_is_not(self):
        self.assertEqual(self.client.head("/healthz").status_code, 200)
        self.assertEqual(self.client.post("/healthz").status_code, 405)


@override_settings(CACHES=LOCMEM, TASKS={"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}})
class ReadyzTests(TestCase):
    def assert_down(self, response, down: list[str], checks: dict[str, str]) -> None:
        self.assertEqual(response.status_code, 503, response.content)
        body = response.json()
        self.assertEqual(body["status"], "unavailable")
        self.assertEqual(body["down"], down)
        self.assertEqual({name: body["checks"][name] for name in checks}, checks)

    def test_ready(self):
        response = self.client.get("/readyz")
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(
            response.json(), {"status": "ready", "down": [], "checks": {"database": "ok", "cache": "ok"}}
        )

    def test_database_down(self):
        """The driver's error is logged with its class, the password masked; the body names the database."""
        error = OperationalError(f'connection to "postgres://smtest:{SECRET}@db:5432/smtest" failed')
        with (
            mock.patch.object(connections["default"], "cursor", side_effect=error),
            self.assertLogs("mailservice.health", "WARNING") as logs,
        ):
            response = self.client.get("/readyz")
        self.assert_down(response, ["database"], {"database": "down", "cache": "ok"})
        record = logs.records[0]
        self.assertEqual((record.check, record.kind), ("database", "database"))
        self.assertEqual(record.error_class, "django.db.utils.OperationalError")
        self.assertIn("postgres://smtest:***@db", record.error)
        self.assertNotIn(SECRET, record.getMessage() + record.error + response.content.decode())

    def test_cache_down(self):
        """A cache that is not Redis (the file cache) is reported as `cache`."""
        with (
            mock.patch.object(caches["default"], "set", side_effect=OSError("read-only file system")),
            self.assertLogs("mailservice.health", "WARNING") as logs,
        ):
            response = self.client.get("/readyz")
        self.assert_down(response, ["cache"], {"database": "ok", "cache": "down"})
        self.assertEqual(logs.records[0].error_class, "builtins.OSError")

    def test_cache_that_loses_writes_is_down(self):
        with (
            mock.patch.object(caches["default"], "get", return_value=None),
            self.assertLogs("mailservice.health"),
        ):
            self.assert_down(self.client.get("/readyz"), ["cache"], {"cache": "down"})

    def test_redis_cache_down_answers_quickly(self):
        """A RedisCache on a closed port: 503 naming redis, without the password, in well under a second."""
        url = f"redis://:{SECRET}@127.0.0.1:{closed_port()}/0"
        with override_settings(CACHES={"default": {"BACKEND": REDIS_CACHE, "LOCATION": url}}):
            started = time.monotonic()
            with self.assertLogs("mailservice.health", "WARNING") as logs:
                response = self.client.get("/readyz")
            elapsed = time.monotonic() - started
        self.assert_down(response, ["redis"], {"database": "ok", "cache": "down"})
        self.assertLess(elapsed, 1.0)
        self.assertEqual(logs.records[0].kind, "redis")
        self.assertNotIn(
            SECRET, " ".join(r.getMessage() + r.error for r in logs.records) + response.content.decode()
        )

    def test_redis_that_never_answers_is_bounded(self):
        """A server that accepts the connection and never replies costs the probe about a second."""
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
            url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
            with override_settings(CACHES={"default": {"BACKEND": REDIS_CACHE, "LOCATION": url}}):
                started = time.monotonic()
                with self.assertLogs("mailservice.health", "WARNING"):
                    response = self.client.get("/readyz")
                elapsed = time.monotonic() - started
        self.assert_down(response, ["redis"], {"cache": "down"})
        self.assertLess(elapsed, 3.0)

    def test_rq_queue_down(self):
        """The RQ task backend's Redis is checked; the database queue needs no check of its own."""
        queues = {"default": {"URL": f"redis://127.0.0.1:{closed_port()}/1"}}
        with (
            override_settings(TASKS=RQ_TASKS, RQ_QUEUES=queues),
            self.assertLogs("mailservice.health") as logs,
        ):
            response = self.client.get("/readyz")
        self.assert_down(response, ["redis"], {"database": "ok", "cache": "ok", "queue": "down"})
        self.assertEqual((logs.records[0].check, logs.records[0].kind), ("queue", "redis"))

    def test_failover_memory_cache_is_checked_when_it_is_another(self):
        caches_ = {
            **LOCMEM,
            "failover": {"BACKEND": REDIS_CACHE, "LOCATION": f"redis://127.0.0.1:{closed_port()}"},
        }
        with (
            override_settings(CACHES=caches_, FIRST_WORKING_EMAIL_CACHE="failover"),
            self.assertLogs("mailservice.health"),
        ):
            response = self.client.get("/readyz")
        self.assert_down(response, ["redis"], {"cache": "ok", "cache:failover": "down"})

    def test_everything_down_names_each_kind(self):
        queues = {"default": {"URL": f"redis://127.0.0.1:{closed_port()}/1"}}
        with (
            override_settings(TASKS=RQ_TASKS, RQ_QUEUES=queues),
            mock.patch.object(connections["default"], "cursor", side_effect=OperationalError("down")),
            mock.patch.object(caches["default"], "set", side_effect=OSError("full")),
            self.assertLogs("mailservice.health") as logs,
        ):
            response = self.client.get("/readyz")
        self.assert_down(
            response, ["cache", "database", "redis"], {"database": "down", "cache": "down", "queue": "down"}
        )
        self.assertEqual(len(logs.records), 3)


@override_settings(CACHES=LOCMEM)
class RealRedisReadyzTests(TestCase):
    """Against a throwaway redis-server on loopback: ready while it runs, 503 once it stops."""

    def setUp(self):
        super().setUp()
        if reason := missing("redis"):
            self.skipTest(f"{reason}; the real-Redis readiness test is skipped")
        self.redis = RedisServer.start()
        self.addCleanup(self.redis.stop)

    def test_ready_then_down(self):
        with override_settings(
            CACHES={"default": {"BACKEND": REDIS_CACHE, "LOCATION": self.redis.url_for(0)}},
            TASKS=RQ_TASKS,
            RQ_QUEUES={"default": {"URL": self.redis.url_for(1)}},
        ):
            response = self.client.get("/readyz")
            self.assertEqual(response.status_code, 200, response.content)
            self.assertEqual(response.json()["checks"], {"database": "ok", "cache": "ok", "queue": "ok"})
            self.redis.pause()
            with self.assertLogs("mailservice.health"):
                response = self.client.get("/readyz")
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.json()["down"], ["redis"])
        self.assertEqual(response.json()["checks"], {"database": "ok", "cache": "down", "queue": "down"})


@override_settings(CACHES=LOCMEM, SECURE_SSL_REDIRECT=True)
class PlainHttpProbeTests(TestCase):
    """With DEBUG off every plain-HTTP request is redirected to HTTPS, except the probes'."""

    def test_probes_answer_over_plain_http(self):
        for path in ("/healthz", "/readyz", "/metrics"):
            with self.subTest(path):
                self.assertEqual(self.client.get(path).status_code, 200)

    def test_everything_else_is_still_redirected(self):
        for path in ("/api/messages", "/healthz/", "/metricsx", "/admin/"):
            with self.subTest(path):
                self.assertEqual(self.client.get(path).status_code, 301)

    def test_the_project_setting_names_exactly_the_three_paths(self):
        self.assertEqual(settings.SECURE_REDIRECT_EXEMPT, [r"^(healthz|readyz|metrics)$"])
