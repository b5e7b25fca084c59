"""Settings read from the environment."""

from django.core.exceptions import ImproperlyConfigured
from django.test import SimpleTestCase

from mailservice import conf as mailservice_conf
from smtest.environment import (
    SQLITE_OPTIONS,
    anymail_settings,
    settings_from_environment,
    split_list,
    with_sqlite_options,
)


class EnvironmentTests(SimpleTestCase):
    def test_anymail_variables_become_the_anymail_dict(self):
        """ANYMAIL_SENDGRID_API_KEY becomes ANYMAIL['SENDGRID_API_KEY']; other variables are ignored."""
        environ = {
            "ANYMAIL_SENDGRID_API_KEY": "k",
            "ANYMAIL_WEBHOOK_SECRET": "u:p",
            "ANYMAIL_": "x",
            "HOME": "/root",
        }
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


class SettingsFromEnvironmentTests(SimpleTestCase):
    DEFAULTS = {"FLAG": True, "COUNT": 10, "DELAY": 30.0, "CHAIN": [], "TEXT": "hello"}

    def test_each_value_takes_its_default_type(self):
        """Variables are parsed as their defaults' types: bool, int, float, comma list, string."""
        environ = {"FLAG": "0", "COUNT": "3", "DELAY": "1.5", "CHAIN": "sendgrid, mailgun", "TEXT": "hi"}
        self.assertEqual(
            settings_from_environment(environ, self.DEFAULTS),
            {"FLAG": False, "COUNT": 3, "DELAY": 1.5, "CHAIN": ["sendgrid", "mailgun"], "TEXT": "hi"},
        )

    def test_unset_and_empty_variables_are_left_to_the_default(self):
        """A variable that is absent or empty sets nothing, so the app's conf default applies."""
        self.assertEqual(settings_from_environment({"COUNT": "", "OTHER": "1"}, self.DEFAULTS), {})

    def test_a_number_that_is_not_one_names_the_variable(self):
        """COUNT=ten is a configuration error naming COUNT."""
        with self.assertRaisesMessage(ImproperlyConfigured, "COUNT must be a number, not 'ten'"):
            settings_from_environment({"COUNT": "ten"}, self.DEFAULTS)

    def test_values_that_are_not_of_the_type_stop_startup(self):
        """A misspelt boolean or a non-finite number is refused, naming the variable."""
        for environ, name in (
            ({"FLAG": "ture"}, "FLAG"),
            ({"DELAY": "nan"}, "DELAY"),
            ({"DELAY": "inf"}, "DELAY"),
        ):
            with self.subTest(environ), self.assertRaisesMessage(ImproperlyConfigured, name):
                settings_from_environment(environ, self.DEFAULTS)

    def test_surrounding_blanks_are_ignored(self):
        """`TEXT= hi ` is "hi", and `FLAG= yes` is True."""
        self.assertEqual(
            settings_from_environment({"TEXT": " hi ", "FLAG": " yes"}, self.DEFAULTS),
            {"TEXT": "hi", "FLAG": True},
        )

    def test_the_gateway_limits_follow_into_django(self):
        """Django's body and field limits follow MAILSERVICE_MAX_REQUEST_BYTES and _MAX_RECIPIENTS."""
        limits = mailservice_conf.django_request_limits(
            {"MAILSERVICE_MAX_REQUEST_BYTES": 1000, "MAILSERVICE_MAX_RECIPIENTS": 10}
        )
        self.assertEqual(limits, {"DATA_UPLOAD_MAX_MEMORY_SIZE": 1000, "DATA_UPLOAD_MAX_NUMBER_FIELDS": 130})
