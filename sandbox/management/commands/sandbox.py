"""`manage.py sandbox`: `python -m sandbox` with the project's ANYMAIL settings as defaults, so
the sandbox accepts the keys the service sends and signs webhooks with the secrets it checks."""
from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sandbox.cli import add_serve_arguments, configure_logging, serve, settings_from_options
from sandbox.conf import PROVIDERS
from sandbox.exceptions import SandboxError


def anymail_fallbacks() -> dict[str, Any]:
    """The sandbox settings the project's ANYMAIL dict implies (missing ones keep the defaults)."""
    anymail = getattr(settings, "ANYMAIL", None) or {}
    keys = {name: anymail.get(f"{name.upper()}_API_KEY") for name in PROVIDERS}
    secret = anymail.get("WEBHOOK_SECRET")
    if isinstance(secret, (list, tuple)):
        secret = secret[0] if secret else None
    domain = anymail.get("MAILGUN_SENDER_DOMAIN")
    return {
        "api_keys": {name: key for name, key in keys.items() if key},
        "webhook_secret": secret,
        # Anymail itself falls back to the API key when no signing key is set.
        "mailgun_webhook_signing_key": anymail.get("MAILGUN_WEBHOOK_SIGNING_KEY") or keys["mailgun"],
        "mandrill_webhook_key": anymail.get("MANDRILL_WEBHOOK_KEY"),
        "mailgun_domains": (domain,) if domain else None,
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
