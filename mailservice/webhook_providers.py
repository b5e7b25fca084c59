"""Which ESPs' tracking webhooks answer (docs/webhooks.md, "Which endpoints answer"): those of the
providers in FIRST_WORKING_EMAIL_BACKENDS, by each entry's backend, and those listed in
MAILSERVICE_WEBHOOK_PROVIDERS. Read per request and per check, so that `override_settings` or a
reload applies at once."""

from __future__ import annotations

from failover.providers import load_providers, normalize_name
from mailservice import conf
from mailservice.anymail_adapter import backend_esp_name


def enabled_providers() -> frozenset[str]:
    """The ESPs (as `normalize_name` spells them) whose tracking endpoints answer: each chain
    entry's backend's ESP (a "mailgun-eu" entry with the mailgun backend enables mailgun), plus
    MAILSERVICE_WEBHOOK_PROVIDERS. Raises FailoverConfigurationError for a broken chain."""
    chain = [backend_esp_name(provider.backend_path) for provider in load_providers()]
    return frozenset(normalize_name(name) for name in [*conf.webhook_providers(), *chain] if name)
