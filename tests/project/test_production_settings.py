"""Production settings from the environment alone (docs/configuration.md, docs/deployment.md):
PostgreSQL, the Redis cache, the RQ task queue and JSON logs.

The project's own settings (smtest.settings, not the tests') are evaluated in a subprocess with
a clean environment, as tests/project/test_security_settings.py does; nothing connects to a
server, so no PostgreSQL or Redis is needed here. The helpers of smtest/environment.py and the
JSON formatter are also tested directly."""

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.test import SimpleTestCase

from mailservice.logfilters import MaskSecrets
from smtest.environment import cache_settings, database_settings, log_format, rq_queues, tasks_settings
from smtest.logformat import JsonFormatter

ROOT = Path(__file__).resolve().parents[2]
KEY = "smt_AbCdEfGhSECRETsecretSECRETsecret0123456789"
# In the child: the settings, then what they gave, as one JSON line on stdout.
PROBE = """
import json, logging, django
from django.conf import settings
django.setup()
from django.core.management import get_commands
from mailservice.compat import task_backends
backend = task_backends["default"]
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"],
    "conn_max_age": settings.DATABASES["default"].get("CONN_MAX_AGE"),
    "conn_health_checks": settings.DATABASES["default"].get("CONN_HEALTH_CHECKS"),
    "cache": settings.CACHES["default"],
    "tasks": settings.TASKS,
    "backend_class": type(backend).__module__ + "." + type(backend).__name__,
    "supports_defer": backend.supports_defer,
    "rq_queues": getattr(settings, "RQ_QUEUES", None),
    "django_rq": "django_rq" in settings.INSTALLED_APPS,
    "rqworker": "rqworker" in get_commands(),
    "middleware": settings.MIDDLEWARE[:2],
    "static_root": str(settings.STATIC_ROOT),
    "static_storage": settings.STORAGES["staticfiles"]["BACKEND"],
}))
"""
# In the child: one log record with `extra=` fields and a key, through the project's LOGGING.
LOG_PROBE = """
import logging, django
django.setup()
logging.getLogger("mailservice.probe").warning(
    "key %s refused", "KEY", extra={"message_id": "m-1", "count": 3, "url": "/send?api_key=KEY"}
)
""".replace("KEY", KEY)
# A production host's servers, named by URL only: nothing connects to them here.
SERVERS = {
    "DATABASE_URL": "postgres://smtest:secret@db.internal:5432/smtest",
    "CACHE_URL": "redis://cache.internal:6379/0",
    "TASKS_BACKEND": "rq",
    "REDIS_URL": "redis://queue.internal:6379/1",
}


def clean_environment(**values: str) -> dict[str, str]:
    """Nothing of this shell's configuration; DEBUG is off, so a SECRET_KEY (required there)."""
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "SYSTEMROOT") if name in os.environ}
    return {
        **keep,
        "DJANGO_SETTINGS_MODULE": "smtest.settings",
        "PYTHONDONTWRITEBYTECODE": "1",
        "SECRET_KEY": "production-settings-test-" + "k" * 40,
        **values,
    }


def run(code: str, **values: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean_environment(**values),
        capture_output=True,
        text=True,
        timeout=120,
    )


