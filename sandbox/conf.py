"""The sandbox's settings: documented defaults, SANDBOX_* environment variables, validation.

Precedence, highest first: command-line flags, SANDBOX_* variables, (for `manage.py sandbox`)
the project's ANYMAIL settings, the defaults below. The defaults are development values, not
secrets: `make run` points the service at the sandbox with exactly these.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

from sandbox.exceptions import SandboxConfigError
from sandbox.providers import PROVIDER_NAMES, PROVIDERS

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8025
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8000"
DEFAULT_WEBHOOK_DELAY = 1.0
DEFAULT_WEBHOOK_SECRET = "sandbox:sandbox-webhook-secret"
DEFAULT_MAX_MESSAGES = 1000
# How long a "timeout" fault holds a request when the fault does not say: longer than any
# sensible client read timeout (Anymail's default is 30 s, the failover backend's 15 s).
DEFAULT_HOLD_SECONDS = 60.0
# The per-provider defaults by provider name, read off the table in sandbox.providers.
DEFAULT_API_KEYS: Mapping[str, str] = {spec.name: spec.default_api_key for spec in PROVIDERS}
DEFAULT_WEBHOOK_KEYS: Mapping[str, str] = {
    spec.name: spec.webhook_key.default for spec in PROVIDERS if spec.webhook_key
}
# The ANYMAIL_* variables a launcher must remove when it points the service at the sandbox.
CONFLICTING_VARIABLES = tuple(
    f"ANYMAIL_{setting}" for spec in PROVIDERS for setting in spec.conflicting_settings
)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
# Seconds the production check waits for a provider URL's host name to resolve.
RESOLVE_TIMEOUT = 2.0
# The SANDBOX_* variables of the settings that are not per provider, with their types.
VARIABLES: dict[str, tuple[str, type]] = {
    "host": ("SANDBOX_HOST", str),
    "port": ("SANDBOX_PORT", int),
    "webhook_url": ("SANDBOX_WEBHOOK_URL", str),
    "webhook_delay": ("SANDBOX_WEBHOOK_DELAY", float),
    "webhook_secret": ("SANDBOX_WEBHOOK_SECRET", str),
    "max_messages": ("SANDBOX_MAX_MESSAGES", int),
    "seed": ("SANDBOX_SEED", int),
}
# Where the CLI's subcommands and `make run`'s banner find a running sandbox (sandbox.client).
URL_VARIABLE = "SANDBOX_URL"
# The per-provider settings: each a mapping by provider name, merged (not replaced) by overrides.
PER_PROVIDER = ("provider_ports", "api_keys", "webhook_keys", "sender_domains")


@dataclass(frozen=True)
class SandboxSettings:
    """Everything a running sandbox needs to know; build with `from_env()` and `with_overrides()`."""

    host: str = DEFAULT_HOST
    # The control API's port. Each provider listens on its own port (default: port + 1, + 2,
    # + 3 in PROVIDERS order; all ephemeral when port is 0) so that "down" can refuse
    # connections for one provider while the others and the control API stay up.
    port: int = DEFAULT_PORT
    provider_ports: Mapping[str, int] = field(default_factory=dict)
    api_keys: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_API_KEYS))
    # The keys that sign webhooks (Anymail's MAILGUN_WEBHOOK_SIGNING_KEY...), one per provider
    # whose spec has a webhook_key.
    webhook_keys: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_WEBHOOK_KEYS))
    # Sender domains that exist, for providers with a sender_domain_setting; none: every domain exists.
    sender_domains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Base URL of the service whose /anymail/... tracking endpoints get the webhooks; empty
    # string: post no webhooks.
    webhook_url: str = DEFAULT_WEBHOOK_URL
    webhook_delay: float = DEFAULT_WEBHOOK_DELAY
    webhook_timeout: float = 10.0
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET  # Anymail's WEBHOOK_SECRET, "user:password"
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
        _check_names("provider_ports", self.provider_ports, PROVIDER_NAMES)
        with_domains = [spec.name for spec in PROVIDERS if spec.sender_domain_setting]
        _check_names("sender_domains", self.sender_domains, with_domains)
        for name, required in (("api_keys", PROVIDER_NAMES), ("webhook_keys", tuple(DEFAULT_WEBHOOK_KEYS))):
            keys = getattr(self, name)
            if set(keys) != set(required) or not all(keys.values()):
                raise SandboxConfigError(f"{name} needs a non-empty key for each of {', '.join(required)}.")
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
            for index, name in enumerate(PROVIDER_NAMES)
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **fallbacks: Any) -> SandboxSettings:
        """SANDBOX_* variables over `fallbacks` (same names as the fields) over the defaults."""
        values: dict[str, Any] = {key: value for key, value in fallbacks.items() if value not in (None, "")}
        keys = dict(DEFAULT_API_KEYS, **values.pop("api_keys", {}))
        webhook_keys = dict(DEFAULT_WEBHOOK_KEYS, **values.pop("webhook_keys", {}))
        ports: dict[str, int] = dict(values.pop("provider_ports", {}))
        domains: dict[str, tuple[str, ...]] = dict(values.pop("sender_domains", {}))
        for spec in PROVIDERS:
            if environ.get(spec.variable("API_KEY")):
                keys[spec.name] = environ[spec.variable("API_KEY")]
            if environ.get(spec.variable("PORT")):
                ports[spec.name] = _convert(environ, spec.variable("PORT"), int)
            if spec.webhook_key and environ.get(spec.webhook_key.variable):
                webhook_keys[spec.name] = environ[spec.webhook_key.variable]
            if spec.sender_domain_setting and environ.get(spec.variable("DOMAINS")):
                domains[spec.name] = split_words(environ[spec.variable("DOMAINS")])
        for name, (variable, kind) in VARIABLES.items():
            if variable in environ and environ[variable] != "":
                values[name] = _convert(environ, variable, kind)
        if environ.get(VARIABLES["webhook_url"][0]) == "":
            values["webhook_url"] = ""  # explicitly empty: no webhooks
        values.update(api_keys=keys, webhook_keys=webhook_keys, provider_ports=ports, sender_domains=domains)
        return cls(**values)

    def with_overrides(self, **changes: Any) -> SandboxSettings:
        """A copy with the given non-None fields changed (how flags override the environment);
        per-provider mappings are merged into the current ones."""
        known = {f.name for f in fields(self)}
        changes = {key: value for key, value in changes.items() if value is not None and key in known}
        for name in PER_PROVIDER:
            if name in changes:
                changes[name] = {**getattr(self, name), **changes[name]}
        return replace(self, **changes)


def environment_variables() -> tuple[str, ...]:
    """Every SANDBOX_* variable the sandbox reads (docs/sandbox.md, "Settings"), so a check can
    hold the docs and .env.example to exactly these."""
    per_provider: list[str] = []
    for spec in PROVIDERS:
        per_provider += [spec.variable("PORT"), spec.variable("API_KEY")]
        if spec.webhook_key:
            per_provider.append(spec.webhook_key.variable)
        if spec.sender_domain_setting:
            per_provider.append(spec.variable("DOMAINS"))
    return (*(variable for variable, _ in VARIABLES.values()), *per_provider, URL_VARIABLE)


def anymail_values(settings: SandboxSettings, ports: Mapping[str, int] | None = None) -> dict[str, str]:
    """The ANYMAIL settings (without the ANYMAIL_ prefix) that point a service at a sandbox with
    these settings: API URLs, keys and webhook secrets. `ports` defaults to the configured ones."""
    ports = ports or settings.resolved_provider_ports()
    if not all(ports.values()):
        raise SandboxConfigError("Ephemeral ports (0) are only known once the sandbox listens.")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    values: dict[str, str] = {}
    for spec in PROVIDERS:
        values[spec.api_url_setting] = f"http://{host}:{ports[spec.name]}{spec.api_prefix}"
        values[spec.api_key_setting] = settings.api_keys[spec.name]
    for spec in PROVIDERS:
        if spec.webhook_key:
            values[spec.webhook_key.setting] = settings.webhook_keys[spec.name]
        values.update(spec.webhook_verification)
    if settings.webhook_secret:
        values["WEBHOOK_SECRET"] = settings.webhook_secret
    return values


def service_environment(settings: SandboxSettings | None = None) -> dict[str, str]:
    """Environment variables for the service's processes (`make run`): every provider, in the
    table's order, pointed at a sandbox started with `settings`."""
    values = anymail_values(settings or SandboxSettings())
    environment = {"FIRST_WORKING_EMAIL_BACKENDS": ",".join(PROVIDER_NAMES)}
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
    return bool(addresses) and all(
        ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses
    )


