"""gunicorn's access log as deployed (deploy/gunicorn.conf.py): one line per request whatever
the client puts in the path or a header, and configured secrets masked there too.

Real gunicorn, requests written byte for byte on a socket (an HTTP client would encode them)."""

import re
import secrets
import socket
import time
from pathlib import Path
from urllib.parse import quote

from django.test import SimpleTestCase

from tests.project.gunicorn_process import Gunicorn, class_workspace, production_environment

WEBHOOK_SECRET = "esp user:pa/ss w@rd-" + secrets.token_hex(4)
# The configured format (remote address, time, "method path protocol", status, bytes, duration,
# "user agent"), each quoted field holding only escaped quotes and backslashes.
QUOTED = r'"(?:[^"\\]|\\.)*"'
ACCESS_LINE = re.compile(rf"^\S+ \[[^\]]+\] {QUOTED} \d{{3}} \d+ \d+ms {QUOTED}$")


class GunicornAccessLogTests(SimpleTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tmp, cls.port = class_workspace(cls, "smtest-access-log-")
        env = production_environment(
            tmp, cls.port, ANYMAIL_WEBHOOK_SECRET=WEBHOOK_SECRET, WEB_CONCURRENCY="1"
        )
        cls.server = Gunicorn(env, tmp, cls.port)
        cls.addClassCleanup(cls.server.stop)
        cls.access_log, cls.error_log = cls.server.access_log, cls.server.error_log

    def send(self, request_line: bytes, *headers: bytes) -> bytes:
        """One raw request; the status line of the answer."""
        lines = [request_line, b"Host: 127.0.0.1", *headers, b"Connection: close", b"", b""]
        raw = b"\r\n".join(lines)
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as connection:
            connection.sendall(raw)
            answer = b""
            while b"\r\n" not in answer:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                answer += chunk
        return answer.split(b"\r\n", 1)[0]

    def logged(self, path: Path, marker: str) -> list[str]:
        """The lines of `path` holding `marker`, once at least one is there."""
        deadline = time.monotonic() + 10
        while True:
            lines = [line for line in path.read_text(errors="replace").splitlines() if marker in line]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.1)

    def test_crlf_in_the_path_cannot_forge_a_line(self):
        """`%0d%0a` in the path (gunicorn decodes it to CR LF) is written as `\\r\\n`: the
        request is one well-formed line and the forged text starts none."""
        marker = secrets.token_hex(6)
        forged = f'127.0.0.1 [01/Jan/2030:00:00:00 +0000] "GET /admin/ HTTP/1.1" 200 0 1ms "{marker}"'
        status = self.send(f"GET /healthz-{marker}%0d%0a{quote(forged)} HTTP/1.1".encode())
        self.assertEqual(status, b"HTTP/1.1 404 Not Found")
        lines = self.logged(self.access_log, marker)
        self.assertEqual(len(lines), 1, self.access_log.read_text())
        self.assertIn(f"GET /healthz-{marker}\\r\\n127.0.0.1 [01/Jan/2030", lines[0])
        self.assertRegex(lines[0], ACCESS_LINE)
        self.assertNotIn("\r", self.access_log.read_text())

    def test_quotes_backslashes_and_controls_stay_inside_their_field(self):
        """A user agent ending its quoted field with `\\"` and a path with ESC, U+2028 and a
        backslash: every value escaped, the line keeps its shape."""
        marker = secrets.token_hex(6)
        status = self.send(
            f"GET /x-{marker}%1b[31m%e2%80%a8%5c HTTP/1.1".encode(),
            b'User-Agent: ua\\" 200 0 1ms "forged',
        )
        self.assertEqual(status, b"HTTP/1.1 404 Not Found")
        [line] = self.logged(self.access_log, marker)
        self.assertIn(f"/x-{marker}\\x1b[31m\\u2028\\\\ HTTP/1.1", line)
        self.assertTrue(line.endswith('"ua\\\\\\" 200 0 1ms \\"forged"'), line)
        self.assertRegex(line, ACCESS_LINE)

    def test_raw_control_bytes_in_the_request_line_are_refused_and_logged_escaped(self):
        """Raw ESC and NEL bytes in the request line: gunicorn answers 400 and its error line
        shows them escaped, on one line."""
        marker = secrets.token_hex(6)
        status = self.send(f"GET /raw-{marker}".encode() + b"\x1b[2J\x85 HTTP/1.1")
        self.assertEqual(status, b"HTTP/1.1 400 Bad Request")
        [line] = self.logged(self.error_log, marker)
        self.assertIn(f"/raw-{marker}\\x1b[2J\\x85", line)
        self.assertNotIn("\x1b", self.error_log.read_text())

    def test_configured_secret_in_the_path_is_masked(self):
        """The webhook secret percent-encoded in a path never reaches the access log."""
        marker = secrets.token_hex(6)
        status = self.send(f"GET /{marker}/{quote(WEBHOOK_SECRET, safe='')}/ HTTP/1.1".encode())
        self.assertEqual(status, b"HTTP/1.1 404 Not Found")
        [line] = self.logged(self.access_log, marker)
        self.assertIn(f"/{marker}/***/ HTTP/1.1", line)
        text = self.access_log.read_text() + self.error_log.read_text()
        self.assertNotIn(WEBHOOK_SECRET.split(":")[1], text)
        self.assertNotIn(quote(WEBHOOK_SECRET.split(":")[1], safe=""), text)
