"""`manage.py create_api_key NAME [--scopes send,read] [--from-domains example.com,...] [--rotate]`:
print a new API key once; only its hash is kept (docs/api.md, "Authentication")."""
from django.core.management.base import BaseCommand, CommandError

from mailservice.exceptions import ApiKeyError
from mailservice.models.keys import DEFAULT_SCOPES, SCOPES
from mailservice.services.keys import api_key_create


class Command(BaseCommand):
    help = "Create an API key and print it once (only a hash is stored)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="A name that says who uses the key.")
        parser.add_argument(
            "--scopes",
            default=",".join(DEFAULT_SCOPES),
            help=f"Comma-separated, among {', '.join(SCOPES)} (default: {','.join(DEFAULT_SCOPES)}). "
            "send: post messages; read: read the messages this key sent; manage: every message, "
            "the suppression list and the providers.",
        )
        parser.add_argument(
            "--from-domains",
            default="",
            help="Comma-separated sender domains this key may use (exactly; a subdomain must be "
            "listed itself). Default: any sender.",
        )
        parser.add_argument(
            "--rotate", action="store_true", help="Revoke the active keys of this name first (idempotent setup)."
        )
        parser.add_argument("--quiet-key", action="store_true", help="Print the key alone, for scripts.")

    def handle(
        self, *args, name: str, scopes: str, from_domains: str, rotate: bool, quiet_key: bool, **options
    ) -> None:
        try:
            api_key, raw_key = api_key_create(
                name=name, rotate=rotate, scopes=scopes.split(","), from_domains=from_domains.split(",")
            )
        except ApiKeyError as err:
            raise CommandError(str(err)) from err
        if quiet_key:
            self.stdout.write(raw_key)
            return
        domains = api_key.from_domains.replace(",", ", ") or "any"
        self.stdout.write(
            f"API key {api_key.name!r} (prefix {api_key.prefix}, scopes {api_key.scopes}, "
            f"sender domains: {domains}); shown only now:"
        )
        self.stdout.write(raw_key)
