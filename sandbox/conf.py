"""The sandbox's settings: documented defaults, SANDBOX_* environment variables, validation.

Precedence, highest first: command-line flags, SANDBOX_* variables, (for `manage.py sandbox`)
the project's ANYMAIL settings, the defaults below. The defaults are development values, not
secrets: `make run` points the service at the sandbox with exactly these.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

from sandbox.exceptions import SandboxConfigError

PROVIDERS: tuple[str, ...] = ("sendgrid", "mailgun", "mandrill")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8025
DEFAULT_API_KEYS: dict[str, str] = {
    "sendgrid": "SG.sandbox-sendgrid-key",
    "mailgun": "sandbox-mailgun-key",
    "mandrill": "sandbox-mandrill-key",
}
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8000"
DEFAULT_WEBHOOK_DELAY = 1.0
DEFAULT_WEBHOOK_SECRET = "sandbox:sandbox-webhook-secret"
DEFAULT_MAILGUN_WEBHOOK_SIGNING_KEY = "sandbox-mailgun-signing-key"
DEFAULT_MANDRILL_WEBHOOK_KEY = "sandbox-mandrill-webhook-key"
DEFAULT_MAX_MESSAGES = 1000
# How long a "timeout" fault holds a request when the fault does not say: longer than any
# sensible client read timeout (Anymail's default is 30 s, the failover backend's 15 s).
DEFAULT_HOLD_SECONDS = 60.0

# The path each provider's API lives under, on that provider's own port; Anymail's API URL
# setting for the provider is http://<host>:<port><prefix>.
API_PREFIXES: dict[str, str] = {
    "sendgrid": "/sendgrid/v3/",
    "mailgun": "/mailgun/v3",
    "mandrill": "/mandrill/api/1.0",
}
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True)
class SandboxSettings:
    """Everything a running sandbox needs to know; build with `from_env()` and `replace()`."""

    host: str = DEFAULT_HOST
    # The control API's port. Each provider listens on its own port (default: port + 1, + 2,
    # + 3 in PROVIDERS order; all ephemeral when port is 0) so that "down" can refuse
    # connections for one provider while the others and the control API stay up.
    port: int = DEFAULT_PORT
    provider_ports: Mapping[str, int] = field(default_factory=dict)
    api_keys: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_API_KEYS))
    # Mailgun sender domains that exist; empty means every domain exists.
    mailgun_domains: tuple[str, ...] = ()
    # Base URL of the service whose /anymail/... tracking endpoints get the webhooks; empty
    # string: post no webhooks.
    webhook_url: str = DEFAULT_WEBHOOK_URL
    webhook_delay: float = DEFAULT_WEBHOOK_DELAY
    webhook_timeout: float = 10.0
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET  # Anymail's WEBHOOK_SECRET, "user:password"
    mailgun_webhook_signing_key: str = DEFAULT_MAILGUN_WEBHOOK_SIGNING_KEY
    mandrill_webhook_key: str = DEFAULT_MANDRILL_WEBHOOK_KEY
    max_messages: int = DEFAULT_MAX_MESSAGES
    seed: int | None = None  # default seed of error-rate faults that name none

    def __post_init__(self) -> None:
        validate_loopback(self.host)
        ports = [self.port, *self.provider_ports.values()]
        for port in ports:
            if not 0 <= int(port) <= 65535:
                raise SandboxConfigError(f"Port {port} is out of range (0-65535).")
        fixed = [port for port in (self.port, *self.resolved_provider_ports().values()) if port]
        if len(fixed) != len(set(fixed)):
            raise SandboxConfigError(f"The control port and the provider ports must all differ: {fixed}.")
        unknown = set(self.provider_ports) - set(PROVIDERS)
        if unknown:
            raise SandboxConfigError(f"Unknown provider(s) in provider_ports: {', '.join(sorted(unknown))}.")
        if set(self.api_keys) != set(PROVIDERS) or not all(self.api_keys.values()):
            raise SandboxConfigError(f"api_keys needs a non-empty key for each of {', '.join(PROVIDERS)}.")
        if self.webhook_delay < 0 or self.webhook_timeout <= 0:
            raise SandboxConfigError("webhook_delay must be >= 0 and webhook_timeout > 0.")
        if self.webhook_url:
            parts = urlsplit(self.webhook_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SandboxConfigError(
                    f"SANDBOX_WEBHOOK_URL must be an http(s) URL, not {self.webhook_url!r}."
                )
        if self.webhook_secret and ":" not in self.webhook_secret:
            raise SandboxConfigError(
                "SANDBOX_WEBHOOK_SECRET must look like 'user:password' (Anymail's WEBHOOK_SECRET)."
            )
        if self.max_messages < 1:
            raise SandboxConfigError("max_messages must be at least 1.")

    def resolved_provider_ports(self) -> dict[str, int]:
        """Each provider's port: its own setting, else port + 1, 2, 3 (0 when port is 0)."""
        return {
            name: int(self.provider_ports.get(name, self.port + index + 1 if self.port else 0))
            for index, name in enumerate(PROVIDERS)
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **fallbacks: Any) -> SandboxSettings:
        """SANDBOX_* variables over `fallbacks` (same names as the fields) over the defaults."""
        values: dict[str, Any] = {key: value for key, value in fallbacks.items() if value not in (None, "")}
        keys = dict(DEFAULT_API_KEYS, **values.pop("api_keys", {}))
        ports: dict[str, int] = dict(values.pop("provider_ports", {}))
        for name in PROVIDERS:
            if environ.get(f"SANDBOX_{name.upper()}_API_KEY"):
                keys[name] = environ[f"SANDBOX_{name.upper()}_API_KEY"]
            if environ.get(f"SANDBOX_{name.upper()}_PORT"):
                ports[name] = _int(environ, f"SANDBOX_{name.upper()}_PORT")
        simple = {
            "host": ("SANDBOX_HOST", str),
            "port": ("SANDBOX_PORT", int),
            "webhook_url": ("SANDBOX_WEBHOOK_URL", str),
            "webhook_delay": ("SANDBOX_WEBHOOK_DELAY", float),
            "webhook_secret": ("SANDBOX_WEBHOOK_SECRET", str),
            "mailgun_webhook_signing_key": ("SANDBOX_MAILGUN_WEBHOOK_SIGNING_KEY", str),
            "mandrill_webhook_key": ("SANDBOX_MANDRILL_WEBHOOK_KEY", str),
            "max_messages": ("SANDBOX_MAX_MESSAGES", int),
            "seed": ("SANDBOX_SEED", int),
        }
        for name, (variable, kind) in simple.items():
            if variable in environ and environ[variable] != "":
                values[name] = _convert(environ, variable, kind)
        if "SANDBOX_WEBHOOK_URL" in environ and environ["SANDBOX_WEBHOOK_URL"] == "":
            values["webhook_url"] = ""  # explicitly empty: no webhooks
        if environ.get("SANDBOX_MAILGUN_DOMAINS"):
            values["mailgun_domains"] = split_words(environ["SANDBOX_MAILGUN_DOMAINS"])
        return cls(api_keys=keys, provider_ports=ports, **values)

    def with_overrides(self, **changes: Any) -> SandboxSettings:
        """A copy with the given non-None fields changed (how flags override the environment)."""
        known = {f.name for f in fields(self)}
        changes = {key: value for key, value in changes.items() if value is not None and key in known}
        if "api_keys" in changes:
            changes["api_keys"] = {**self.api_keys, **changes["api_keys"]}
        if "provider_ports" in changes:
            changes["provider_ports"] = {**self.provider_ports, **changes["provider_ports"]}
        return replace(self, **changes)


