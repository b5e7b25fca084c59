from django.apps import AppConfig


class MailserviceConfig(AppConfig):
    name = "mailservice"
    verbose_name = "Mail gateway"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The tracking-signal receiver and the system checks register themselves on import.
        from mailservice import checks, webhooks  # noqa: F401
