"""`manage.py revoke_api_key NAME_OR_PREFIX`."""

from django.core.management.base import BaseCommand, CommandError

from mailservice.exceptions import ApiKeyError
from mailservice.services.keys import api_key_revoke


class Command(BaseCommand):
    help = "Revoke the active API keys with this name or prefix."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name_or_prefix")

    def handle(self, *args, name_or_prefix: str, **options) -> None:
        try:
            count = api_key_revoke(name_or_prefix=name_or_prefix)
        except ApiKeyError as err:
            raise CommandError(str(err)) from err
        self.stdout.write(f"Revoked {count} key(s).")
