"""A logging filter that keeps secrets out of every record a handler writes (docs/security.md,
"Secrets"). The gateway never logs a secret itself; this catches what others log:

- API keys by their shape (`smt_…`) and credential-like query parameters, such as the
  development server's request line of a refused `?api_key=smt_…` URL;
- every secret the settings configure, by its value, whatever its characters, also
  percent-encoded or backslash-escaped: Anymail quotes a webhook URL with its basic-auth secret
  in it, a driver's error a connection URL with its password.

Imported by the LOGGING configuration before the app registry is ready: besides Django it
imports only readers of settings that need no registry (failover.providers, mailservice.conf).
The configured secrets are gathered once, at the first record, and again after a setting
changes (Django's `setting_changed`)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.core.signals import setting_changed

from failover.providers import SECRET_OPTION_NAMES, anymail_secrets, load_providers
from mailservice import conf

# KEY_PREFIX of services/keys.py, then the random part; the first 8 characters of that part are
# the key's displayed prefix (not secret) and are kept, so a masked key can still be told apart.
API_KEY = re.compile(r"(smt_[A-Za-z0-9_-]{8})[A-Za-z0-9_-]+", re.IGNORECASE)
MASK = r"\1…"
# A query parameter that looks like a credential (the API refuses keys in URLs: api/auth.py):
# its whole value goes, however it is spelt or percent-encoded.
KEY_IN_QUERY = re.compile(r"([?&](?:key|api_key|apikey|token|access_token|auth)=)[^&\s\"']+", re.IGNORECASE)

SECRET_MASK = "***"
# Shorter values are left alone: masking every "abc" would shred the lines, and a secret that
# short protects nothing anyway.
MIN_SECRET_LENGTH = 4
# Anymail settings holding `user:password` pairs (several, comma-separated or listed, while one
# is being rotated); their password alone is masked too.
BASIC_AUTH_SETTINGS = frozenset({"WEBHOOK_SECRET"})
# Characters a URL or an escaped string may show as they are: every other one may also appear
# percent-encoded (any case), a space as "+", a quote, slash or backslash behind a backslash.
UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
ESCAPABLE = frozenset("\"'\\/")
# What every LogRecord carries: anything else on a record came from `extra=`.
RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def mask_api_keys(text: str) -> str:
    return API_KEY.sub(MASK, KEY_IN_QUERY.sub(r"\1***", text))


def mask_secrets(text: str) -> str:
    """`text` with every configured secret (in any of its spellings) and every API key masked."""
    pattern = _secrets.pattern()
    if pattern is not None:
        text = pattern.sub(SECRET_MASK, text)
    return mask_api_keys(text)


def configured_secrets() -> set[str]:
    """Every secret value the settings hold: SECRET_KEY (and its fallbacks), the Anymail
    credentials (the failover chain's OPTIONS included), the passwords of the database, cache
    and queue URLs, EMAIL_HOST_PASSWORD and MAILSERVICE_METRICS_TOKEN."""
    found = set(anymail_secrets())
    found.update(_texts(getattr(settings, "SECRET_KEY", "")))
    found.update(_texts(getattr(settings, "SECRET_KEY_FALLBACKS", ())))
    found.update(_texts(getattr(settings, "EMAIL_HOST_PASSWORD", "")))
    found.update(_texts(conf.metrics_token()))
    found.update(_anymail_credentials())
    found.update(_connection_passwords())
    try:
        providers = load_providers()
    except Exception:  # a broken chain: its own errors say so; the rest is still masked
        providers = []
    for provider in providers:
        found.update(provider.secrets())
    return {secret for secret in found if len(secret) >= MIN_SECRET_LENGTH}


def _texts(value: Any) -> Iterator[str]:
    """The non-empty strings of a setting's value (a string, or a list or tuple of them)."""
    if isinstance(value, str):
        if value.strip():
            yield value
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _texts(item)


def _anymail_credentials() -> Iterator[str]:
    """Anymail's secrets in shapes anymail_secrets() leaves out: lists, a comma-separated
    rotation, the password of a `user:password` pair, and top-level ANYMAIL_<SETTING> settings
    (which Anymail reads too)."""
    anymail = getattr(settings, "ANYMAIL", None) or {}
    items = [(str(name).upper(), value) for name, value in anymail.items()]
    items += [
        (name[len("ANYMAIL_") :], getattr(settings, name))
        for name in dir(settings)
        if name.startswith("ANYMAIL_")
    ]
    for name, value in items:
        if not any(part in name.lower() for part in SECRET_OPTION_NAMES):
            continue
        for text in _texts(value):
            yield text
            if name in BASIC_AUTH_SETTINGS:
                for pair in text.split(","):
                    yield pair.strip()
                    yield pair.partition(":")[2]


def _connection_passwords() -> Iterator[str]:
    """The passwords of DATABASES, CACHES (LOCATION URLs, OPTIONS) and RQ_QUEUES (URL, PASSWORD)."""
    for database in (getattr(settings, "DATABASES", None) or {}).values():
        yield from _texts(database.get("PASSWORD"))
    for cache in (getattr(settings, "CACHES", None) or {}).values():
        for location in _texts(cache.get("LOCATION")):
            yield from _url_password(location)
        options = cache.get("OPTIONS") or {}
        yield from _texts(options.get("password") or options.get("PASSWORD"))
    for queue in (getattr(settings, "RQ_QUEUES", None) or {}).values():
        yield from _url_password(queue.get("URL") or "")
        yield from _texts(queue.get("PASSWORD"))


def _url_password(url: str) -> Iterator[str]:
    try:
        password = urlsplit(url).password
    except ValueError:
        return
    if password:
        yield password
        yield unquote(password)


def secret_pattern(secrets: Iterable[str]) -> re.Pattern | None:
    """One precompiled pattern matching each secret as it is and in every spelling a log line
    may give it (percent-encoded in whole or in part, in upper or lower case hex; a space as
    "+"; a quote, slash or backslash escaped); longest first, so a secret that holds another is
    masked whole."""
    alternatives = [_spellings(secret) for secret in sorted(set(secrets), key=lambda s: (-len(s), s))]
    return re.compile("|".join(alternatives)) if alternatives else None


def _spellings(secret: str) -> str:
    parts = []
    for char in secret:
        if char in UNRESERVED:
            parts.append(re.escape(char))
            continue
        options = [
            re.escape(char),
            "".join(f"%[{b[0]}{b[0].lower()}][{b[1]}{b[1].lower()}]" for b in _hex(char)),
        ]
        if char == " ":
            options.append(r"\+")
        if char in ESCAPABLE:
            options.append(re.escape("\\" + char))
        if not char.isascii() or not char.isprintable():
            options.append(
                re.escape(f"\\u{ord(char):04x}") if ord(char) <= 0xFFFF else re.escape(ascii(char)[1:-1])
            )
        parts.append(f"(?:{'|'.join(options)})")
    return "".join(parts)


def _hex(char: str) -> list[str]:
    return [f"{byte:02X}" for byte in char.encode("utf-8", "surrogatepass")]


class _Secrets:
    """The compiled pattern of the configured secrets, gathered when a record first needs it
    (settings are ready by then) and forgotten when a setting changes."""

    UNKNOWN: Any = object()

    def __init__(self) -> None:
        self._pattern: Any = self.UNKNOWN
        self._lock = threading.Lock()
        self._local = threading.local()

    def pattern(self) -> re.Pattern | None:
        pattern = self._pattern
        if pattern is not self.UNKNOWN:
            return pattern
        # Before the settings are loaded (gunicorn's master process) only API keys are masked;
        # gathering may log (a chain that fails to parse): that record is not held up.
        if not settings.configured or getattr(self._local, "gathering", False):
            return None
        self._local.gathering = True
        try:
            with self._lock:
                if self._pattern is self.UNKNOWN:
                    try:
                        self._pattern = secret_pattern(configured_secrets())
                    except Exception:  # settings that cannot be read: their own errors say so
                        self._pattern = None
                return self._pattern
        finally:
            self._local.gathering = False

    def forget(self, **kwargs: Any) -> None:
        self._pattern = self.UNKNOWN


_secrets = _Secrets()
setting_changed.connect(_secrets.forget, dispatch_uid="mailservice.logfilters.secrets", weak=False)


def masked_value(value: Any) -> Any:
    """An `extra=` value with its secrets masked: the value itself when nothing changed."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, (list, tuple)):
        items = [masked_value(item) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        masked = {key: masked_value(item) for key, item in value.items()}
        return masked if any(masked[key] is not item for key, item in value.items()) else value
    return value


class MaskSecrets(logging.Filter):
    """Rewrites the record with every secret and API key masked: its message (arguments
    included), traceback, stack and `extra=` values. The record is shared by every handler, so
    it is masked for all of them, whatever their formatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # Formatters fill exc_text in only after the filters ran: fill it in here, masked,
            # and they use it as it is.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in RESERVED and not name.startswith("_"):
                masked_extra = masked_value(value)
                if masked_extra is not value:
                    setattr(record, name, masked_extra)
        return True
