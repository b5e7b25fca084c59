"""One import place for what moved between Django 5.2 and 6.x: the Tasks API (`django.tasks`
on 6.x, the `django_tasks` backport on 5.2) and the default mail connection (`mailers` on 6.1)."""

from django.core import mail

try:
    from django.tasks import task, task_backends
except ImportError:  # Django 5.2: the backport
    from django_tasks import task, task_backends  # type: ignore[no-redef]

__all__ = ["mail_connection", "task", "task_backends"]


def mail_connection():
    """The project's default email backend instance (the failover backend in this project)."""
    mailers = getattr(mail, "mailers", None)  # Django 6.1; get_connection() is deprecated there
    if mailers is not None:
        return mailers.default
    return mail.get_connection()
