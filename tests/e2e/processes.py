"""Real processes for the end-to-end tests: the sandbox and a delivery worker, on free loopback
ports, always stopped (with their whole process group) when the tests end, pass or fail."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parents[2]
# Loopback requests never go through a proxy the environment may name.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    condition: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}; last value: {last!r}")


class Process:
    """A child in its own process group, its output kept in a log file for failure reports."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=10)
        self._log.close()


# What a developer's shell or .env may hold for the real service: never handed to the children,
# which get exactly the settings each test gives them.
FOREIGN_PREFIXES = ("SANDBOX_", "ANYMAIL_", "FIRST_WORKING_EMAIL_", "MAILSERVICE_")
FOREIGN_NAMES = {
    "DATABASE_URL",
    "CACHE_URL",
    "TASKS_BACKEND",
    "REDIS_URL",
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "LOG_FORMAT",
}
CONTROL_LINE = re.compile(r"control: (\S+)")


def database_url(alias: str = "default") -> str:
    """A DATABASE_URL for a child process that opens the database this process uses under
    `alias`, whatever its engine: during the tests, the test database (SQLite file or
    PostgreSQL's test_… database)."""
    from django.db import connections

    config = connections[alias].settings_dict
    engine = config["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{config['NAME']}"
    if "postgresql" in engine:
        user = quote(config.get("USER") or "", safe="")
        password = quote(config.get("PASSWORD") or "", safe="")
        credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = config.get("HOST") or ""
        if host.startswith("/"):  # a socket directory goes in the query string
            location, query = "", "?" + urlencode({"host": host})
        else:
            location, query = (f"[{host}]" if ":" in host else host), ""
        port = f":{config['PORT']}" if config.get("PORT") else ""
        return f"postgres://{credentials}{location}{port}/{quote(config['NAME'], safe='')}{query}"
    raise NotImplementedError(f"no DATABASE_URL for a child process on {engine}")


def clean_environment(**extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(FOREIGN_PREFIXES) and name not in FOREIGN_NAMES
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def start_sandbox(log_dir: Path, *, webhook_url: str) -> tuple[Process, dict[str, Any]]:
    """`python -m sandbox serve` on ports it picks itself (no race for a port we chose and let
    go); returns the process and its status (API URLs). Stopped here if it never comes up."""
    process = Process(
        "sandbox",
        [
            sys.executable,
            "-m",
            "sandbox",
            "serve",
            "--port",
            "0",
            "--webhook-url",
            webhook_url,
            "--webhook-delay",
            "0",
            "--log-level",
            "INFO",
        ],
        clean_environment(),
        log_dir,
    )

    def status():
        if not process.alive():
            raise AssertionError(f"the sandbox exited:\n{process.output()}")
        match = CONTROL_LINE.search(process.output())
        if not match:
            return None
        try:
            with OPENER.open(match.group(1), timeout=1) as response:
                return json.loads(response.read())
        except OSError:
            return None

    try:
        return process, wait_until(status, what="the sandbox to listen")
    except BaseException:
        process.stop()
        raise


# `manage.py db_worker`, polling often so the tests stay quick. --no-reload: a crashed worker
# must exit (and fail the test), not idle in a live process.
DB_WORKER = [
    sys.executable,
    str(ROOT / "manage.py"),
    "db_worker",
    "--interval",
    "0.1",
    "--no-reload",
    "--no-startup-delay",
]


def start_worker(log_dir: Path, env: dict[str, str]) -> Process:
    """`manage.py db_worker` (`DB_WORKER`) with `env` over a clean environment."""
    return Process("worker", DB_WORKER, clean_environment(**env), log_dir)
