from django.apps import AppConfig


class FailoverConfig(AppConfig):
    name = "failover"
    verbose_name = "Failover email backend"

    def ready(self) -> None:
        from failover import checks  # noqa: F401  (registers the system checks)
