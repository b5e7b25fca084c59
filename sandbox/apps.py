from django.apps import AppConfig
from django.core.checks import Tags, register

from sandbox.checks import check_sandbox_not_in_production, check_sandbox_trial


class SandboxConfig(AppConfig):
    """Installed for `manage.py sandbox` and `manage.py rundev`, and for the checks that keep the
    sandbox out of production."""

    name = "sandbox"
    verbose_name = "Provider sandbox"

    def ready(self) -> None:
        register(check_sandbox_not_in_production, Tags.security)
        register(check_sandbox_trial, Tags.security, deploy=True)
