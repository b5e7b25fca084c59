from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """Installed for `manage.py sandbox` and for the check that keeps it out of production."""

    name = "sandbox"
    verbose_name = "Provider sandbox"

    def ready(self) -> None:
        from sandbox import checks  # noqa: F401  (registers the system checks)
