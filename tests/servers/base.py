"""The base of the tests in tests/servers/: each class starts the real servers it `needs`
(tests/servers/real.py) once, stops them in a class cleanup whatever happens, and runs its
workers and web servers as child processes configured through the environment alone.

With PostgreSQL, the throwaway server's `smtest` database is migrated by a child
`manage.py migrate`, and registered in this process as the database alias `real`, so a test
reads it with the ORM (`Message.objects.using("real")`); TransactionTestCase empties it after
each test. This process's own test database is not used.

A class with `provider_per_test` gets a local ESP (tests/esp_server.py) as `self.provider` in
each test; `sending_environment()` points a child's SendGrid at it.

A class skips, with the reason in pytest's summary, only when a server's binaries are not
installed; with SMTEST_REQUIRE_SERVERS=1 (.ci/run sets it) that is a failure instead.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import unittest
import urllib.error
from pathlib import Path

from django.db import DEFAULT_DB_ALIAS, connections
from django.test import TransactionTestCase

from tests.e2e.processes import OPENER, Process, clean_environment, free_port, wait_until
from tests.esp_server import FakeProvider
from tests.servers import stack
from tests.servers.real import PostgresServer, RedisServer, missing

ALIAS = "real"


def require_servers(*kinds: str) -> None:
    """Skip (or fail under SMTEST_REQUIRE_SERVERS) unless every server kind can run here."""
    reasons = [reason for kind in kinds if (reason := missing(kind))]
    if not reasons:
        return
    message = "needs a real server: " + "; ".join(reasons)
    if os.environ.get("SMTEST_REQUIRE_SERVERS", "") not in ("", "0"):
        raise RuntimeError(message + " (SMTEST_REQUIRE_SERVERS is set)")
    raise unittest.SkipTest(message)


def register_database(alias: str, url: str) -> None:
    """Make `url` the database `alias` of this process (not in settings.DATABASES)."""
    import environ

    config = environ.Env.db_url_config(url)
    default = dict(connections.settings[DEFAULT_DB_ALIAS])
    configured = connections.configure_settings({DEFAULT_DB_ALIAS: default, alias: config})
    connections.settings[alias] = configured[alias]


def unregister_database(alias: str) -> None:
    if alias in connections.settings:
        connections[alias].close()
        try:
            delattr(connections._connections, alias)
        except AttributeError:
            pass
        del connections.settings[alias]


class RealServersTestCase(TransactionTestCase):
    needs: tuple[str, ...] = ("postgres",)
    databases = {ALIAS}
    postgres: PostgresServer | None = None
    redis: RedisServer | None = None
    provider_per_test = False

    @classmethod
    def setUpClass(cls):
        require_servers(*cls.needs)
        cls.workdir = Path(tempfile.mkdtemp(prefix="smtest-servers-"))
        cls.addClassCleanup(shutil.rmtree, cls.workdir, True)
        if "redis" in cls.needs:
            cls.redis = RedisServer.start()
            cls.addClassCleanup(cls.redis.stop)
        if "postgres" in cls.needs:
            cls.postgres = PostgresServer.start()
            cls.addClassCleanup(cls.postgres.stop)
            cls.manage("migrate", "--no-input", env=cls.child_environment())
            register_database(ALIAS, cls.postgres.url)
            cls.addClassCleanup(unregister_database, ALIAS)
        super().setUpClass()

    def setUp(self):
        super().setUp()
        if self.provider_per_test:
            self.provider = FakeProvider()
            self.addCleanup(self.provider.close)

    # Children ------------------------------------------------------------------------------

    @classmethod
    def child_environment(cls, **extra: str) -> dict[str, str]:
        """What every child gets: smtest.settings on the class's servers (a file cache of the
        class's own when there is no Redis), nothing from this shell's configuration."""
        env = {
            "DJANGO_SETTINGS_MODULE": "smtest.settings",
            "DEBUG": "1",
            "TASKS_BACKEND": "dummy",
            "CACHE_URL": cls.redis.url_for(0) if cls.redis else f"filecache://{cls.workdir / 'cache'}",
            "MAILSERVICE_RETRY_JITTER": "0",
            "LOG_LEVEL": "WARNING",
        }
        if cls.postgres:
            env["DATABASE_URL"] = cls.postgres.url
        return clean_environment(**{**env, **extra})

    def sending_environment(self, **extra: str) -> dict[str, str]:
        """child_environment() sending through SendGrid at `self.provider`; when the class has
        Redis, its tasks queued on RQ."""
        queue = {}
        if self.redis:
            queue = {
                "TASKS_BACKEND": "rq",
                "REDIS_URL": self.redis.url_for(stack.QUEUE_DB),
                "ANYMAIL_WEBHOOK_SECRET": "servers:test",
            }
        sending = {"FIRST_WORKING_EMAIL_BACKENDS": "sendgrid", **self.provider.anymail_environment()}
        return self.child_environment(**{**sending, **queue, **extra})

    @classmethod
    def manage(cls, *args: str, env: dict[str, str], timeout: float = 180) -> str:
        return stack.manage(*args, env=env, timeout=timeout)

    @classmethod
    def child(cls, *args: str, env: dict[str, str], timeout: float = 180) -> dict:
        """`python -m tests.servers.child ARGS`, its JSON answer."""
        output = stack.run([sys.executable, "-m", "tests.servers.child", *args], env=env, timeout=timeout)
        return json.loads(output.strip().splitlines()[-1])

    def start_child(self, name: str, *args: str, env: dict[str, str]) -> Process:
        """A child left running (its own process group), stopped at the end of the test."""
        process = Process(name, [sys.executable, "-m", "tests.servers.child", *args], env, self.workdir)
        self.addCleanup(process.stop)
        return process

    @classmethod
    def start_gunicorn(
        cls, env: dict[str, str], *, workers: int = 3, threads: int = 4
    ) -> tuple[Process, str]:
        """smtest's WSGI app under gunicorn on a free loopback port, stopped in a class cleanup;
        returns the process and its base URL once it answers."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        web = Process(
            "gunicorn",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "smtest.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
                "--worker-class",
                "gthread",
                "--timeout",
                "60",
            ],
            env,
            cls.workdir,
        )
        cls.addClassCleanup(web.stop)

        def up() -> bool:
            if not web.alive():
                raise AssertionError(f"gunicorn exited:\n{web.output()}")
            try:
                with OPENER.open(url + "/healthz", timeout=1):
                    return True
            except urllib.error.HTTPError:
                return True  # it answers
            except OSError:
                return False

        wait_until(up, timeout=60, what="gunicorn to answer")
        return web, url

    def start_process(self, name: str, command: list[str], *, env: dict[str, str]) -> Process:
        process = Process(name, command, env, self.workdir)
        self.addCleanup(process.stop)
        return process

    def start_rq_worker(self, name: str, *, env: dict[str, str]) -> Process:
        """`manage.py rqworker` as the unit file runs it, stopped (its work horse too) at the end
        of the test."""
        worker = stack.start_rq_worker(name, env, self.workdir)
        self.addCleanup(stack.stop_rq_worker, worker)
        return worker


def json_lines(process: Process) -> list[dict]:
    """The JSON lines a finished child printed (its log holds its stderr too)."""
    found = []
    for line in process.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                pass
    return found
