"""`manage.py create_api_key NAME [--rotate]`: print a new API key once; only its hash is kept."""
from django.core.management.base import BaseCommand, CommandError

from mailservice.exceptions import ApiKeyError
from mailservice.services.keys import api_key_create


class Command(BaseCommand):
    help = "Create an API key and print it once (only a hash is stored)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="A name that says who uses the key.")
        parser.add_argument(
            "--rotate", action="store_true", help="Revoke the active keys of this name first (idempotent setup)."
        )
        parser.add_argument("--quiet-key", action="store_true", help="Print the key alone, for scripts.")

    def handle(self, *args, name: str, rotate: bool, quiet_key: bool, **options) -> None:
        try:
            api_key, raw_key = api_key_create(name=name, rotate=rotate)
        except ApiKeyError as err:
            raise CommandError(str(err)) from err
        if quiet_key:
            self.stdout.write(raw_key)
            return
        self.stdout.write(f"API key {api_key.name!r} (prefix {api_key.prefix}); shown only now:")
        self.stdout.write(raw_key)
