"""System checks for the gateway's configuration."""

from anymail.utils import get_anymail_setting
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from failover.providers import normalize_name
from mailservice import conf
from mailservice.anymail_adapter import error_reason, tracking_views, view_setup_error
from mailservice.api.auth import api_rate_limit
from mailservice.models.bulk import supports_insert_returning
from mailservice.webhook_providers import enabled_providers


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
            hint="Set ANYMAIL_WEBHOOK_SECRET=user:password (and configure it in each provider's webhook "
            "URL); see docs/webhooks.md.",
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
                    f"The database {alias!r} ({vendor}) has no INSERT … ON CONFLICT … RETURNING, which "
                    "recording webhook events needs.",
                    hint="Use PostgreSQL, or SQLite 3.35 or newer; see docs/configuration.md.",
                    id="mailservice.E105",
                )
            )
    return errors


def _webhook_enabled(esp: str) -> bool:
    """Whether the tracking endpoint of `esp` answers (docs/webhooks.md, "Which endpoints answer")."""
    try:
        return esp in enabled_providers()
    except Exception:  # the failover app's own checks report a broken chain
        return False


def _anymail_setting(name: str, esp_name: str) -> str:
    """An ESP's webhook setting, looked up as Anymail's view looks it up (ANYMAIL["<ESP>_<NAME>"],
    ANYMAIL_<ESP>_<NAME>, or the bare <ESP>_<NAME>)."""
    value = get_anymail_setting(name, esp_name=esp_name, default=None, allow_bare=True)
    return str(value or "").strip()


@register(Tags.security)
def check_mandrill_webhook_key(app_configs=None, **kwargs):
    """Mandrill's endpoint cannot check a post without the webhook key, so Anymail answers every
    post 500: outside DEBUG that stops `migrate` and `check`, like a missing webhook secret."""
    if settings.DEBUG or not _webhook_enabled("mandrill") or _anymail_setting("webhook_key", "Mandrill"):
        return []
    return [
        Error(
            "Mandrill's tracking webhook is enabled (FIRST_WORKING_EMAIL_BACKENDS or "
            "MAILSERVICE_WEBHOOK_PROVIDERS) without ANYMAIL_MANDRILL_WEBHOOK_KEY: every post to "
            "/anymail/mandrill/ would be answered 500.",
            hint="Set ANYMAIL_MANDRILL_WEBHOOK_KEY to the key Mandrill shows for the webhook "
            "(Settings → Webhooks), and ANYMAIL_MANDRILL_WEBHOOK_URL if a proxy changes the URL Mandrill "
            "signs; see docs/webhooks.md.",
            id="mailservice.E106",
        )
    ]


@register(Tags.security, deploy=True)
def check_sendgrid_verification_key(app_configs=None, **kwargs):
    """Without the verification key SendGrid's posts are checked by the shared basic-auth secret
    alone, not by SendGrid's signature: worth a warning under `check --deploy`, not a refusal."""
    if not _webhook_enabled("sendgrid") or _anymail_setting("tracking_webhook_verification_key", "SendGrid"):
        return []
    return [
        Warning(
            "SendGrid's tracking webhook is enabled without "
            "ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY: its posts are checked by the shared "
            "secret only, not by SendGrid's signature.",
            hint="Turn on SendGrid's signed Event Webhook and set the public key it shows; see "
            'docs/webhooks.md, "SendGrid\'s signed Event Webhook".',
            id="mailservice.W101",
        )
    ]


@register()
def check_webhook_providers(app_configs=None, **kwargs) -> list[Error]:
    """Each enabled tracking webhook can start (its packages and settings are there), and
    MAILSERVICE_WEBHOOK_PROVIDERS names only ESPs that have one."""
    try:
        enabled = enabled_providers()
    except Exception:  # the failover app's own checks report a broken chain
        return []
    views = tracking_views()
    errors = [
        Error(
            f"MAILSERVICE_WEBHOOK_PROVIDERS names {name!r}, which has no Anymail tracking webhook.",
            hint=f"Use the ESP names of the URLs under /anymail/: {', '.join(sorted(views))}.",
            id="mailservice.E103",
        )
        for name in conf.webhook_providers()
        if normalize_name(name) not in views
    ]
    for esp in sorted(enabled & set(views)):
        err = view_setup_error(views[esp])
        if err is not None:
            errors.append(
                Error(
                    f"The {esp} tracking webhook is enabled but cannot work: {error_reason(err)}. "
                    "Every post to it would be answered 500.",
                    hint="Install what it needs (amazon_ses: boto3, "
                    "`pip install 'django-anymail[amazon-ses]'`) and set its ANYMAIL_* webhook settings, or "
                    "remove it from FIRST_WORKING_EMAIL_BACKENDS and MAILSERVICE_WEBHOOK_PROVIDERS "
                    "(docs/webhooks.md).",
                    id="mailservice.E102",
                )
            )
    return errors
