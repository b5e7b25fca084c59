"""Reading FIRST_WORKING_EMAIL_BACKENDS into provider definitions, and building their backends."""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import django
from anymail.backends.base_requests import AnymailRequestsBackend
from django.conf import settings
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.utils.module_loading import import_string

from failover import conf
from failover.errors import mask
from failover.exceptions import FailoverConfigurationError, ProviderBuildError

HAS_MAILERS = django.VERSION >= (6, 1)
ANYMAIL_SHORT_NAME = "anymail.backends.{}.EmailBackend"
ENTRY_KEYS = frozenset({"NAME", "BACKEND", "OPTIONS"})
RATE_PATTERN = re.compile(r"(?P<sends>\d+)\s*/\s*(?P<count>[1-9]\d*)?\s*(?P<unit>[smhd])")
PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Option names whose values are masked wherever an error is described.
SECRET_OPTION_NAMES = ("api_key", "password", "secret", "token", "key")


@dataclass(frozen=True)
class RateLimit:
    """At most `sends` per `period` seconds, across every process sharing the cache."""

    sends: int
    period: float

    @classmethod
    def parse(cls, value: Any, where: str) -> RateLimit:
        """ "50/s", "600/m", "10000/h", "100000/d" (also "50/2s": 50 sends per 2 seconds)."""
        match = RATE_PATTERN.fullmatch(str(value).strip().lower())
        if not match or int(match["sends"]) < 1:
            raise FailoverConfigurationError(
                f"{where}['OPTIONS']['RATE_LIMIT'] is {value!r}; "
                "write sends per period, e.g. '50/s' or '600/m'"
            )
        return cls(int(match["sends"]), int(match["count"] or 1) * PERIODS[match["unit"]])


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    backend_path: str
    options: Mapping[str, Any] = field(default_factory=dict)
    mailer_alias: str | None = None  # Django 6.1: built like mailers[alias]
    rate_limit: RateLimit | None = None  # OPTIONS["RATE_LIMIT"], not passed to the backend

    def backend_class(self) -> type[BaseEmailBackend]:
        return _import_backend(self.backend_path)

    def build(self, timeouts: tuple[float, float]) -> BaseEmailBackend:
        """Construct the backend; any failure becomes ProviderBuildError (a provider error)."""
        try:
            cls = self.backend_class()
            options = dict(self.options)
            _apply_default_timeout(cls, options, timeouts)
            if self.mailer_alias is not None:
                options["alias"] = self.mailer_alias
            elif HAS_MAILERS and cls.__module__.startswith("django.core.mail.backends."):
                # Django 6.1 builds its own backends from OPTIONS alone when given an alias
                # (without one they read the EMAIL_* settings, which MAILERS forbids).
                options["alias"] = self.name
            return cls(**options)
        except Exception as err:
            reason = f"{type(err).__name__}: {err}".splitlines()[0]
            raise ProviderBuildError(self.name, self.backend_path, mask(reason, self.secrets())) from err

    def secrets(self) -> frozenset[str]:
        """Option values that must never be shown (API keys, passwords) plus the ANYMAIL keys."""
        found = {
            str(value)
            for key, value in self.options.items()
            if isinstance(value, str) and any(part in key.lower() for part in SECRET_OPTION_NAMES)
        }
        return frozenset(found | anymail_secrets())


@functools.lru_cache(maxsize=128)
def _import_backend(path: str) -> type[BaseEmailBackend]:
    return import_string(path)


def anymail_secrets() -> frozenset[str]:
    anymail = getattr(settings, "ANYMAIL", None) or {}
    return frozenset(
        str(value)
        for key, value in anymail.items()
        if isinstance(value, str) and len(value) >= 4 and any(p in key.lower() for p in SECRET_OPTION_NAMES)
    )


def _apply_default_timeout(cls: type, options: dict, timeouts: tuple[float, float]) -> None:
    """Give HTTP and SMTP backends our short timeouts unless the entry's OPTIONS set one."""
    if "timeout" in options:
        return
    if issubclass(cls, AnymailRequestsBackend):
        options["timeout"] = timeouts  # requests takes (connect, read)
    elif issubclass(cls, SMTPBackend):
        options["timeout"] = timeouts[1]


def expand_backend_path(path: str) -> str:
    """`sendgrid` is short for Anymail's `anymail.backends.sendgrid.EmailBackend`."""
    path = path.strip()
    return path if "." in path else ANYMAIL_SHORT_NAME.format(path.lower())


def normalize_name(esp_name: str) -> str:
    """A provider's name as the chain, the gateway and its webhooks spell it: Anymail's
    `esp_name` lowercased without spaces, underscores or hyphens, so "Amazon SES", its module
    name "amazon_ses" and "amazonses" are one ESP."""
    return re.sub(r"[\s_-]", "", esp_name.lower())


def default_name(backend_path: str) -> str:
    """Anymail's esp_name lowercased when importable, else the backend's module name."""
    try:
        esp_name = getattr(import_string(backend_path), "esp_name", None)
    except ImportError:
        esp_name = None
    if isinstance(esp_name, str) and esp_name:
        return normalize_name(esp_name)
    module = backend_path.rsplit(".", 1)[0]
    return module.rsplit(".", 1)[-1]


