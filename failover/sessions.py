"""The inner backends of a session, one set per thread (a requests.Session is never shared
between threads): built and opened when a message first needs them, set aside after a provider
error, and closed when the session ends."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from django.core.mail.backends.base import BaseEmailBackend

from failover import reporting
from failover.network import pin_environment
from failover.providers import ProviderConfig


class BackendPool(threading.local):
    """A session is what Django calls a connection: `open()`/`close()`, a `with` block, or one
    batch when the caller opened nothing. The caller that started it decides when it ends, even
    after a send raised, so nothing opened in it is closed earlier than that."""

    def __init__(self, providers: Mapping[str, ProviderConfig], timeouts: tuple[float, float]) -> None:
        # threading.local runs this once per thread, with the same arguments.
        self.providers = providers
        self.timeouts = timeouts
        self.instances: dict[str, BaseEmailBackend] = {}
        self.opened: dict[str, bool] = {}  # provider -> we must close it
        # Backends set aside after a provider error: not reused (an SMTP backend keeps a dead
        # socket), but closed only when the session ends, as their callers expect.
        self.retired: list[tuple[str, BaseEmailBackend]] = []
        self.active = False  # a session (open(), `with`, or one batch) is in progress

    def start(self) -> bool:
        """True when this call started a session (the caller then ends it), False when one is
        already in progress. Inner backends open lazily, once, when a message first needs them."""
        if self.active:
            return False
        self.active = True
        return True

    def end(self) -> None:
        """Close every inner backend this session opened, those set aside included."""
        self.active = False
        retired, self.retired = self.retired, []
        for name, backend in retired:
            self._close(name, backend)
        for name in list(self.instances):
            backend = self.instances.pop(name)
            if self.opened.pop(name, False):
                self._close(name, backend)

    def connection(self, name: str) -> BaseEmailBackend:
        """The provider's inner backend in this session, built and opened on first use."""
        if name not in self.instances:
            self.instances[name] = self.providers[name].build(self.timeouts)
        if name not in self.opened:
            self.opened[name] = bool(self.instances[name].open())
            pin_environment(self.instances[name])
        return self.instances[name]

    def retire(self, name: str) -> None:
        """Stop using one inner backend after a provider error: the next use builds and opens a
        fresh one, and this one stays open until the session ends."""
        backend = self.instances.pop(name, None)
        if backend is not None and self.opened.pop(name, False):
            # One set aside per provider: an older one is closed now, so a provider failing
            # message after message does not pile up open connections.
            for earlier in [entry for entry in self.retired if entry[0] == name]:
                self.retired.remove(earlier)
                self._close(*earlier)
            self.retired.append((name, backend))
        self.opened.pop(name, None)

    def _close(self, name: str, backend: BaseEmailBackend) -> None:
        try:
            backend.close()
        except Exception as err:  # a failing close must not hide the send result
            reporting.close_failed(name, err, self.providers[name].secrets())
