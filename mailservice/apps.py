from django.apps import AppConfig


class MailserviceConfig(AppConfig):
    name = "mailservice"
    verbose_name = "Mail gateway"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The tracking-signal receiver and the system checks register themselves on import
        # (`checks`, `webhooks`), which must wait for the app registry: the one kind of
        # function-level import allowed besides optional dependencies (docs/architecture.md,
        # "Import rules"). Every app's admin has registered by now (the admin app comes first in
        # INSTALLED_APPS and discovers them in its ready()): their change lists get the gateway's
        # refusals.
        from django.contrib import admin

        from mailservice import checks, webhooks  # noqa: F401
        from mailservice.admin import guard_changelists

        guard_changelists(admin.site)
