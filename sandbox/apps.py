from django.apps import AppConfig
from django.core.checks import Tags, register

from sandbox.checks import check_sandbox_not_in_production


class SandboxConfig(AppConfig):
    """Installed for `manage.py sandbox` and `manage.py rundev`, and for the check that keeps the
    sandbox out of production."""

    name = "sandbox"
    verbose_name = "Provider sandbox"

    def ready(self) -> None:
        register(check_sandbox_not_in_production, Tags.security)
