"""`manage.py create_api_key NAME [--scopes send,read] [--from-domains example.com,...]
[--rotate [--grace 24h]]`: print a new API key once; only its hash is kept (docs/api.md,
"Authentication"; rotation: docs/deployment.md, "Rotation without downtime")."""

from django.core.management.base import BaseCommand, CommandError

from mailservice.exceptions import ApiKeyError
from mailservice.models.keys import DEFAULT_SCOPES, SCOPES
from mailservice.services.keys import api_key_create, api_key_rotate, parse_grace


class Command(BaseCommand):
    help = "Create an API key and print it once (only a hash is stored)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="A name that says who uses the key.")
        parser.add_argument(
            "--scopes",
            default=None,
            help=f"Comma-separated, among {', '.join(SCOPES)} (default: {','.join(DEFAULT_SCOPES)}; "
            "with --rotate, the rotated key's). send: post messages; read: read the messages this "
            "key sent; manage: every message, the suppression list and the providers.",
        )
        parser.add_argument(
            "--from-domains",
            default=None,
            help="Comma-separated sender domains this key may use (exactly; a subdomain must be "
            "listed itself). Default: any sender; with --rotate, the rotated key's.",
        )
        parser.add_argument(
            "--rotate",
            action="store_true",
            help="Replace the active keys of this name: the new key gets their scopes and sender "
            "domains, and they keep working for --grace. Without such a key, just create one.",
        )
        parser.add_argument(
            "--grace",
            default=None,
            help="With --rotate: how long the replaced keys keep working, e.g. 24h, 30m, 7d, 90s; "
            "0 (the default) stops them at once.",
        )
        parser.add_argument("--quiet-key", action="store_true", help="Print the key alone, for scripts.")

    def handle(
        self,
        *args,
        name: str,
        scopes: str | None,
        from_domains: str | None,
        rotate: bool,
        grace: str | None,
        quiet_key: bool,
        **options,
    ) -> None:
        if grace is not None and not rotate:
            raise CommandError("--grace applies to --rotate: how long the replaced key keeps working.")
        scope_list = None if scopes is None else scopes.split(",")
        domain_list = None if from_domains is None else from_domains.split(",")
        replaced = []
        try:
            if rotate:
                api_key, raw_key, replaced = api_key_rotate(
                    name=name, grace=parse_grace(grace or "0"), scopes=scope_list, from_domains=domain_list
                )
            else:
                api_key, raw_key = api_key_create(name=name, scopes=scope_list, from_domains=domain_list)
        except ApiKeyError as err:
            raise CommandError(str(err)) from err
        if quiet_key:
            self.stdout.write(raw_key)
            return
        for old in replaced:
            if old.is_active:
                until = f"keeps working until {old.expires_at:%Y-%m-%d %H:%M:%S %Z}"
            else:
                until = "no longer works"
            self.stdout.write(f"Replaced key {old.prefix}… {until}.")
        domains = api_key.from_domains.replace(",", ", ") or "any"
        self.stdout.write(
            f"API key {api_key.name!r} (prefix {api_key.prefix}, scopes {api_key.scopes}, "
            f"sender domains: {domains}); shown only now:"
        )
        self.stdout.write(raw_key)
