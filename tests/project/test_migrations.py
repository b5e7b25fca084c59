"""The models and the migrations agree: no model change waits for a migration."""

from io import StringIO

from django.core.management import call_command
from django.test import TestCase


class MigrationTests(TestCase):
    def test_no_model_change_lacks_a_migration(self):
        """`makemigrations --check` finds nothing to write."""
        out = StringIO()
        try:
            call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
        except SystemExit:
            self.fail(f"A model change has no migration:\n{out.getvalue()}")
