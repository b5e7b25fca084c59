"""Helpers that turn environment variables into Django settings (kept apart so tests can call them)."""
import importlib.util
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


def anymail_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """Every `ANYMAIL_<SETTING>` variable becomes `ANYMAIL["<SETTING>"]`, so any ESP is configured alike."""
    return {
        name[len(ANYMAIL_PREFIX):]: value
        for name, value in environ.items()
        if name.startswith(ANYMAIL_PREFIX) and len(name) > len(ANYMAIL_PREFIX) and value != ""
    }


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


def tasks_settings(backend: str) -> dict:
    """TASKS for a TASKS_BACKEND name: `database` (default), `immediate` or `dummy`."""
    backends = {
        "database": "django_tasks_db.DatabaseBackend",
        "immediate": f"{tasks_module()}.backends.immediate.ImmediateBackend",
        "dummy": f"{tasks_module()}.backends.dummy.DummyBackend",
    }
    name = backend.strip().lower()
    if name not in backends:
        raise ImproperlyConfigured(f"TASKS_BACKEND is {backend!r}; use one of: {', '.join(backends)}")
    return {"default": {"BACKEND": backends[name]}}


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
