"""Every configured secret is masked by its value in every log line, whatever its characters
and however it is spelt there (docs/security.md, "Secrets"): the message and its arguments, the
traceback, the stack and the `extra=` fields, in text and in JSON."""

import base64
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock
from urllib.parse import quote, quote_plus, urlencode

from django.conf import settings
from django.test import SimpleTestCase, TestCase, override_settings

from mailservice import logfilters
from tests.hardening.logs import ProjectLogOutput
from tests.webhooks.payloads import (
    MANDRILL_URL,
    SENDGRID_URL,
    WEBHOOK_PROVIDERS,
    WEBHOOK_SETTINGS,
    mandrill_event,
)

ROOT = Path(__file__).resolve().parents[2]
# A slash, a space and an at sign: a URL's credentials end at the first of them, so a pattern
# for `scheme://user:password@` never found the end of this one.
SECRET = "hook user:pa/ss w@rd-1234"
PASSWORD = "pa/ss w@rd-1234"
LOGGER = logging.getLogger("mailservice.tests.secrets")


def basic_auth(secret: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(secret.encode()).decode()}


def spellings(secret: str) -> list[str]:
    """The ways a log line may carry `secret`: as it is, percent-encoded whole or in part (in
    upper and lower case), with `+` for a space, with escaped slashes."""
    encoded = quote(secret, safe="")
    lower_hex = re.sub("%[0-9A-F]{2}", lambda match: match.group().lower(), encoded)
    return [
        secret,
        encoded,
        lower_hex,
        quote(secret, safe=":/"),
        quote_plus(secret),
        quote_plus(secret, safe=":"),
        secret.replace("/", "\\/"),
    ]


@override_settings(
    ANYMAIL={**WEBHOOK_SETTINGS, "WEBHOOK_SECRET": SECRET}, MAILSERVICE_WEBHOOK_PROVIDERS=WEBHOOK_PROVIDERS
)
class WebhookSecretInLogsTests(TestCase):
    def assert_nothing_of_the_secret(self, output: str) -> None:
        for spelling in spellings(SECRET) + spellings(PASSWORD):
            self.assertNotIn(spelling, output)
        self.assertNotIn("pa/ss", output)
        self.assertNotIn("w@rd", output)

    def test_mandrill_signature_failure_masks_the_secret_in_the_quoted_url(self):
        """Anymail's "incorrect signature (for url 'http://user:pass@…')" line: the basic-auth
        secret, slash, space and @ included, is masked in the text and the JSON line."""
        params = {"mandrill_events": json.dumps([mandrill_event("send", "a@example.net", "md-1")])}
        with ProjectLogOutput() as logs:
            response = self.client.post(
                MANDRILL_URL,
                data=urlencode(params),
                content_type="application/x-www-form-urlencoded",
                HTTP_X_MANDRILL_SIGNATURE="forged",
                **basic_auth(SECRET),
            )
        self.assertEqual(response.status_code, 400)
        self.assertIn("incorrect signature (for url 'http://***@testserver/anymail/mandrill/')", logs.text)
        self.assert_nothing_of_the_secret(logs.both)
        entries = [json.loads(line) for line in logs.json.splitlines()]
        self.assertIn("webhook refused provider=mandrill", " ".join(entry["message"] for entry in entries))

    def test_wrong_basic_auth_on_sendgrid_logs_no_secret(self):
        """A post to the SendGrid tracking URL with the wrong credentials is refused and logged
        without the configured secret."""
        with ProjectLogOutput() as logs:
            response = self.client.post(
                SENDGRID_URL, data="[]", content_type="application/json", **basic_auth("hook user:guess")
            )
        self.assertEqual(response.status_code, 400)
        self.assertIn("webhook refused provider=sendgrid", logs.text)
        self.assert_nothing_of_the_secret(logs.both)

    def test_secret_in_every_part_of_a_record(self):
        """The secret in the arguments, the traceback, the stack and the `extra=` values (text,
        list, dict) never reaches either line."""
        with ProjectLogOutput() as logs:
            try:
                raise ValueError(f"refused http://{SECRET}@example.net/hook")
            except ValueError:
                LOGGER.error(
                    "posting to %s failed",
                    f"http://{quote(SECRET, safe=':')}@example.net/hook",
                    exc_info=True,
                    stack_info=True,
                    extra={"url": SECRET, "tried": [PASSWORD], "auth": {"basic": SECRET}},
                )
        self.assert_nothing_of_the_secret(logs.both)
        entry = json.loads(logs.json)
        self.assertEqual((entry["url"], entry["tried"], entry["auth"]), ("***", ["***"], {"basic": "***"}))
        self.assertIn("refused http://***@example.net/hook", entry["exception"])
        self.assertIn("posting to http://***@example.net/hook failed", logs.text)

    @override_settings(ANYMAIL={"WEBHOOK_SECRET": ["old user:old/pass 1", "new user:new@pass 2"]})
    def test_every_secret_of_a_rotation_list_is_masked(self):
        """WEBHOOK_SECRET as a list of pairs (rotation): each pair and each password is masked."""
        with ProjectLogOutput() as logs:
            LOGGER.warning("got old user:old/pass 1 then new@pass 2 then %s", quote("old/pass 1", safe=""))
        self.assertEqual(logs.text.split(" ", 4)[-1].strip(), "got *** then *** then ***")

    @override_settings(ANYMAIL={"WEBHOOK_SECRET": "old user:old/pass 1,new user:new@pass 2"})
    def test_every_secret_of_a_comma_separated_rotation_is_masked(self):
        """WEBHOOK_SECRET comma-separated (rotation): each pair and each password is masked."""
        with ProjectLogOutput() as logs:
            LOGGER.warning("http://new user:new@pass 2@h and old/pass 1")
        self.assertNotIn("pass", logs.both)