def anymail_values(settings: SandboxSettings, ports: Mapping[str, int] | None = None) -> dict[str, str]:
    """The ANYMAIL settings (without the ANYMAIL_ prefix) that point a service at a sandbox with
    these settings: API URLs, keys and webhook secrets. `ports` defaults to the configured ones."""
    ports = ports or settings.resolved_provider_ports()
    if not all(ports.values()):
        raise SandboxConfigError("Ephemeral ports (0) are only known once the sandbox listens.")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    values: dict[str, str] = {}
    for name in PROVIDERS:
        values[f"{name.upper()}_API_URL"] = f"http://{host}:{ports[name]}{API_PREFIXES[name]}"
        values[f"{name.upper()}_API_KEY"] = settings.api_keys[name]
    values["MAILGUN_WEBHOOK_SIGNING_KEY"] = settings.mailgun_webhook_signing_key
    values["MANDRILL_WEBHOOK_KEY"] = settings.mandrill_webhook_key
    if settings.webhook_secret:
        values["WEBHOOK_SECRET"] = settings.webhook_secret
    return values


def service_environment(settings: SandboxSettings | None = None) -> dict[str, str]:
    """Environment variables for the service's processes (`make run`): all three providers, in
    the order sendgrid, mailgun, mandrill, pointed at a sandbox started with `settings`."""
    values = anymail_values(settings or SandboxSettings())
    environment = {"FIRST_WORKING_EMAIL_BACKENDS": ",".join(PROVIDERS)}
    environment.update({f"ANYMAIL_{key}": value for key, value in values.items()})
    return environment


def validate_loopback(host: str) -> None:
    """The sandbox accepts any API key it is told to: it must never listen beyond this machine."""
    if not is_loopback_host(host):
        raise SandboxConfigError(
            f"The sandbox binds loopback addresses only (127.0.0.1, ::1, localhost), not {host!r}."
        )


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]").lower()
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host not in LOOPBACK_NAMES:
        return False
    # A name is only as loopback as what it resolves to here (/etc/hosts may lack one).
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def is_sandbox_url(url: str) -> bool:
    """True for a loopback URL under one of the sandbox's provider paths (what checks refuse)."""
    try:
        parts = urlsplit(str(url))
        hostname = parts.hostname
    except ValueError:
        return False
    first_segment = parts.path.lstrip("/").split("/", 1)[0].lower()
    return is_loopback_host(hostname) and first_segment in PROVIDERS


def split_words(value: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in value.replace(",", " ").split() if word.strip())


def _int(environ: Mapping[str, str], variable: str) -> int:
    return _convert(environ, variable, int)


def _convert(environ: Mapping[str, str], variable: str, kind: type) -> Any:
    try:
        return kind(environ[variable])
    except ValueError as err:
        raise SandboxConfigError(f"{variable}={environ[variable]!r} is not a valid {kind.__name__}.") from err
