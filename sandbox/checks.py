"""System check: the sandbox accepts any message and is never a real provider, so production
settings (DEBUG off) that point an ESP at it are an error, reported before the first lost email."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.checks import Error

from sandbox.conf import is_sandbox_url


def sandbox_urls() -> Iterator[tuple[str, str]]:
    """(where, url) for every provider API URL in the settings that points at a sandbox."""
    for key, value in (getattr(settings, "ANYMAIL", None) or {}).items():
        if str(key).upper().endswith("API_URL") and is_sandbox_url(value):
            yield f"ANYMAIL[{key!r}]", str(value)
    for index, entry in enumerate(getattr(settings, "FIRST_WORKING_EMAIL_BACKENDS", None) or []):
        url = _option_url(entry)
        if url:
            yield f"FIRST_WORKING_EMAIL_BACKENDS[{index}]['OPTIONS']['api_url']", url
    for alias, entry in (getattr(settings, "MAILERS", None) or {}).items():
        url = _option_url(entry)
        if url:
            yield f"MAILERS[{alias!r}]['OPTIONS']['api_url']", url


def _option_url(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return None
    url = (entry.get("OPTIONS") or {}).get("api_url")
    return str(url) if url and is_sandbox_url(url) else None


def check_sandbox_not_in_production(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Registered (as a security check) by the app's ready()."""
    if settings.DEBUG:
        return []
    return [
        Error(
            f"{where} points at the local provider sandbox ({url}) while DEBUG is off.",
            hint="The sandbox is for development and tests only: set the real provider's API URL "
            "(or remove the setting to use Anymail's default), or set DEBUG=1 for local development.",
            id="sandbox.E001",
        )
        for where, url in sandbox_urls()
    ]
