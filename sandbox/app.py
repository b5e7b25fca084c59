"""The sandbox as one object: providers, faults, the message store, webhooks and the listeners.

`Sandbox(settings).start()` serves the control API on `settings.port` and each provider on its
own port; tests use it in-process (`with Sandbox(...) as sandbox:`), the CLI runs it until
interrupted.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sandbox.conf import SandboxSettings, anymail_values
from sandbox.control import ControlApp
from sandbox.faults import Fault, FaultBoard
from sandbox.providers import PROVIDER_NAMES, PROVIDERS
from sandbox.providers.base import Provider
from sandbox.receiving import SendEndpoint
from sandbox.server import Listener
from sandbox.store import MessageStore
from sandbox.webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)


def build_providers(settings: SandboxSettings) -> dict[str, Provider]:
    """Each provider of the table, with the keys and domains `settings` give it."""
    return {
        spec.name: spec.build(
            api_key=settings.api_keys[spec.name],
            webhook_key=settings.webhook_keys.get(spec.name, ""),
            sender_domains=settings.sender_domains.get(spec.name, ()),
        )
        for spec in PROVIDERS
    }


class Sandbox:
    """Owns every part and every listener, so starting, stopping and resetting are one call each;
    the control API (`sandbox.control`) reaches the parts through it."""

    def __init__(self, settings: SandboxSettings | None = None, *, faults: dict[str, Fault] | None = None):
        self.settings = settings or SandboxSettings()
        self.stopping = threading.Event()
        self.faults = FaultBoard(PROVIDER_NAMES, default_seed=self.settings.seed)
        self.store = MessageStore(self.settings.max_messages)
        self.providers = build_providers(self.settings)
        self.webhooks = WebhookDispatcher(
            self.providers,
            base_url=self.settings.webhook_url,
            delay=self.settings.webhook_delay,
            timeout=self.settings.webhook_timeout,
            basic_auth=self.settings.webhook_secret,
        )
        ports = self.settings.resolved_provider_ports()
        self.listeners = {
            name: Listener(
                self.settings.host,
                ports[name],
                SendEndpoint(
                    self.providers[name],
                    faults=self.faults,
                    store=self.store,
                    webhooks=self.webhooks,
                    stopping=self.stopping,
                ),
                name,
            )
            for name in PROVIDER_NAMES
        }
        self.control = Listener(self.settings.host, self.settings.port, ControlApp(self), "control")
        self._initial_faults = dict(faults or {})
        self._started = False
        self.faults.subscribe(self._apply_fault)

    # Lifecycle --------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Open every port, then apply the initial faults (a provider started "down" closes)."""
        try:
            self.control.open()
            for listener in self.listeners.values():
                listener.open()
        except OSError:
            self.stop()
            raise
        self.webhooks.start()
        self._started = True
        for name, fault in self._initial_faults.items():
            self.faults.set(name, fault)
        return self

    def stop(self) -> None:
        self._started = False
        self.stopping.set()
        self.webhooks.stop()
        for listener in [*self.listeners.values(), self.control]:
            listener.close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # Control ----------------------------------------------------------------------------

    def set_fault(self, provider: str, fault: Fault) -> Fault:
        return self.faults.set(provider, fault)

    def reset(self) -> None:
        """Healthy providers, no records, no pending or past webhooks."""
        self.faults.clear()
        self.store.clear()
        self.webhooks.clear()

    def _apply_fault(self, provider: str, fault: Fault) -> None:
        if not self._started:
            return
        listener = self.listeners[provider]
        if fault.down and listener.is_open:
            listener.close()
            logger.warning("sandbox provider down provider=%s", provider, extra={"provider": provider})
        elif not fault.down and not listener.is_open:
            listener.open()
            logger.warning("sandbox provider up provider=%s", provider, extra={"provider": provider})
        if not fault.healthy:
            logger.warning(
                "sandbox fault set provider=%s fault=%s",
                provider,
                fault.describe(),
                extra={"provider": provider},
            )

    # Where things are -------------------------------------------------------------------

    @property
    def url_host(self) -> str:
        host = self.settings.host
        return f"[{host}]" if ":" in host else host

    @property
    def control_url(self) -> str:
        return f"http://{self.url_host}:{self.control.port}/_sandbox/"

    def api_url(self, provider: str) -> str:
        """What Anymail's <PROVIDER>_API_URL setting must be to send to this sandbox."""
        return f"http://{self.url_host}:{self.listeners[provider].port}{self.providers[provider].prefix}"

    def anymail_settings(self) -> dict[str, str]:
        """The ANYMAIL settings that point a service at this sandbox, keys and secrets included."""
        ports = {name: listener.port for name, listener in self.listeners.items()}
        return anymail_values(self.settings, ports)

    def describe(self) -> dict[str, Any]:
        """The control API's overview (no keys or secrets)."""
        faults = self.faults.all()
        return {
            "control_url": self.control_url,
            "providers": {
                name: {
                    "api_url": self.api_url(name),
                    "port": listener.port,
                    "listening": listener.is_open,
                    "fault": faults[name].as_json(),
                    "fault_summary": faults[name].describe(),
                    "default_key": self.settings.api_keys[name] == self.providers[name].spec.default_api_key,
                }
                for name, listener in self.listeners.items()
            },
            "messages": len(self.store),
            "webhooks": {
                "url": self.settings.webhook_url or None,
                "delay": self.settings.webhook_delay,
                "pending": self.webhooks.pending(),
                "posted": len(self.webhooks.history()),
            },
        }
