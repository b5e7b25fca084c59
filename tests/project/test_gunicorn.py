"""The web process as deployed (docs/deployment.md): real gunicorn with deploy/gunicorn.conf.py,
DEBUG off, static files gathered by collectstatic and served through WhiteNoise, and an access
log without query strings.

Nothing here needs a database server: the pages fetched touch no table."""

import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request

from django.test import SimpleTestCase

from tests.project.gunicorn_process import ROOT, Gunicorn, class_workspace, production_environment


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
        tmp, cls.port = class_workspace(cls, "smtest-gunicorn-")
        cls.env = production_environment(tmp, cls.port, STATIC_ROOT=str(tmp / "static"), WEB_CONCURRENCY="2")
        collected = subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--no-input"],
            cwd=ROOT,
            env=cls.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if collected.returncode:
            raise AssertionError(collected.stdout + collected.stderr)
        cls.server = Gunicorn(cls.env, tmp, cls.port)
        cls.addClassCleanup(cls.server.stop)
        cls.access_log = cls.server.access_log
        cls.base = f"http://127.0.0.1:{cls.port}"

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
                self.assert_served(
                    path, "text/css" if path.endswith(".css") else "text/javascript|application/javascript"
                )

    def test_access_log_has_no_query_string(self):
        """A request with a query string is logged with its path only."""
        marker = secrets.token_hex(8)
        status, _, _ = fetch(f"{self.base}/static/admin/css/base.css?v={marker}&token={marker}")
        self.assertEqual(status, 200)
        deadline = time.monotonic() + 10
        lines: list[str] = []
        while time.monotonic() < deadline:
            lines = [
                line
                for line in self.access_log.read_text().splitlines()
                if "/static/admin/css/base.css" in line
            ]
            if lines:
                break
            time.sleep(0.1)
        self.assertTrue(lines, self.access_log.read_text())
        text = self.access_log.read_text()
        self.assertNotIn(marker, text)
        self.assertNotIn("?", text)
        self.assertRegex(lines[-1], r'"GET /static/admin/css/base\.css HTTP/1\.1" 200 ')
