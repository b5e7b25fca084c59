"""`manage.py failover_status`: every provider of the chain with its remembered state."""

import json
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from failover.backends import FirstWorkingEmailBackend
from failover.exceptions import FailoverConfigurationError


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Command(BaseCommand):
    help = "Print each failover provider in priority order with its state and last error."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
        parser.add_argument(
            "--forget",
            action="store_true",
            help=(
                "first clear the remembered detour and failures, so the next send starts at the first "
                "provider"
            ),
        )

    def handle(self, *args, **options):
        try:
            backend = FirstWorkingEmailBackend()
        except FailoverConfigurationError as err:
            raise CommandError(str(err)) from err
        if options["forget"]:
            backend.forget()
        rows = backend.provider_states()
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        by_name = {p.name: p for p in backend.providers}
        for position, row in enumerate(rows, start=1):
            line = f"{position}. {row['name']:<16} {row['state']:<8} {by_name[row['name']].backend_path}"
            if row["active_until"]:
                line += f"  (sends start here until {_when(row['active_until'])})"
            style = {
                "failing": self.style.ERROR,
                "waiting": self.style.WARNING,
                "active": self.style.SUCCESS,
            }.get(row["state"], str)
            self.stdout.write(style(line))
            if row.get("next_probe_at"):
                self.stdout.write(f"   next probe {_when(row['next_probe_at'])}")
            if row.get("retry_after_until"):
                self.stdout.write(f"   asked to wait (Retry-After) until {_when(row['retry_after_until'])}")
            if row["last_error"]:
                self.stdout.write(
                    f"   last failure {_when(row['last_failure_at'])}: "
                    f"{row['last_error_class']}: {row['last_error']}"
                )
