"""Real gunicorn with deploy/gunicorn.conf.py for the tests of the web process as deployed
(tests/project/test_gunicorn*.py): the environment of a production host on loopback, started
once per class and always stopped."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import TestCase

from tests.e2e.processes import ROOT, free_port

START_TIMEOUT = 60


def production_environment(tmp: Path, port: int, **values: str) -> dict[str, str]:
    """DEBUG off as in production, on a throwaway SQLite file and a local cache, listening on `port`."""
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return {
        **keep,
        "DJANGO_SETTINGS_MODULE": "smtest.settings",
        "PYTHONDONTWRITEBYTECODE": "1",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "ANYMAIL_WEBHOOK_SECRET": "esp:" + secrets.token_urlsafe(24),
        "SECURE_SSL_REDIRECT": "0",
        "SECURE_HSTS_SECONDS": "0",
        "DATABASE_URL": f"sqlite:///{tmp / 'unused.sqlite3'}",
        "CACHE_URL": "locmemcache://",
        "BIND": f"127.0.0.1:{port}",
        **values,
    }


class Gunicorn:
    """gunicorn started with `env`, its access log and error log in `tmp`, listening on `port`."""

    def __init__(self, env: dict[str, str], tmp: Path, port: int):
        self.port = port
        self.access_log = tmp / "access.log"
        self.error_log = tmp / "error.log"
        with open(self.access_log, "wb") as out, open(self.error_log, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py")],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
            )
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"gunicorn exited with {self.process.returncode}:\n{self.error_log.read_text()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError as err:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"gunicorn did not listen in {START_TIMEOUT}s:\n{self.error_log.read_text()}"
                    ) from err
                time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM (gunicorn's graceful stop), SIGKILL if it hangs: never left running."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def class_workspace(test_class: type[TestCase], prefix: str) -> tuple[Path, int]:
    """A temporary folder for the class's gunicorn (its logs, its files), removed after the class's
    tests, and a free loopback port for it to listen on."""
    folder = tempfile.TemporaryDirectory(prefix=prefix)
    test_class.addClassCleanup(folder.cleanup)
    return Path(folder.name), free_port()
