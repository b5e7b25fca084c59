"""Whether a send attempt reached the network: the line between a provider's error and the
message's own (docs/failover.md, "What happens to a message").

An exception raised before a byte left for the provider (a header the email package cannot
parse, metadata too deep to serialize, an attachment that is not text) says nothing about the
provider, whatever its class. Python's audit events tell us exactly when a socket connects or
http.client/smtplib sends, for every backend built on them (requests, urllib3, smtplib, boto),
without patching any library. One process-wide hook sets a flag on the watch of the thread that
is sending; threads that are not sending pay one attribute lookup per audited event.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType

import requests

# Audit events raised when a connection is opened or data is sent (Python's audit events table).
NETWORK_EVENTS = frozenset({
    "socket.getaddrinfo",  # a name looked up: the provider's host is being reached
    "socket.gethostbyname",
    "socket.gethostbyname_ex",
    "socket.connect",
    "socket.sendto",
    "socket.sendmsg",
    "http.client.connect",
    "http.client.send",
    "smtplib.connect",
    "smtplib.send",
})  # fmt: skip

_local = threading.local()
_install_lock = threading.Lock()
_installed = False


def _audit(event: str, args: tuple) -> None:
    if event in NETWORK_EVENTS:
        try:
            watch = getattr(_local, "watch", None)
            if watch is not None:
                watch.reached = True
        except Exception:  # never fail the audited operation (e.g. at interpreter shutdown)
            pass


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_audit)  # cannot be removed; it does nothing outside a watch
            _installed = True


class NetworkWatch:
    """`with NetworkWatch() as watch:` then `watch.reached` says whether this thread opened a
    connection or sent anything inside the block. Watches nest (the outer one is restored)."""

    __slots__ = ("reached", "_outer")

    def __init__(self) -> None:
        self.reached = False
        self._outer: NetworkWatch | None = None

    def __enter__(self) -> NetworkWatch:
        if not _installed:
            _install()
        self._outer = getattr(_local, "watch", None)
        _local.watch = self
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        _local.watch = self._outer
        if self._outer is not None and self.reached:
            self._outer.reached = True


def pin_environment(backend: object) -> None:
    """Read the proxy and CA-bundle environment once for a backend's requests session, instead
    of on every request: requests looks up HTTP(S)_PROXY, NO_PROXY and REQUESTS_CA_BUNDLE for
    each call it makes (about a tenth of a send's CPU at loopback speed), and an ESP backend
    always calls the same API URL. The outcome is the one requests would compute for that URL;
    only a change of the environment while the process runs (or a ~/.netrc entry, which ESP
    APIs do not use) is no longer followed."""
    session = getattr(backend, "session", None)
    url = getattr(backend, "api_url", None)
    if not isinstance(session, requests.Session) or not session.trust_env or not isinstance(url, str):
        return
    found = session.merge_environment_settings(url, {}, None, None, None)
    for scheme, proxy in (found.get("proxies") or {}).items():
        session.proxies.setdefault(scheme, proxy)
    if session.verify is True and found.get("verify") not in (None, True):
        session.verify = found["verify"]
    session.trust_env = False