class ConfiguredSecretsTests(TestCase):
    @override_settings(
        SECRET_KEY="django-secret/with spaces@and-more-0123456789",
        SECRET_KEY_FALLBACKS=["previous/secret key@0123"],
        ANYMAIL={
            "SENDGRID_API_KEY": "SG.sendgrid/key with@signs",
            "MAILGUN_WEBHOOK_SIGNING_KEY": "mg signing/key@1",
        },
        MAILSERVICE_METRICS_TOKEN="metrics token/with@signs",
        FIRST_WORKING_EMAIL_BACKENDS=[
            {
                "NAME": "mailgun-eu",
                "BACKEND": "mailgun",
                "OPTIONS": {"api_key": "mg-eu key/with@signs", "sender_domain": "eu.example"},
            },
        ],
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": "secrets",
            },
            "redis": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": "redis://:cache%2Fpass%40word@cache.internal:6379/0",
            },
        },
        RQ_QUEUES={"default": {"URL": "redis://queue:queue%20pass%2Fword@queue.internal:6379/1"}},
    )
    def test_each_kind_of_configured_secret_is_masked_in_its_spellings(self):
        """SECRET_KEY and its fallbacks, Anymail keys, the metrics token, a failover entry's
        OPTIONS, cache and queue URL passwords: masked as they are and percent-encoded."""
        secrets = [
            "django-secret/with spaces@and-more-0123456789",
            "previous/secret key@0123",
            "SG.sendgrid/key with@signs",
            "mg signing/key@1",
            "metrics token/with@signs",
            "mg-eu key/with@signs",
            "cache/pass@word",
            "queue pass/word",
        ]
        with ProjectLogOutput() as logs:
            for secret in secrets:
                for spelling in spellings(secret):
                    LOGGER.warning("value [%s]", spelling, extra={"value": spelling})
        for secret in secrets:
            for spelling in spellings(secret):
                self.assertNotIn(spelling, logs.both)
        self.assertEqual(logs.text.count("value [***]"), len(secrets) * len(spellings(secrets[0])))

    def test_database_password_is_masked(self):
        """DATABASES' password (from DATABASE_URL) is masked, as it is and percent-encoded."""
        with mock.patch.dict(settings.DATABASES["default"], {"PASSWORD": "db pass/word@1"}):
            logfilters._secrets.forget()
            try:
                self.assertIn("db pass/word@1", logfilters.configured_secrets())
                masked = logfilters.mask_secrets("postgres://u:db%20pass%2Fword%401@h/db")
                self.assertEqual(masked, "postgres://u:***@h/db")
            finally:
                logfilters._secrets.forget()

    def test_secrets_are_gathered_once_per_settings_change(self):
        """Many records cost one gathering of the settings' secrets; a setting that changes
        (override_settings) makes the next record gather them again."""
        logfilters._secrets.forget()
        with mock.patch.object(
            logfilters, "configured_secrets", wraps=logfilters.configured_secrets
        ) as gathered:
            with ProjectLogOutput():
                for index in range(200):
                    LOGGER.info("record %s", index)
                self.assertEqual(gathered.call_count, 1)
                with override_settings(MAILSERVICE_METRICS_TOKEN="a new metrics token"):
                    LOGGER.info("a new token: a new metrics token")
                    self.assertEqual(gathered.call_count, 2)

    @override_settings(ANYMAIL={"MAILGUN_API_KEY": "abc"})
    def test_values_too_short_to_be_secrets_are_left_alone(self):
        """A value shorter than four characters is not masked: every "abc" in every line would go."""
        self.assertEqual(logfilters.mask_secrets("abc def"), "abc def")

    def test_settings_wire_the_filter_into_every_handler(self):
        """Both handlers of LOGGING (the console and the development server's) mask secrets."""
        for name in ("console", "django.server"):
            self.assertIn("mask_secrets", settings.LOGGING["handlers"][name]["filters"])
        self.assertEqual(
            settings.LOGGING["filters"]["mask_secrets"]["()"], "mailservice.logfilters.MaskSecrets"
        )


