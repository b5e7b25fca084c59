"""System checks for the gateway's configuration."""
from django.conf import settings
from django.core.checks import Error, Tags, register
from django.core.exceptions import ImproperlyConfigured

from mailservice.api.auth import api_rate_limit


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
