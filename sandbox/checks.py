"""System checks: the sandbox accepts any message and is never a real provider, and its webhook
secrets are published, so production settings (DEBUG off) that point an ESP at it or take one of
its secrets are an error, reported before the first lost email or forged webhook.

A production-like trial (DEBUG off, the sandbox as providers) says so with
SANDBOX_PRODUCTION_TRIAL: then these errors stop no command, and `check --deploy` still reports
each of them, since such settings are never a deployment (docs/sandbox.md, "Never in production")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from sandbox.conf import DEFAULT_WEBHOOK_SECRET, is_sandbox_url
from sandbox.providers import PROVIDERS

TRIAL_SETTING = "SANDBOX_PRODUCTION_TRIAL"
# The sandbox's webhook credentials, by Anymail setting: published development values, no secrets.
PUBLISHED_SECRETS: dict[str, str] = {
    **{setting: value for spec in PROVIDERS for setting, value in spec.webhook_verification},
    **{spec.webhook_key.setting: spec.webhook_key.default for spec in PROVIDERS if spec.webhook_key},
    "WEBHOOK_SECRET": DEFAULT_WEBHOOK_SECRET,
}


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


def published_secrets() -> Iterator[str]:
    """Each Anymail webhook setting whose value (or, for a list of secrets in rotation, one of
    its values) is the sandbox's published one: with it anyone can sign or authenticate posts."""
    anymail = getattr(settings, "ANYMAIL", None) or {}
    for setting, published in PUBLISHED_SECRETS.items():
        configured = anymail.get(setting, getattr(settings, f"ANYMAIL_{setting}", None))
        values = configured.split(",") if isinstance(configured, str) else configured or []
        if any(_compact(value) == _compact(published) for value in values if isinstance(value, str)):
            yield f"ANYMAIL_{setting}"


def _compact(value: str) -> str:
    """Without whitespace: a base64 key wrapped over lines is the same key."""
    return "".join(value.split())


def production_trial() -> bool:
    return bool(getattr(settings, TRIAL_SETTING, False))


def sandbox_errors(*, trial: bool) -> list[Error]:
    """An error per setting that reaches the sandbox or holds one of its secrets."""
    note = (
        f" {TRIAL_SETTING} lets commands run for a production-like trial; a deployment must not have it."
        if trial
        else ""
    )
    return [
        *(
            Error(
                f"{where} points at the local provider sandbox ({url}) while DEBUG is off.",
                hint="The sandbox is for development and tests only: set the real provider's API URL "
                "(or remove the setting to use Anymail's default), or set DEBUG=1 for local development."
                + note,
                id="sandbox.E001",
            )
            for where, url in sandbox_urls()
        ),
        *(
            Error(
                f"{where} is the provider sandbox's published development value while DEBUG is off: anyone "
                "can sign or authenticate tracking webhooks with it.",
                hint="Set the value the provider shows for your account (docs/webhooks.md), or set DEBUG=1 "
                "for local development." + note,
                id="sandbox.E002",
            )
            for where in published_secrets()
        ),
    ]


def check_sandbox_not_in_production(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every command (registered as a security check by the app's ready()): stops while DEBUG is
    off, unless a production trial is declared."""
    if settings.DEBUG or production_trial():
        return []
    return sandbox_errors(trial=False)


def check_sandbox_trial(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """`check --deploy` (a deployment check): a declared trial is still refused, and a switch
    left on once nothing uses the sandbox is pointed out."""
    if settings.DEBUG or not production_trial():
        return []
    return sandbox_errors(trial=True) or [
        Warning(
            f"{TRIAL_SETTING} is set but no setting points at the provider sandbox or uses its secrets.",
            hint=f"Remove {TRIAL_SETTING}, so that settings reaching the sandbox stop every command again.",
            id="sandbox.W001",
        )
    ]