def _mailers() -> dict:
    if not HAS_MAILERS:  # Django < 6.1 has no MAILERS; skip the (slow) missing-setting lookup
        return {}
    return getattr(settings, "MAILERS", None) or {}


def parse_entry(entry: Any, index: int) -> ProviderConfig:
    where = f"FIRST_WORKING_EMAIL_BACKENDS[{index}]"
    if isinstance(entry, str):
        if not entry.strip():
            raise FailoverConfigurationError(f"{where} is empty")
        if entry in _mailers():
            return _from_mailer_alias(entry, where)
        path = expand_backend_path(entry)
        return ProviderConfig(name=default_name(path), backend_path=path)
    if isinstance(entry, Mapping):
        unknown = set(entry) - ENTRY_KEYS
        if unknown:
            raise FailoverConfigurationError(
                f"{where} has unknown keys {sorted(unknown)}; allowed: NAME, BACKEND, OPTIONS"
            )
        backend = entry.get("BACKEND")
        if not isinstance(backend, str) or not backend.strip():
            raise FailoverConfigurationError(
                f"{where} needs a BACKEND (a dotted path or an Anymail ESP name)"
            )
        options = entry.get("OPTIONS", {})
        if not isinstance(options, Mapping):
            raise FailoverConfigurationError(f"{where}['OPTIONS'] must be a dict of backend arguments")
        path = expand_backend_path(backend)
        name = entry.get("NAME") or default_name(path)
        if not isinstance(name, str):
            raise FailoverConfigurationError(f"{where}['NAME'] must be a string")
        options = dict(options)
        rate = options.pop("RATE_LIMIT", None)
        rate_limit = RateLimit.parse(rate, where) if rate is not None else None
        return ProviderConfig(name=name, backend_path=path, options=options, rate_limit=rate_limit)
    raise FailoverConfigurationError(
        f"{where} must be a dotted backend path, an Anymail ESP name or a "
        f"{{'NAME', 'BACKEND', 'OPTIONS'}} dict, not {type(entry).__name__}"
    )


def _from_mailer_alias(alias: str, where: str) -> ProviderConfig:
    config = _mailers()[alias]
    path = config.get("BACKEND", "django.core.mail.backends.smtp.EmailBackend")
    if path == conf.BACKEND_PATH:
        raise FailoverConfigurationError(
            f"{where} names MAILERS[{alias!r}], which is the failover backend itself"
        )
    return ProviderConfig(
        name=alias, backend_path=path, options=dict(config.get("OPTIONS", {})), mailer_alias=alias
    )


def load_providers(entries: list | None = None) -> list[ProviderConfig]:
    """Parse and validate a chain (by default FIRST_WORKING_EMAIL_BACKENDS): at least one
    provider, unique names. Backends are often built once per message (`send_mail`), so a chain
    is parsed once per distinct value of the setting (and of MAILERS, which aliases resolve
    against), however that value was set or changed."""
    raw = conf.backends() if entries is None else entries
    mailers = _mailers()
    providers = PARSED_CHAINS.get(raw, mailers)
    if providers is None:
        providers = tuple(_parse_chain(list(raw)))
        PARSED_CHAINS.put(raw, mailers, providers)
    return list(providers)


class ParsedChains:
    """The last few chains parsed, found again by equality with a copy of what was parsed (a
    chain is a short list: comparing it costs less than parsing or hashing it)."""

    def __init__(self, size: int = 8):
        self.size = size
        self.entries: list[tuple[Any, Any, tuple[ProviderConfig, ...]]] = []

    def get(self, raw: Any, mailers: Any) -> tuple[ProviderConfig, ...] | None:
        for parsed_raw, parsed_mailers, providers in self.entries:
            if parsed_raw == raw and parsed_mailers == mailers:
                return providers
        return None

    def put(self, raw: Any, mailers: Any, providers: tuple[ProviderConfig, ...]) -> None:
        try:
            entry = (copy.deepcopy(raw), copy.deepcopy(mailers), providers)
        except Exception:  # an option value that cannot be copied: parse every time
            return
        self.entries = [entry, *self.entries[: self.size - 1]]


PARSED_CHAINS = ParsedChains()


def _parse_chain(entries: list) -> list[ProviderConfig]:
    if not entries:
        raise FailoverConfigurationError(
            "FIRST_WORKING_EMAIL_BACKENDS is empty: list at least one email backend"
        )
    providers = [parse_entry(entry, index) for index, entry in enumerate(entries)]
    seen: set[str] = set()
    for provider in providers:
        if provider.name in seen:
            raise FailoverConfigurationError(
                f"Two providers are named {provider.name!r} in FIRST_WORKING_EMAIL_BACKENDS: give each "
                "entry its own NAME, e.g. {'NAME': 'mailgun-eu', 'BACKEND': 'mailgun', 'OPTIONS': {...}}"
            )
        seen.add(provider.name)
    return providers
