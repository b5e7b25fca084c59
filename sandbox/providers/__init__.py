"""The simulated providers, by name, in the order `make run` chains them."""
from __future__ import annotations

from sandbox.conf import SandboxSettings
from sandbox.providers.base import Provider
from sandbox.providers.mailgun import Mailgun
from sandbox.providers.mandrill import Mandrill
from sandbox.providers.sendgrid import SendGrid

PROVIDER_CLASSES: dict[str, type[Provider]] = {"sendgrid": SendGrid, "mailgun": Mailgun, "mandrill": Mandrill}


def build_providers(settings: SandboxSettings) -> dict[str, Provider]:
    return {
        "sendgrid": SendGrid(settings.api_keys["sendgrid"]),
        "mailgun": Mailgun(settings.api_keys["mailgun"], domains=settings.mailgun_domains),
        "mandrill": Mandrill(settings.api_keys["mandrill"]),
    }
