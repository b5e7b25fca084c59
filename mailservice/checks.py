"""System checks for the gateway's configuration."""
from django.conf import settings
from django.core.checks import Error, Tags, register
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from mailservice.api.auth import api_rate_limit
from mailservice.models.bulk import supports_insert_returning


@register(Tags.security)
def check_webhook_secret(app_configs=None, **kwargs):
    """Outside DEBUG, the tracking webhooks must not accept anyone's posts (so `migrate`,
    `check` and `runserver` stop a deployment that forgot the secret)."""
    if settings.DEBUG:
        return []
    anymail = getattr(settings, "ANYMAIL", None) or {}
    if anymail.get("WEBHOOK_SECRET") or getattr(settings, "ANYMAIL_WEBHOOK_SECRET", None):
        return []
    return [
        Error(
            "The tracking webhooks under /anymail/ are exposed without a shared secret: anyone could "
            "post delivery events and suppress addresses.",
            hint="Set ANYMAIL_WEBHOOK_SECRET=user:password (and configure it in each provider's webhook URL); "
            "see docs/webhooks.md.",
            id="mailservice.E101",
        )
    ]


@register()
def check_api_rate_limit(app_configs=None, **kwargs):
    """A malformed MAILSERVICE_API_RATE_LIMIT stops startup, not the first API call."""
    try:
        api_rate_limit()
    except ImproperlyConfigured as err:
        return [Error(str(err), hint="See docs/security.md.", id="mailservice.E104")]
    return []


@register(Tags.database)
def check_database_features(app_configs=None, databases=None, **kwargs):
    """Webhook events and suppressions are stored with INSERT … ON CONFLICT … RETURNING, which
    SQLite 3.35+ and PostgreSQL have: another database stops `migrate`, not the first webhook."""
    errors = []
    for alias in databases or []:
        if not supports_insert_returning(alias):
            vendor = connections[alias].vendor
            errors.append(
                Error(
                    f"The database {alias!r} ({vendor}) has no INSERT … ON CONFLICT … RETURNING, which recording "
                    "webhook events needs.",
                    hint="Use PostgreSQL, or SQLite 3.35 or newer; see docs/configuration.md.",
                    id="mailservice.E105",
                )
            )
    return errors
