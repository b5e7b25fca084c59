"""`/readyz` on a live gunicorn whose cache and task queue are a real Redis (TASKS_BACKEND=rq):
200 while Redis answers; once Redis stops, 503 naming "redis", within the probe's short timeouts
(docs/monitoring.md)."""

from __future__ import annotations

import json
import time
import urllib.error

from tests.servers.base import OPENER, RealServersTestCase


class ReadinessWithRedisTests(RealServersTestCase):
    needs = ("redis",)
    databases = set()

    def readyz(self) -> tuple[int, dict, float]:
        started = time.monotonic()
        try:
            with OPENER.open(self.url + "/readyz", timeout=30) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, body = err.code, err.read()
        return status, json.loads(body), time.monotonic() - started

    def test_readyz_names_redis_when_redis_stops(self):
        env = self.child_environment(
            DATABASE_URL=f"sqlite:///{self.workdir / 'ready.sqlite3'}",
            CACHE_URL=self.redis.url_for(0),
            TASKS_BACKEND="rq",
            REDIS_URL=self.redis.url_for(1),
        )
        self.web, self.url = self.start_gunicorn(env, workers=1, threads=2)
        status, body, _ = self.readyz()
        self.assertEqual((status, body["down"]), (200, []), body)
        self.assertEqual(body["checks"].get("queue"), "ok", body)

        self.redis.kill()
        status, body, seconds = self.readyz()
        self.assertEqual(status, 503, body)
        self.assertEqual(body["down"], ["redis"], body)
        self.assertEqual(body["checks"]["database"], "ok", body)
        self.assertEqual(body["checks"]["cache"], "down", body)
        self.assertEqual(body["checks"]["queue"], "down", body)
        self.assertLess(seconds, 10, "a stopped Redis must not hang the probe")
