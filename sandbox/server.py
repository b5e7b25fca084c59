"""HTTP plumbing: a threaded HTTP/1.1 server per port that can be closed and reopened.

"Down" must look to the client exactly like a dead provider, a refused connection, which no
HTTP answer can imitate: the provider's listening socket is closed (and its open keep-alive
connections shut), and reopened on the same port when the fault is cleared.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from sandbox.wire import ApiRequest, ApiResponse, Reply

logger = logging.getLogger(__name__)

App = Callable[[ApiRequest], Reply]
SHUTDOWN_POLL = 0.05  # seconds: how quickly a closed listener stops accepting
MAX_BODY = 64 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests' sessions use real providers
    server_version = "smtest-sandbox"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._write(ApiResponse.json(411, {"error": "Content-Length required"}))
            self.close_connection = True
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:  # would block read(-1) until the client hangs up
            self._write(ApiResponse.json(400, {"error": "invalid Content-Length"}))
            self.close_connection = True
            return
        if length > MAX_BODY:
            self._write(ApiResponse.json(413, {"error": "request too large"}))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        request = ApiRequest(self.command, parts.path, query, self.headers, body)
        try:
            reply = self.server.app(request)
        except Exception:
            logger.exception("sandbox request failed path=%s", parts.path, extra={"path": parts.path})
            reply = Reply(ApiResponse.json(500, {"error": "sandbox internal error"}))
        if reply.response is None:
            self.close_connection = True
            return
        if reply.hold and not self._hold(reply.hold):
            self.close_connection = True
            return
        self._write(reply.response)

    def _hold(self, seconds: float) -> bool:
        """Keep the answer back; True if the client still waits when the time is up."""
        deadline = time.monotonic() + seconds
        watched = [self.connection, self.server.wake_reader]
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            try:
                readable, _, _ = select.select(watched, [], [], remaining)
            except (OSError, ValueError):  # the listener closed under us
                return False
            if self.server.wake_reader in readable:
                return False  # the server is stopping
            if self.connection in readable:
                try:
                    peeked = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    peeked = b""
                if not peeked:
                    return False  # the client timed out and closed the connection
                watched = [self.server.wake_reader]  # pipelined bytes: stop watching the client

    def _write(self, response: ApiResponse) -> None:
        try:
            self.send_response(response.status)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except OSError:  # the client went away
            self.close_connection = True

    def log_message(self, format: str, *args) -> None:
        logger.debug("sandbox http %s " + format, self.server.name, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Workers open many connections at once (MAILSERVICE_SEND_CONCURRENCY); a real ESP takes
    # them all, where socketserver's backlog of 5 would reset some.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App, name: str):
        self.app = app
        self.name = name
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.wake_reader, self._wake_writer = socket.socketpair()
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        # A client that resets its connection is normal here (timeouts, "down"); no traceback.
        logger.debug(
            "sandbox connection error listener=%s", self.name, exc_info=True, extra={"listener": self.name}
        )

    def track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def close_everything(self) -> None:
        """After shutdown(): release held requests and drop every open connection."""
        try:
            self._wake_writer.send(b"x")
        except OSError:
            pass
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()
        for sock in (self.wake_reader, self._wake_writer):
            sock.close()


class Listener:
    """One port serving one app; `close()` refuses connections, `open()` serves again on the same port."""

    def __init__(self, host: str, port: int, app: App, name: str):
        self.host = host
        self.port = port  # 0 until first opened when ephemeral; then fixed for reopening
        self.app = app
        self.name = name
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._server is not None

    def open(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            server = _Server((self.host, self.port), self.app, self.name)
            self.port = server.server_address[1]
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": SHUTDOWN_POLL},
                name=f"sandbox-{self.name}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
        extra = {"listener": self.name, "port": self.port}
        logger.info("sandbox listening name=%s port=%s", self.name, self.port, extra=extra)

    def close(self) -> None:
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None:
                return
            server.shutdown()  # stop accepting; returns once serve_forever has left its loop
            server.close_everything()
            if thread is not None:
                thread.join(timeout=5)
        extra = {"listener": self.name, "port": self.port}
        logger.info("sandbox closed name=%s port=%s", self.name, self.port, extra=extra)