# The first path segment of each provider's API ("sendgrid" of /sendgrid/v3/): what marks a sandbox URL.
_PREFIX_SEGMENTS = frozenset(spec.api_prefix.strip("/").split("/", 1)[0].lower() for spec in PROVIDERS)


def is_sandbox_url(url: str, *, timeout: float = RESOLVE_TIMEOUT) -> bool:
    """True for a URL under one of the sandbox's provider paths whose host reaches this machine
    (what checks refuse). The host is resolved, not compared as a string: the sandbox binds only
    loopback, so any name that leads there (`127.1`, `2130706433`, `[::ffff:127.0.0.1]`,
    `0.0.0.0`, a DNS or /etc/hosts name for 127.0.0.1) may be the sandbox under another name.
    Only URLs under the sandbox's paths are resolved: real provider URLs cost no lookup."""
    try:
        parts = urlsplit(str(url))
        hostname = parts.hostname
    except ValueError:
        return False
    first_segment = parts.path.lstrip("/").split("/", 1)[0].lower()
    return first_segment in _PREFIX_SEGMENTS and reaches_this_host(hostname, timeout=timeout)


def reaches_this_host(host: str | None, *, timeout: float = RESOLVE_TIMEOUT) -> bool:
    """Whether a connection to `host` may land on this machine's loopback, where a sandbox
    listens: one of the addresses it resolves to is loopback (IPv4-mapped too) or unspecified
    (`0.0.0.0` and `::` connect to this host). A name that does not resolve within `timeout`
    seconds reaches nothing, so a slow resolver never holds a system check for long."""
    if not host:
        return False
    addresses = resolve(host.strip("[]"), timeout=timeout)
    return any(_is_local(address) for address in addresses)


