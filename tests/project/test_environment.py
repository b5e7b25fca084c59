"""Settings read from the environment."""
from django.test import SimpleTestCase

from smtest.environment import SQLITE_OPTIONS, anymail_settings, split_list, with_sqlite_options


class EnvironmentTests(SimpleTestCase):
    def test_anymail_variables_become_the_anymail_dict(self):
        """ANYMAIL_SENDGRID_API_KEY becomes ANYMAIL['SENDGRID_API_KEY']; other variables are ignored."""
        environ = {"ANYMAIL_SENDGRID_API_KEY": "k", "ANYMAIL_WEBHOOK_SECRET": "u:p", "ANYMAIL_": "x", "HOME": "/root"}
        self.assertEqual(anymail_settings(environ), {"SENDGRID_API_KEY": "k", "WEBHOOK_SECRET": "u:p"})

    def test_empty_anymail_variables_are_dropped(self):
        """An empty ANYMAIL_X= line does not set X to an empty string."""
        self.assertEqual(anymail_settings({"ANYMAIL_MAILGUN_API_KEY": ""}), {})

    def test_backend_list_is_split_on_commas(self):
        """FIRST_WORKING_EMAIL_BACKENDS='sendgrid, mailgun,' gives two entries."""
        self.assertEqual(split_list("sendgrid, mailgun,"), ["sendgrid", "mailgun"])

    def test_sqlite_gets_multi_process_options(self):
        """SQLite opens in WAL mode with IMMEDIATE transactions and a busy timeout."""
        database = with_sqlite_options({"ENGINE": "django.db.backends.sqlite3", "NAME": "x"})
        self.assertEqual(database["OPTIONS"], SQLITE_OPTIONS)

    def test_other_databases_are_left_alone(self):
        """PostgreSQL gets no SQLite pragmas."""
        database = with_sqlite_options({"ENGINE": "django.db.backends.postgresql", "NAME": "x"})
        self.assertNotIn("OPTIONS", database)
