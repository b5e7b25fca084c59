"""The web process as deployed (docs/deployment.md): real gunicorn with deploy/gunicorn.conf.py,
DEBUG off, static files gathered by collectstatic and served through WhiteNoise, and an access
log without query strings.

Nothing here needs a database server: the pages fetched touch no table."""
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.test import SimpleTestCase

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


class GunicornStaticFilesTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.TemporaryDirectory(prefix="smtest-gunicorn-")
        cls.addClassCleanup(cls.tmp.cleanup)
        tmp = Path(cls.tmp.name)
        cls.port = free_port()
        keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
        cls.env = {
            **keep,
            "DJANGO_SETTINGS_MODULE": "smtest.settings",
            "PYTHONDONTWRITEBYTECODE": "1",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1",
            "ANYMAIL_WEBHOOK_SECRET": "esp:" + secrets.token_urlsafe(24),
            "SECURE_SSL_REDIRECT": "0",
            "SECURE_HSTS_SECONDS": "0",
            "STATIC_ROOT": str(tmp / "static"),
            "DATABASE_URL": f"sqlite:///{tmp / 'unused.sqlite3'}",
            "CACHE_URL": "locmemcache://",
            "BIND": f"127.0.0.1:{cls.port}",
            "WEB_CONCURRENCY": "2",
        }
        collected = subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--no-input"],
            cwd=ROOT, env=cls.env, capture_output=True, text=True, timeout=300,
        )
        if collected.returncode:
            raise AssertionError(collected.stdout + collected.stderr)
        cls.access_log = tmp / "access.log"
        cls.error_log = tmp / "error.log"
        with open(cls.access_log, "wb") as out, open(cls.error_log, "wb") as err:
            cls.server = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py")],
                cwd=ROOT, env=cls.env, stdout=out, stderr=err,
            )
        cls.addClassCleanup(cls.stop_server)
        cls.base = f"http://127.0.0.1:{cls.port}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if cls.server.poll() is not None:
                raise AssertionError(f"gunicorn exited with {cls.server.returncode}:\n{cls.error_log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", cls.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"gunicorn did not listen in {START_TIMEOUT}s:\n{cls.error_log.read_text()}")
                time.sleep(0.2)

    @classmethod
    def stop_server(cls):
        """SIGTERM (gunicorn's graceful stop), SIGKILL if it hangs: never left running."""
        if cls.server.poll() is None:
            cls.server.terminate()
            try:
                cls.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                cls.server.kill()
                cls.server.wait(timeout=10)

    def assert_served(self, path: str, content_type: str) -> dict[str, str]:
        status, headers, body = fetch(self.base + path)
        self.assertEqual(status, 200, path)
        self.assertIn(headers["content-type"].split(";")[0], content_type.split("|"), path)
        self.assertTrue(body, path)
        return headers

    def test_admin_css(self):
        """The admin's stylesheet, with DEBUG off, and its gzip copy made by collectstatic."""
        self.assert_served("/static/admin/css/base.css", "text/css")
        status, headers, _ = fetch(self.base + "/static/admin/css/base.css", **{"Accept-Encoding": "gzip"})
        self.assertEqual((status, headers.get("content-encoding")), (200, "gzip"))

    def test_api_docs_assets(self):
        """Every stylesheet and script /api/docs references is served."""
        status, _, body = fetch(self.base + "/api/docs")
        self.assertEqual(status, 200)
        assets = set(re.findall(r'(?:href|src)="(/static/[^"]+\.(?:css|js))"', body.decode()))
        self.assertTrue(any(path.endswith(".css") for path in assets), assets)
        self.assertTrue(any(path.endswith(".js") for path in assets), assets)
        for path in sorted(assets):
            with self.subTest(path):
                self.assert_served(path, "text/css" if path.endswith(".css") else "text/javascript|application/javascript")

    def test_access_log_has_no_query_string(self):
        """A request with a query string is logged with its path only."""
        marker = secrets.token_hex(8)
        status, _, _ = fetch(f"{self.base}/static/admin/css/base.css?v={marker}&token={marker}")
        self.assertEqual(status, 200)
        deadline = time.monotonic() + 10
        lines: list[str] = []
        while time.monotonic() < deadline:
            lines = [line for line in self.access_log.read_text().splitlines() if "/static/admin/css/base.css" in line]
            if lines:
                break
            time.sleep(0.1)
        self.assertTrue(lines, self.access_log.read_text())
        text = self.access_log.read_text()
        self.assertNotIn(marker, text)
        self.assertNotIn("?", text)
        self.assertRegex(lines[-1], r'"GET /static/admin/css/base\.css HTTP/1\.1" 200 ')
