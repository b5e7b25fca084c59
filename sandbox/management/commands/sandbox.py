"""`manage.py sandbox`: `python -m sandbox` with the project's ANYMAIL settings as defaults, so
the sandbox accepts the keys the service sends and signs webhooks with the secrets it checks."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sandbox.cli import add_serve_arguments, configure_logging, serve, settings_from_options
from sandbox.exceptions import SandboxError
from sandbox.providers import PROVIDERS


def anymail_fallbacks() -> dict[str, Any]:
    """The sandbox settings the project's ANYMAIL dict implies (missing ones keep the defaults)."""
    anymail = getattr(settings, "ANYMAIL", None) or {}
    secret = anymail.get("WEBHOOK_SECRET")
    if isinstance(secret, (list, tuple)):
        secret = secret[0] if secret else None
    keys: dict[str, str] = {}
    webhook_keys: dict[str, str] = {}
    domains: dict[str, tuple[str, ...]] = {}
    for spec in PROVIDERS:
        api_key = anymail.get(spec.api_key_setting)
        if api_key:
            keys[spec.name] = api_key
        if spec.webhook_key:
            # As Anymail does, a provider may check its webhooks with the API key when no
            # webhook key is set (Mailgun).
            fallback = api_key if spec.webhook_key.api_key_fallback else None
            webhook_key = anymail.get(spec.webhook_key.setting) or fallback
            if webhook_key:
                webhook_keys[spec.name] = webhook_key
        if spec.sender_domain_setting and anymail.get(spec.sender_domain_setting):
            domains[spec.name] = (anymail[spec.sender_domain_setting],)  # then the only domain that exists
    return {
        "api_keys": keys,
        "webhook_keys": webhook_keys,
        "sender_domains": domains,
        "webhook_secret": secret,
    }


class Command(BaseCommand):
    help = "Run the local SendGrid/Mailgun/Mandrill sandbox (docs/sandbox.md); Ctrl-C stops it."
    # The sandbox must start even where the sandbox.E001 check would refuse the settings.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser) -> None:
        add_serve_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        configure_logging(options["log_level"])
        try:
            sandbox_settings, faults = settings_from_options(options, os.environ, **anymail_fallbacks())
            serve(sandbox_settings, faults, out=self.stdout)
        except SandboxError as err:
            raise CommandError(str(err)) from err
        except OSError as err:
            raise CommandError(f"cannot listen: {err}") from err