def resolve(host: str, *, timeout: float = RESOLVE_TIMEOUT) -> set[str]:
    """The addresses `host` resolves to (getaddrinfo, which also reads numeric forms such as
    `127.1`), or none if it fails or takes longer than `timeout`; a literal address at once."""
    try:
        return {str(ipaddress.ip_address(host.split("%")[0]))}
    except ValueError:
        pass
    found: list[set[str]] = []

    def lookup() -> None:
        try:
            found.append({info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)})
        except (OSError, UnicodeError):
            found.append(set())

    # getaddrinfo takes no timeout: the lookup runs in a daemon thread that is left behind if late.
    thread = threading.Thread(target=lookup, name="sandbox-resolve", daemon=True)
    thread.start()
    thread.join(timeout)
    return found[0] if found else set()


def _is_local(address: str) -> bool:
    try:
        parsed = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    parsed = getattr(parsed, "ipv4_mapped", None) or parsed
    return parsed.is_loopback or parsed.is_unspecified


def split_words(value: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in value.replace(",", " ").split() if word.strip())


def _check_names(setting: str, values: Mapping[str, Any], known: Sequence[str]) -> None:
    unknown = set(values) - set(known)
    if unknown:
        raise SandboxConfigError(f"Unknown provider(s) in {setting}: {', '.join(sorted(unknown))}.")


def _convert(environ: Mapping[str, str], variable: str, kind: type) -> Any:
    try:
        return kind(environ[variable])
    except ValueError as err:
        raise SandboxConfigError(f"{variable}={environ[variable]!r} is not a valid {kind.__name__}.") from err
