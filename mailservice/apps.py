from django.apps import AppConfig


class MailserviceConfig(AppConfig):
    name = "mailservice"
    verbose_name = "Mail gateway"
    default_auto_field = "django.db.models.BigAutoField"
