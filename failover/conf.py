"""The one place that reads the failover settings, each with its documented default.

Values are read when a backend is built, never at import, so `override_settings` works.
"""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "FIRST_WORKING_EMAIL_BACKENDS": [],
    "FIRST_WORKING_EMAIL_CACHE_TIMEOUT": 3600,
    "FIRST_WORKING_EMAIL_CACHE": "default",
    # A dead provider should cost seconds, not Anymail's default 30 s.
    "FIRST_WORKING_EMAIL_CONNECT_TIMEOUT": 3.05,
    "FIRST_WORKING_EMAIL_READ_TIMEOUT": 15.0,
    "FIRST_WORKING_EMAIL_FAILOVER_ON_AMBIGUOUS": True,
    # While a higher-priority provider is failing, one send per this many seconds (across every
    # process sharing the cache) tries it first; each failed probe doubles the wait, up to
    # FIRST_WORKING_EMAIL_CACHE_TIMEOUT.
    "FIRST_WORKING_EMAIL_PROBE_INTERVAL": 60.0,
}

BACKEND_PATH = "failover.backends.FirstWorkingEmailBackend"


def get_setting(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])


def backends() -> list:
    return get_setting("FIRST_WORKING_EMAIL_BACKENDS") or []


def cache_timeout() -> float:
    return float(get_setting("FIRST_WORKING_EMAIL_CACHE_TIMEOUT"))


def cache_alias() -> str:
    return get_setting("FIRST_WORKING_EMAIL_CACHE")


def timeouts() -> tuple[float, float]:
    """(connect, read) seconds, the default for every provider that takes a timeout."""
    return (
        float(get_setting("FIRST_WORKING_EMAIL_CONNECT_TIMEOUT")),
        float(get_setting("FIRST_WORKING_EMAIL_READ_TIMEOUT")),
    )


def probe_interval() -> float:
    return max(1.0, float(get_setting("FIRST_WORKING_EMAIL_PROBE_INTERVAL")))


def failover_on_ambiguous() -> bool:
    return bool(get_setting("FIRST_WORKING_EMAIL_FAILOVER_ON_AMBIGUOUS"))


def is_used_by_project() -> bool:
    """True when the project sends through this backend (EMAIL_BACKEND or a MAILERS entry)."""
    if hasattr(settings, "MAILERS"):  # Django 6.1+: MAILERS replaces EMAIL_BACKEND
        return any(cfg.get("BACKEND") == BACKEND_PATH for cfg in (settings.MAILERS or {}).values())
    return getattr(settings, "EMAIL_BACKEND", "") == BACKEND_PATH
