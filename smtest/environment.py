"""Helpers that turn environment variables into Django settings (kept apart so tests can call them)."""

import importlib.util
import ipaddress
import math
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

ANYMAIL_PREFIX = "ANYMAIL_"

SQLITE_OPTIONS = {
    # Web and worker processes write the same file: WAL lets readers go on while one writes,
    # IMMEDIATE takes the write lock at BEGIN (no upgrade deadlock), and the busy timeout
    # makes a waiting writer queue instead of failing with "database is locked".
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}


def anymail_settings(environ: Mapping[str, str]) -> dict[str, str | list[str]]:
    """Every `ANYMAIL_<SETTING>` variable becomes `ANYMAIL["<SETTING>"]`, so any ESP is configured
    alike; `ANYMAIL_WEBHOOK_SECRET` may hold several secrets (`webhook_secrets`)."""
    found: dict[str, str | list[str]] = {}
    for name, value in environ.items():
        if not name.startswith(ANYMAIL_PREFIX) or len(name) == len(ANYMAIL_PREFIX) or value == "":
            continue
        setting = name[len(ANYMAIL_PREFIX) :]
        if setting == "WEBHOOK_SECRET":
            secrets = webhook_secrets(value)
            if secrets:
                found[setting] = secrets[0] if len(secrets) == 1 else secrets
        else:
            found[setting] = value
    return found


def webhook_secrets(value: str) -> list[str]:
    """`ANYMAIL_WEBHOOK_SECRET` as the `user:password` secrets it lists, comma-separated: while a
    secret is rotated, the old and the new one both authenticate (Anymail's WEBHOOK_SECRET takes a
    list; docs/deployment.md, "Rotation without downtime"). One secret stays a string, as before.
    A secret cannot contain a comma: a part without `:` is refused, without showing it."""
    secrets = list(dict.fromkeys(split_list(value)))
    for position, secret in enumerate(secrets, start=1):
        if ":" not in secret:
            raise ImproperlyConfigured(
                f"ANYMAIL_WEBHOOK_SECRET: secret {position} of {len(secrets)} is not user:password (it has "
                "no ':'). Separate several secrets with commas; a secret cannot contain a comma."
            )
    return secrets


def with_sqlite_options(database: dict) -> dict:
    """Add the multi-process SQLite options unless the URL already set them."""
    if database.get("ENGINE", "").endswith("sqlite3"):
        database["OPTIONS"] = {**SQLITE_OPTIONS, **database.get("OPTIONS", {})}
    return database


def split_list(value: str) -> list[str]:
    """Comma-separated list with blanks dropped: `"sendgrid, mailgun,"` → `["sendgrid", "mailgun"]`."""
    return [item.strip() for item in value.split(",") if item.strip()]


def tasks_module() -> str:
    """`django.tasks` on Django 6, the `django_tasks` backport on Django 5.2."""
    return "django.tasks" if importlib.util.find_spec("django.tasks") else "django_tasks"


TASKS_BACKENDS = ("database", "rq", "immediate", "dummy")


def tasks_backend_name(backend: str) -> str:
    """The TASKS_BACKEND name, checked: `database` (default), `rq`, `immediate` or `dummy`."""
    name = backend.strip().lower()
    if name not in TASKS_BACKENDS:
        raise ImproperlyConfigured(f"TASKS_BACKEND is {backend!r}; use one of: {', '.join(TASKS_BACKENDS)}")
    return name


def tasks_settings(backend: str) -> dict:
    """TASKS for a TASKS_BACKEND name: `database` (default), `rq`, `immediate` or `dummy`."""
    backends = {
        "database": "django_tasks_db.DatabaseBackend",
        # RQ on Redis through django-tasks-rq; its queues are RQ_QUEUES (rq_queues below).
        "rq": "django_tasks_rq.RQBackend",
        "immediate": f"{tasks_module()}.backends.immediate.ImmediateBackend",
        "dummy": f"{tasks_module()}.backends.dummy.DummyBackend",
    }
    return {"default": {"BACKEND": backends[tasks_backend_name(backend)]}}


def rq_queues(redis_url: str | None, *, job_timeout: int) -> dict:
    """RQ_QUEUES for django-rq with TASKS_BACKEND=rq: the `default` queue (the one the delivery
    task uses) on REDIS_URL. `job_timeout` is how long RQ lets one task run before it kills it:
    it must exceed the longest delivery round, which stops starting sends once half a message's
    lease is gone (docs/delivery.md, "Leases")."""
    if not redis_url or not redis_url.strip():
        raise ImproperlyConfigured(
            "TASKS_BACKEND=rq needs REDIS_URL, the Redis server of the queue (e.g. redis://127.0.0.1:6379/1)"
        )
    url = redis_url.strip()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(
            f"REDIS_URL must be a redis://, rediss:// or unix:// URL, not {redis_url!r}"
        )
    return {"default": {"URL": url, "DEFAULT_TIMEOUT": job_timeout}}


REDIS_CACHE_BACKEND = "django.core.cache.backends.redis.RedisCache"


def cache_settings(cache: dict, *, socket_timeout: float) -> dict:
    """A CACHE_URL's cache, with Django's own RedisCache for redis:// and rediss:// (never
    django-redis, which django-environ would pick if it were installed) and short socket
    timeouts, so a Redis that stops answering costs a request a second, not a hang. Options the
    URL sets itself (`?socket_timeout=5`) win."""
    location = cache.get("LOCATION")
    first = location[0] if isinstance(location, list) else location or ""
    if cache.get("BACKEND", "").endswith("RedisCache") or str(first).startswith(("redis://", "rediss://")):
        cache["BACKEND"] = REDIS_CACHE_BACKEND
        cache["OPTIONS"] = {
            "socket_connect_timeout": socket_timeout,
            "socket_timeout": socket_timeout,
            **cache.get("OPTIONS", {}),
        }
    return cache