def probe(**values: str) -> dict:
    result = run(PROBE, **values)
    if result.returncode:
        raise AssertionError(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


class ProductionSettingsTests(SimpleTestCase):
    def test_embedded_defaults(self):
        """Nothing set: SQLite, the file cache, the database queue, no django_rq; WhiteNoise
        right after the security middleware."""
        found = probe()
        self.assertEqual(found["engine"], "django.db.backends.sqlite3")
        self.assertEqual(found["cache"]["BACKEND"], "django.core.cache.backends.filebased.FileBasedCache")
        self.assertEqual(found["tasks"], {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}})
        self.assertEqual((found["rq_queues"], found["django_rq"], found["rqworker"]), (None, False, False))
        self.assertEqual(
            found["middleware"],
            ["django.middleware.security.SecurityMiddleware", "whitenoise.middleware.WhiteNoiseMiddleware"],
        )
        self.assertEqual(found["static_root"], str(ROOT / "var" / "static"))

    def test_production_stack(self):
        """postgres:// → PostgreSQL with persistent, checked connections; redis:// → Django's
        RedisCache with short timeouts; TASKS_BACKEND=rq → django-tasks-rq on REDIS_URL, with
        django_rq installed and `manage.py rqworker` available."""
        found = probe(**SERVERS, STATIC_ROOT="/srv/smtest/static")
        self.assertEqual(found["engine"], "django.db.backends.postgresql")
        self.assertEqual((found["conn_max_age"], found["conn_health_checks"]), (60, True))
        self.assertEqual(
            found["cache"],
            {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": "redis://cache.internal:6379/0",
                "OPTIONS": {"socket_connect_timeout": 1.0, "socket_timeout": 1.0},
            },
        )
        self.assertEqual(found["tasks"], {"default": {"BACKEND": "django_tasks_rq.RQBackend"}})
        # The backend Django's Tasks API (or the backport on 5.2) builds from it, able to defer.
        self.assertEqual(
            (found["backend_class"], found["supports_defer"]), ("django_tasks_rq.backend.RQBackend", True)
        )
        self.assertEqual(
            found["rq_queues"], {"default": {"URL": "redis://queue.internal:6379/1", "DEFAULT_TIMEOUT": 600}}
        )
        self.assertTrue(found["django_rq"])
        self.assertTrue(found["rqworker"])
        self.assertEqual(found["static_root"], "/srv/smtest/static")

    def test_connection_and_timeout_variables(self):
        """DATABASE_CONN_MAX_AGE, DATABASE_CONN_HEALTH_CHECKS and CACHE_SOCKET_TIMEOUT change the defaults;
        the RQ job timeout follows MAILSERVICE_LEASE_SECONDS."""
        found = probe(
            **SERVERS,
            DATABASE_CONN_MAX_AGE="0",
            DATABASE_CONN_HEALTH_CHECKS="0",
            CACHE_SOCKET_TIMEOUT="0.5",
            MAILSERVICE_LEASE_SECONDS="120",
        )
        self.assertEqual((found["conn_max_age"], found["conn_health_checks"]), (0, False))
        self.assertEqual(found["cache"]["OPTIONS"], {"socket_connect_timeout": 0.5, "socket_timeout": 0.5})
        self.assertEqual(found["rq_queues"]["default"]["DEFAULT_TIMEOUT"], 240)

    def test_rq_without_redis_url_stops_startup_naming_it(self):
        """TASKS_BACKEND=rq and no REDIS_URL: ImproperlyConfigured naming REDIS_URL, nothing guessed."""
        result = run("import django; django.setup()", TASKS_BACKEND="rq")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("ImproperlyConfigured", result.stderr)
        self.assertIn("TASKS_BACKEND=rq needs REDIS_URL", result.stderr)

    def test_unknown_tasks_backend_stops_startup(self):
        """A misspelt TASKS_BACKEND names the choices."""
        result = run("import django; django.setup()", TASKS_BACKEND="redis")
        self.assertIn("TASKS_BACKEND is 'redis'; use one of: database, rq, immediate, dummy", result.stderr)

    def test_json_logs(self):
        """LOG_FORMAT=json: one JSON object per line with time, level, logger, message and the
        `extra=` fields; the key is masked in the message and in the fields."""
        result = run(LOG_PROBE, LOG_FORMAT="json")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, result.stderr)
        entry = json.loads(lines[0])
        self.assertEqual(
            {name: entry[name] for name in ("level", "logger", "message_id", "count", "url")},
            {
                "level": "WARNING",
                "logger": "mailservice.probe",
                "message_id": "m-1",
                "count": 3,
                "url": "/send?api_key=***",
            },
        )
        self.assertEqual(entry["message"], "key smt_AbCdEfGh… refused")
        self.assertRegex(entry["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
        self.assertNotIn("SECRET", result.stderr)

    def test_text_logs_stay_the_default(self):
        """Without LOG_FORMAT a line is plain text, masked as before."""
        result = run(LOG_PROBE)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("WARNING mailservice.probe key smt_AbCdEfGh… refused", result.stderr)
        self.assertNotIn("SECRET", result.stderr)

    def test_bad_log_format_stops_startup(self):
        """LOG_FORMAT=xml is a configuration error naming the choices."""
        result = run("import django; django.setup()", LOG_FORMAT="xml")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("LOG_FORMAT is 'xml'; use one of: text, json", result.stderr)


class EnvironmentHelperTests(SimpleTestCase):
    def test_redis_cache_gets_djangos_backend_and_short_timeouts(self):
        """Whatever backend django-environ picked for redis://, Django's own RedisCache is used;
        options from the URL win over the default timeouts."""
        cache = cache_settings(
            {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": "rediss://h:6380/2",
                "OPTIONS": {"socket_timeout": 5},
            },
            socket_timeout=1.0,
        )
        self.assertEqual(cache["BACKEND"], "django.core.cache.backends.redis.RedisCache")
        self.assertEqual(cache["OPTIONS"], {"socket_connect_timeout": 1.0, "socket_timeout": 5})

    def test_other_caches_are_left_alone(self):
        cache = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": ""}
        self.assertEqual(cache_settings(dict(cache), socket_timeout=1.0), cache)

    def test_database_url_options_win(self):
        """`?conn_max_age=5` in DATABASE_URL wins over the default; SQLite keeps Django's defaults."""
        postgres = database_settings(
            {"ENGINE": "django.db.backends.postgresql", "CONN_MAX_AGE": 5},
            conn_max_age=None,
            conn_health_checks=None,
        )
        self.assertEqual((postgres["CONN_MAX_AGE"], postgres["CONN_HEALTH_CHECKS"]), (5, True))
        sqlite = database_settings(
            {"ENGINE": "django.db.backends.sqlite3"}, conn_max_age=None, conn_health_checks=None
        )
        self.assertNotIn("CONN_MAX_AGE", sqlite)
        self.assertIn("OPTIONS", sqlite)
        with self.assertRaisesMessage(ImproperlyConfigured, "DATABASE_CONN_MAX_AGE must be 0 or more"):
            database_settings(
                {"ENGINE": "django.db.backends.postgresql"}, conn_max_age=-1, conn_health_checks=None
            )

    def test_rq_queues(self):
        self.assertEqual(
            rq_queues(" redis://q:6379/1 ", job_timeout=600),
            {"default": {"URL": "redis://q:6379/1", "DEFAULT_TIMEOUT": 600}},
        )
        with self.assertRaisesMessage(ImproperlyConfigured, "TASKS_BACKEND=rq needs REDIS_URL"):
            rq_queues("", job_timeout=600)
        with self.assertRaisesMessage(ImproperlyConfigured, "REDIS_URL must be a redis://"):
            rq_queues("http://q:6379", job_timeout=600)
        self.assertEqual(tasks_settings(" RQ "), {"default": {"BACKEND": "django_tasks_rq.RQBackend"}})

    def test_log_format_names(self):
        self.assertEqual((log_format("text"), log_format(" JSON ")), ("text", "json"))
        with self.assertRaisesMessage(ImproperlyConfigured, "LOG_FORMAT is 'xml'"):
            log_format("xml")

    def test_json_formatter(self):
        """Behind the masking filter: extras of any type, an exception with a key in it."""
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
        handler.addFilter(MaskSecrets())
        logger = logging.getLogger("smtest.tests.jsonformat")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            try:
                raise ValueError(f"bad key {KEY}")
            except ValueError:
                logger.error(
                    "failed", exc_info=True, extra={"ids": ["a", KEY], "ratio": float("nan"), "obj": object()}
                )
        finally:
            logger.removeHandler(handler)
        entry = json.loads(stream.getvalue())
        self.assertEqual(entry["ids"], ["a", "smt_AbCdEfGh…"])
        self.assertEqual(entry["ratio"], "nan")
        self.assertIn("ValueError: bad key smt_AbCdEfGh…", entry["exception"])
        self.assertNotIn("SECRET", stream.getvalue())
        self.assertEqual(stream.getvalue().count("\n"), 1)