class BeforeSettingsTests(SimpleTestCase):
    def test_filter_before_settings_masks_keys_without_loading_the_settings(self):
        """In a process whose settings are not loaded yet (gunicorn's master), the filter masks
        API keys and leaves the settings alone rather than loading them inside a log call."""
        code = (
            "import logging\n"
            "from django.conf import settings\n"
            "from mailservice.logfilters import MaskSecrets\n"
            "record = logging.LogRecord(\n"
            "    'x', logging.INFO, 'probe', 1, 'key %s', ('smt_ABCDEFGHsecretsecret',), None\n"
            ")\n"
            "MaskSecrets().filter(record)\n"
            "print(record.getMessage(), settings.configured)\n"
        )
        keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**keep, "DJANGO_SETTINGS_MODULE": "smtest.settings", "PYTHONDONTWRITEBYTECODE": "1"},
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "key smt_ABCDEFGH… False")


class EnvironmentSecretsTests(SimpleTestCase):
    """The project's own settings, from the environment, in a child process (as deployed)."""

    ENVIRONMENT = {
        "SECRET_KEY": "env-secret/key with@signs-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DEBUG": "0",
        "ANYMAIL_WEBHOOK_SECRET": SECRET,
        "ANYMAIL_SENDGRID_API_KEY": "SG.env/key with@signs",
        "DATABASE_URL": "postgres://smtest:db%20pass%2Fword%401@db.internal:5432/smtest",
        "CACHE_URL": "redis://:cache%2Fpass%40word@cache.internal:6379/0",
        "TASKS_BACKEND": "rq",
        "REDIS_URL": "redis://:queue%20pass%2Fword@queue.internal:6379/1",
        "MAILSERVICE_METRICS_TOKEN": "metrics/token with@signs",
    }
    SECRETS = [
        "env-secret/key with@signs-0123456789-abcdefghijklmnopqrstuvwxyz",
        SECRET,
        PASSWORD,
        "SG.env/key with@signs",
        "db pass/word@1",
        "cache/pass@word",
        "queue pass/word",
        "metrics/token with@signs",
    ]

    def run_child(self, log_format: str) -> str:
        code = (
            "import json, logging, sys, django\n"
            "django.setup()\n"
            "log = logging.getLogger('mailservice.probe')\n"
            "for secret in json.loads(sys.argv[1]):\n"
            "    log.warning('secret %s', secret, extra={'value': secret})\n"
        )
        values = json.dumps([spelling for secret in self.SECRETS for spelling in spellings(secret)])
        keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
        result = subprocess.run(
            [sys.executable, "-c", code, values],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **keep,
                "DJANGO_SETTINGS_MODULE": "smtest.settings",
                "PYTHONDONTWRITEBYTECODE": "1",
                "LOG_FORMAT": log_format,
                **self.ENVIRONMENT,
            },
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stderr

    def test_every_secret_from_the_environment_is_masked_in_text_and_json(self):
        """SECRET_KEY, the webhook secret, an Anymail key, the DATABASE_URL, CACHE_URL and
        REDIS_URL passwords and the metrics token, each in every spelling, in both formats."""
        for log_format in ("text", "json"):
            with self.subTest(log_format):
                output = self.run_child(log_format)
                lines = [line for line in output.splitlines() if "mailservice.probe" in line]
                self.assertEqual(len(lines), len(self.SECRETS) * len(spellings(SECRET)), output)
                for secret in self.SECRETS:
                    for spelling in spellings(secret):
                        self.assertNotIn(spelling, output)
