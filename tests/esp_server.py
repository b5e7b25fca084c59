"""The one local ESP on a real socket, for tests with real processes (tests/servers/,
tests/acceptance/) and for the benchmarks (bench/). Unit tests use `responses` instead
(tests/esp.py); people use the sandbox (docs/sandbox.md).

It answers SendGrid's and Mailgun's send APIs as they do (SendGrid 202 with X-Message-Id, Mailgun
200 with its JSON id), after an optional delay, or with a chosen error status, or with a 500 on a
random share of requests (each provider drawing from its own seeded generator); counts every
request, per provider and per subject, remembers which it accepted (a 2xx answer), and when the
first arrived and the last was answered (CLOCK_MONOTONIC, one clock for every process of the
machine).

`FakeProvider` runs in the caller's process, in threads; `ProviderProcess` runs one in a process
of its own (so a benchmark's sender does not share its CPU), driven over HTTP: `POST /_reset`
with `{"latency": seconds}` forgets every request and sets the delay, `GET /_stats` answers the
counts. Senders reach it through ANYMAIL_SENDGRID_API_URL / ANYMAIL_MAILGUN_API_URL (see
`anymail_environment`).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import random
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


class FakeProvider:
    def __init__(
        self, *, delay: float = 0.0, error_rate: float = 0.0, seed: int = 0, senders_killed: bool = False
    ):
        self.delay = delay
        self.failing: dict[str, int] = {}  # provider -> HTTP status it answers with
        # Share of requests (0–1) each provider answers with a 500, drawn when a request arrives.
        self.error_rate = error_rate
        self.error_status = 500  # what those requests are answered with
        self.random = {name: random.Random(f"{seed}-{name}") for name in ("sendgrid", "mailgun")}
        self.lock = threading.Lock()
        self.requests: list[dict] = []  # {"provider", "subject", "to", "status"}: the status answered
        self.in_flight = 0  # requests being answered now
        self.first: float | None = None  # time.monotonic() when the first request arrived
        self.last: float | None = None  # … and when the last one was answered
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real APIs

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                self.answer(200, json.dumps(provider.stats()).encode())

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path.startswith("/_reset"):
                    provider.reset(latency=float(json.loads(body or b"{}").get("latency", 0.0)))
                    self.answer(200, b"{}")
                    return
                arrived = time.monotonic()
                name = "mailgun" if "/mailgun/" in self.path else "sendgrid"
                if len(body) < length:  # the sender died mid-request: nothing to take, nobody to answer
                    provider.record(name, body, self.headers.get("Content-Type", ""), None, arrived)
                    self.close_connection = True
                    return
                # Decided on arrival: a request whose sender dies while we sleep was still taken.
                status = provider.failing.get(name) or provider.random_error(name)
                provider.record(
                    name,
                    body,
                    self.headers.get("Content-Type", ""),
                    status or (200 if name == "mailgun" else 202),
                    arrived,
                )
                with provider.lock:
                    provider.in_flight += 1
                try:
                    if provider.delay:
                        time.sleep(provider.delay)
                finally:
                    with provider.lock:
                        provider.in_flight -= 1
                        provider.last = time.monotonic()
                if status:
                    self.answer(status, b'{"errors": [{"message": "unavailable"}]}')
                elif name == "mailgun":
                    queued = {"id": f"<{uuid.uuid4().hex}@mg.example.com>", "message": "Queued"}
                    self.answer(200, json.dumps(queued).encode())
                else:
                    self.answer(202, b"", {"X-Message-Id": uuid.uuid4().hex[:22]})

            def answer(self, status: int, body: bytes, headers: dict | None = None):
                try:
                    self.send_response(status)
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the sender was killed while we slept
                    pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # many senders connect at once; a real ESP resets none

            def handle_error(self, request, client_address):
                # A killed sender cuts its requests mid-answer: expected then, not worth a traceback.
                if not senders_killed:
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def random_error(self, name: str) -> int | None:
        """`error_status` for a random `error_rate` share of `name`'s requests, else None."""
        if not self.error_rate:
            return None
        with self.lock:
            return self.error_status if self.random[name].random() < self.error_rate else None

    def record(self, name: str, body: bytes, content_type: str, status: int | None, arrived: float) -> None:
        entry = {"provider": name, "subject": None, "to": [], "status": status}
        if "json" in content_type:
            try:
                data = json.loads(body)
                entry["subject"] = data.get("subject")
                personalizations = data.get("personalizations", [])
                entry["to"] = [to["email"] for p in personalizations for to in p.get("to", [])]
            except (ValueError, AttributeError, KeyError, TypeError):
                pass
        elif "x-www-form-urlencoded" in content_type:  # Mailgun without attachments
            form = parse_qs(body.decode(errors="replace"))
            entry["subject"] = (form.get("subject") or [None])[0]
            entry["to"] = form.get("to", [])
        else:  # Mailgun: a multipart form; the subject is enough for the tests
            marker = b'name="subject"\r\n\r\n'
            if marker in body:
                entry["subject"] = body.split(marker, 1)[1].split(b"\r\n", 1)[0].decode(errors="replace")
        with self.lock:
            self.requests.append(entry)
            self.first = arrived if self.first is None else min(self.first, arrived)

    def reset(self, *, latency: float = 0.0) -> None:
        """Forget every request; answer after `latency` seconds from now on."""
        with self.lock:
            self.delay = latency
            self.requests = []
            self.first = self.last = None

    def stats(self) -> dict:
        with self.lock:
            count = len(self.requests)
            return {"count": count, "first": self.first, "last": self.last, "latency": self.delay}

    def count(self, provider: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if provider in (None, r["provider"]))

    def per_subject(self, provider: str | None = None) -> Counter:
        with self.lock:
            return Counter(r["subject"] for r in self.requests if provider in (None, r["provider"]))

    def accepted_per_subject(self, provider: str | None = None) -> Counter:
        """Requests answered with a 2xx (the provider took the message), per subject."""
        with self.lock:
            return Counter(
                r["subject"]
                for r in self.requests
                if provider in (None, r["provider"]) and r["status"] is not None and 200 <= r["status"] < 300
            )

    def anymail_environment(self, prefix: str = "") -> dict[str, str]:
        """The ANYMAIL_* variables that point a process's SendGrid and Mailgun here. A `prefix`
        ("/esp") keeps the URLs off the sandbox's paths, which the system check sandbox.E001
        refuses with DEBUG off."""
        return {
            "ANYMAIL_SENDGRID_API_KEY": "SG.fake-key",
            "ANYMAIL_SENDGRID_API_URL": f"{self.url}{prefix}/sendgrid/v3/",
            "ANYMAIL_MAILGUN_API_KEY": "fake-mailgun-key",
            "ANYMAIL_MAILGUN_API_URL": f"{self.url}{prefix}/mailgun/v3",
            "ANYMAIL_MAILGUN_SENDER_DOMAIN": "mg.example.com",
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _serve(pipe) -> None:
    """The body of ProviderProcess: a FakeProvider until the process is terminated."""
    provider = FakeProvider()
    pipe.send(provider.port)
    pipe.close()
    provider.thread.join()


class ProviderProcess:
    """A FakeProvider in a process of its own, on a port it chose itself, driven over HTTP."""

    def __init__(self):
        parent, child = multiprocessing.get_context("fork").Pipe()
        self.process = multiprocessing.get_context("fork").Process(target=_serve, args=(child,), daemon=True)
        self.process.start()
        if not parent.poll(10):
            self.close()
            raise RuntimeError("the local provider did not start within 10 s")
        self.port = parent.recv()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self, latency: float = 0.0) -> None:
        self._call("POST", "/_reset", {"latency": latency})

    def stats(self) -> dict:
        """{"count", "first", "last", "latency"}: see FakeProvider.stats."""
        return self._call("GET", "/_stats")

    def _call(self, method: str, path: str, payload: dict | None = None) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            body = json.dumps(payload).encode() if payload is not None else None
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            return json.loads(conn.getresponse().read() or b"{}")
        finally:
            conn.close()

    def close(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
