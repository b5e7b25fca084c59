"""The sandbox's providers: the one table of what differs between them outside their wire formats.

Everything else (settings, CLI flags, SANDBOX_* variables, the Anymail settings printed and given
to `make run`, the production check, the control API) reads this table, so a fourth provider is
one more entry here plus its class in this package. The order is `make run`'s failover chain and
the order of the default ports (control port + 1, + 2, + 3).
"""

from __future__ import annotations

from sandbox.exceptions import UnknownProviderError
from sandbox.providers.base import ProviderSpec, WebhookKey
from sandbox.providers.mailgun import Mailgun
from sandbox.providers.mandrill import Mandrill
from sandbox.providers.sendgrid import DEV_VERIFICATION_KEY as SENDGRID_DEV_VERIFICATION_KEY
from sandbox.providers.sendgrid import SendGrid

PROVIDERS: tuple[ProviderSpec, ...] = (
    ProviderSpec(
        "sendgrid",
        SendGrid,
        api_prefix="/sendgrid/v3/",
        tracking_path="/anymail/sendgrid/tracking/",
        default_api_key="SG.sandbox-sendgrid-key",
        api_key_setting="SENDGRID_API_KEY",
        # Signed with the development key pair (sandbox/providers/sendgrid.py): the service
        # verifies with its public half.
        webhook_verification=(("SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY", SENDGRID_DEV_VERIFICATION_KEY),),
    ),
    ProviderSpec(
        "mailgun",
        Mailgun,
        api_prefix="/mailgun/v3",
        tracking_path="/anymail/mailgun/tracking/",
        default_api_key="sandbox-mailgun-key",
        api_key_setting="MAILGUN_API_KEY",
        webhook_key=WebhookKey(
            "MAILGUN_WEBHOOK_SIGNING_KEY", "sandbox-mailgun-signing-key", api_key_fallback=True
        ),
        sender_domain_setting="MAILGUN_SENDER_DOMAIN",
    ),
    ProviderSpec(
        "mandrill",
        Mandrill,
        api_prefix="/mandrill/api/1.0",
        tracking_path="/anymail/mandrill/",
        default_api_key="sandbox-mandrill-key",
        api_key_setting="MANDRILL_API_KEY",
        webhook_key=WebhookKey("MANDRILL_WEBHOOK_KEY", "sandbox-mandrill-webhook-key"),
        conflicting_settings=("MANDRILL_WEBHOOK_URL",),  # the sandbox signs the URL it posts to
    ),
)
PROVIDER_NAMES: tuple[str, ...] = tuple(spec.name for spec in PROVIDERS)


def provider_spec(name: str) -> ProviderSpec:
    """The table entry of `name`; UnknownProviderError (a 404 on the control API) otherwise."""
    for spec in PROVIDERS:
        if spec.name == name:
            return spec
    raise UnknownProviderError(name, PROVIDER_NAMES)