def database_settings(database: dict, *, conn_max_age: int | None, conn_health_checks: bool | None) -> dict:
    """Persistent connections for a database server (PostgreSQL): each gunicorn worker and task
    worker keeps its connection for `conn_max_age` seconds (default 60) instead of connecting per
    request, and checks it before reuse, so a restarted server costs no failed request. SQLite
    keeps Django's defaults unless the variables are set. Values in the URL
    (`?conn_max_age=0`) win."""
    server = not database.get("ENGINE", "").endswith("sqlite3")
    if conn_max_age is None and server:
        conn_max_age = 60
    if conn_health_checks is None and server:
        conn_health_checks = True
    if conn_max_age is not None:
        if conn_max_age < 0:
            raise ImproperlyConfigured(f"DATABASE_CONN_MAX_AGE must be 0 or more seconds, not {conn_max_age}")
        database.setdefault("CONN_MAX_AGE", conn_max_age)
    if conn_health_checks is not None:
        database.setdefault("CONN_HEALTH_CHECKS", conn_health_checks)
    return with_sqlite_options(database)


LOG_FORMATS = ("text", "json")


def log_format(value: str) -> str:
    """LOG_FORMAT checked: `text` (default) or `json` (one JSON object per line)."""
    name = value.strip().lower()
    if name not in LOG_FORMATS:
        raise ImproperlyConfigured(f"LOG_FORMAT is {value!r}; use one of: {', '.join(LOG_FORMATS)}")
    return name


def logging_config(*, formatters: dict, handlers: dict, **sections: Any) -> dict[str, Any]:
    """A logging dictConfig (Django's LOGGING, gunicorn's logconfig_dict) that keeps the loggers
    already there and offers its handlers the `mask_secrets` filter and the `json` formatter
    (smtest/logformat.py) beside `formatters`. The filter masks API keys and every configured
    secret in whatever is logged, whoever logs it (docs/security.md, "Secrets")."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"mask_secrets": {"()": "mailservice.logfilters.MaskSecrets"}},
        "formatters": {**formatters, "json": {"()": "smtest.logformat.JsonFormatter"}},
        "handlers": handlers,
        **sections,
    }


def masked_handler(formatter: str, *, json_lines: bool, **options: str) -> dict[str, Any]:
    """A stream handler of `logging_config`, masked: JSON objects with `json_lines` (LOG_FORMAT=json),
    else lines of `formatter`."""
    return {
        "class": "logging.StreamHandler",
        **options,
        "formatter": "json" if json_lines else formatter,
        "filters": ["mask_secrets"],
    }


# Signs sessions, CSRF tokens and password-reset links: published here, so fit only for DEBUG on.
DEVELOPMENT_SECRET_KEY = "django-insecure-smtest-development-key-change-me"


def secret_key(value: str | None, *, debug: bool) -> str:
    """SECRET_KEY from the environment. With DEBUG on an unset key falls back to the development
    key; with DEBUG off it stops startup naming the variable, since a published key would let
    anyone forge an admin session."""
    if value and value.strip():
        return value
    if debug:
        return DEVELOPMENT_SECRET_KEY
    raise ImproperlyConfigured(
        "SECRET_KEY is not set and DEBUG is off: set SECRET_KEY to a long random value "
        "(python3 -c 'import secrets; print(secrets.token_urlsafe(50))'), or DEBUG=1 for development."
    )


def trusted_proxies(values: list[str]) -> list[str]:
    """TRUSTED_PROXIES checked: addresses or networks (`127.0.0.1`, `::1`, `10.0.0.0/8`) of the
    proxies whose X-Forwarded-For is believed, each normalized; a typo stops startup."""
    networks = []
    for value in values:
        try:
            networks.append(str(ipaddress.ip_network(value.strip(), strict=False)))
        except ValueError:
            raise ImproperlyConfigured(
                f"TRUSTED_PROXIES holds {value!r}, which is not an IP address or network (10.0.0.0/8)"
            ) from None
    return networks


def settings_from_environment(environ_: Mapping[str, str], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The settings among `defaults` that the environment sets (and not to ""), each parsed to
    its default's type. The defaults themselves stay with the app (its `conf.DEFAULTS`), the
    one place that states them; a setting the environment leaves out is simply not set."""
    found: dict[str, Any] = {}
    for name, default in defaults.items():
        raw = environ_.get(name, "")
        if raw.strip() == "":
            continue
        found[name] = _parse(name, raw, default)
    return found


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def _parse(name: str, raw: str, default: Any) -> Any:
    """`raw` as the default's type; a value that is not one stops startup naming the variable
    (a typo such as "ture" must not quietly mean False)."""
    value = raw.strip()
    if isinstance(default, bool):
        if value.lower() in TRUE_WORDS | FALSE_WORDS:
            return value.lower() in TRUE_WORDS
        raise ImproperlyConfigured(f"{name} must be one of 1/0, true/false, yes/no, on/off, not {raw!r}")
    if isinstance(default, (list, tuple)):
        return split_list(value)
    if isinstance(default, (int, float)):
        try:
            number = float(value) if isinstance(default, float) else int(value)
        except ValueError:
            number = None
        if number is None or not math.isfinite(number):
            raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}")
        return number
    return value
