"""API keys: Bearer auth on every /api/ call but the docs and schema; hashed; revocable."""

import hashlib
import logging
from datetime import timedelta
from io import StringIO

from django.core.management import CommandError, call_command
from django.test import SimpleTestCase, TestCase
from django.utils import timezone

from mailservice.exceptions import ApiKeyError
from mailservice.models import ApiKey, Message
from mailservice.services.keys import api_key_authenticate, api_key_create, api_key_revoke
from tests.mailservice.helpers import VALID, GatewayMixin, gateway_settings

PROTECTED = [
    ("get", "/api/messages"),
    ("post", "/api/messages"),
    ("get", "/api/messages/6a1b3c9e-7f3f-4b8e-9d7e-1a2b3c4d5e6f"),
    ("get", "/api/providers"),
    ("get", "/api/suppressions"),
    ("post", "/api/suppressions"),
    ("delete", "/api/suppressions/a@example.com"),
]


@gateway_settings()
class ApiAuthTests(GatewayMixin, TestCase):
    def test_a_key_in_the_query_string_is_refused_even_with_a_header(self):
        """?api_key=... would land in access logs: 401 although the header is valid."""
        response = self.client.get(f"/api/messages?api_key={self.raw_key}", **self.auth)
        self.assertEqual(response.status_code, 401)
        self.assertIn("never in the URL", response.json()["errors"][0]["message"])

    def test_every_endpoint_needs_a_key(self):
        """Every API endpoint answers 401 in the error format without a key."""
        for method, path in PROTECTED:
            with self.subTest(path=path, method=method):
                response = getattr(self.client, method)(path, content_type="application/json")
                self.assertEqual(response.status_code, 401)
                self.assertEqual(response.json()["errors"][0]["field"], None)
                self.assertIn("Bearer", response["WWW-Authenticate"])

    def test_wrong_key_is_401(self):
        """A key that does not exist is refused."""
        response = self.client.get("/api/messages", HTTP_AUTHORIZATION="Bearer smt_" + "x" * 43)
        self.assertEqual(response.status_code, 401)

    def test_other_scheme_is_401(self):
        """The key must come as a Bearer token."""
        response = self.client.get("/api/messages", HTTP_AUTHORIZATION=f"Basic {self.raw_key}")
        self.assertEqual(response.status_code, 401)

    def test_revoked_key_is_401(self):
        """A revoked key no longer authenticates."""
        api_key_revoke(name_or_prefix=self.api_key.name)
        self.assertEqual(self.client.get("/api/messages", **self.auth).status_code, 401)

    def test_refused_post_stores_nothing(self):
        """A message posted without a valid key is not stored."""
        self.client.post("/api/messages", VALID, content_type="application/json")
        self.assertEqual(Message.objects.count(), 0)

    def test_docs_and_schema_need_no_key(self):
        """The OpenAPI schema and the interactive docs answer without a key."""
        self.assertEqual(self.client.get("/api/openapi.json").status_code, 200)
        self.assertEqual(self.client.get("/api/docs").status_code, 200)

    def test_schema_declares_bearer_auth(self):
        """The schema tells clients to send a Bearer token."""
        schema = self.client.get("/api/openapi.json").json()
        schemes = schema["components"]["securitySchemes"]
        self.assertIn("bearer", {scheme.get("scheme") for scheme in schemes.values()})


class ApiKeyStorageTests(TestCase):
    def test_only_hash_and_prefix_are_stored(self):
        """The raw key is not stored: only its SHA-256 and a short prefix."""
        api_key, raw = api_key_create(name="app")
        stored = ApiKey.objects.filter(pk=api_key.pk).values().get()
        self.assertNotIn(raw, [str(value) for value in stored.values()])
        self.assertEqual(stored["key_hash"], hashlib.sha256(raw.encode()).hexdigest())
        self.assertTrue(raw.startswith(stored["prefix"]) and len(stored["prefix"]) == 12)

    def test_authenticate_records_last_use_at_most_once_a_minute(self):
        """last_used_at is written on use, then not again within the touch interval."""
        api_key, raw = api_key_create(name="app")
        now = timezone.now()
        api_key_authenticate(raw_key=raw, now=now)
        api_key_authenticate(raw_key=raw, now=now + timedelta(seconds=30))
        self.assertEqual(ApiKey.objects.get(pk=api_key.pk).last_used_at, now)
        api_key_authenticate(raw_key=raw, now=now + timedelta(seconds=61))
        self.assertEqual(ApiKey.objects.get(pk=api_key.pk).last_used_at, now + timedelta(seconds=61))

    def test_same_name_twice_needs_rotate(self):
        """An active name cannot be reused unless rotating, which revokes the old key."""
        old, old_raw = api_key_create(name="dev")
        with self.assertRaises(ApiKeyError):
            api_key_create(name="dev")
        new, new_raw = api_key_create(name="dev", rotate=True)
        self.assertIsNone(api_key_authenticate(raw_key=old_raw))
        self.assertEqual(api_key_authenticate(raw_key=new_raw), new)


class ApiKeyCommandTests(TestCase):
    def test_create_api_key_prints_the_key_once(self):
        """create_api_key prints a key that authenticates."""
        out = StringIO()
        call_command("create_api_key", "billing", stdout=out)
        raw = out.getvalue().strip().splitlines()[-1]
        self.assertEqual(api_key_authenticate(raw_key=raw).name, "billing")

    def test_create_api_key_rotate_is_idempotent_setup(self):
        """--rotate may run on every start: each run leaves exactly one active key."""
        for _ in range(2):
            call_command("create_api_key", "dev", "--rotate", stdout=StringIO())
        self.assertEqual(ApiKey.objects.active().filter(name="dev").count(), 1)

    def test_revoke_api_key_by_name(self):
        """revoke_api_key revokes by name; an unknown name is a command error."""
        api_key, raw = api_key_create(name="old")
        call_command("revoke_api_key", "old", stdout=StringIO())
        self.assertIsNone(api_key_authenticate(raw_key=raw))
        with self.assertRaises(CommandError):
            call_command("revoke_api_key", "old", stdout=StringIO())

    def test_revoke_api_key_by_prefix(self):
        """revoke_api_key also takes the key's displayed prefix."""
        api_key, raw = api_key_create(name="by-prefix")
        call_command("revoke_api_key", api_key.prefix, stdout=StringIO())
        self.assertIsNone(api_key_authenticate(raw_key=raw))


class EverythingLogged:
    """Every logger at DEBUG, every record kept (whatever handlers the settings configure)."""

    def __enter__(self):
        self.records = []
        self.levels = {}
        handler = logging.Handler(logging.DEBUG)
        handler.emit = self.records.append
        self.handler = handler
        loggers = [logging.getLogger()] + [
            logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
        ]
        for logger in loggers:
            self.levels[logger] = logger.level
            logger.setLevel(logging.DEBUG)
        logging.getLogger().addHandler(handler)
        # Loggers that do not propagate are watched directly.
        self.direct = [logger for logger in loggers[1:] if not logger.propagate]
        for logger in self.direct:
            logger.addHandler(handler)
        return self

    def __exit__(self, *exc):
        logging.getLogger().removeHandler(self.handler)
        for logger in self.direct:
            logger.removeHandler(self.handler)
        for logger, level in self.levels.items():
            logger.setLevel(level)

    def text(self) -> str:
        """What a formatter can write: the message, its arguments, and the extra values that are
        text or numbers (django.request's records also carry the `request` object, which the
        project's formatters never write)."""
        lines = []
        for record in self.records:
            extras = {
                name: value for name, value in vars(record).items() if isinstance(value, (str, int, float))
            }
            lines.append(f"{record.getMessage()} {record.args!r} {extras!r}")
        return "\n".join(lines)


@gateway_settings()
class NoSecretInLogsTests(GatewayMixin, TestCase):
    def test_a_key_never_reaches_a_log_record(self):
        """With DEBUG on or off and every logger at DEBUG, no record holds the raw key: a key
        sent with another scheme (django-ninja logs that header), in the URL, revoked, or
        outside its scopes."""
        _, reader = api_key_create(name="reader", scopes=["read"])
        for debug in (True, False):
            with self.subTest(debug=debug), self.settings(DEBUG=debug), EverythingLogged() as logged:
                for raw in (self.raw_key, reader):
                    for header in (
                        f"Basic {raw}",
                        f"Token {raw}",
                        raw,
                        f"Bearer {raw} extra",
                        f"bearer  {raw}x",
                    ):
                        self.client.get("/api/messages", HTTP_AUTHORIZATION=header)
                        self.client.post("/", {"to": "a@example.com"}, HTTP_AUTHORIZATION=header)
                    self.client.get(f"/api/messages?api_key={raw}", HTTP_AUTHORIZATION=f"Bearer {raw}")
                    self.client.get(f"/?to=a@example.com&token={raw}")
                self.client.get("/api/providers", HTTP_AUTHORIZATION=f"Bearer {reader}")  # 403
                self.client.post("/api/messages", VALID, content_type="application/json", **self.auth)
            self.assertTrue(logged.records)
            text = logged.text()
            self.assertNotIn("Unexpected auth", text)
            for raw in (self.raw_key, reader):
                at = text.find(raw[4:])
                self.assertEqual(at, -1, text[max(0, at - 300) : at + 100])
        api_key_revoke(name_or_prefix=self.api_key.name)
        with self.settings(DEBUG=True), EverythingLogged() as logged:
            self.client.get("/api/messages", **self.auth)
        self.assertNotIn(self.raw_key, logged.text())

    def test_handlers_mask_keys_that_others_log(self):
        """The configured handlers mask a key in a record (the development server's request
        line of `?api_key=...`), keeping the displayed prefix."""
        from django.conf import settings

        from mailservice.logfilters import MaskSecrets

        for name in ("console", "django.server"):
            self.assertIn("mask_secrets", settings.LOGGING["handlers"][name]["filters"])
        record = logging.LogRecord(
            "django.server",
            logging.INFO,
            __file__,
            1,
            '"GET /api/messages?api_key=%s HTTP/1.1" 401',
            (self.raw_key,),
            None,
        )
        self.assertTrue(MaskSecrets().filter(record))
        self.assertNotIn(self.raw_key, record.getMessage())
        self.assertIn("api_key=***", record.getMessage())

    def test_keys_are_masked_however_they_are_spelt(self):
        """A key in upper case, in a message, or percent-encoded in a URL never reaches the log whole."""
        from urllib.parse import quote

        from mailservice.logfilters import mask_api_keys

        secret = self.raw_key[len(self.api_key.prefix) :]
        encoded = "".join(f"%{byte:02X}" for byte in self.raw_key.encode())
        for text in (
            f"key {self.raw_key.upper()} refused",
            f"Authorization: Token {self.raw_key}",
            f"GET /?api_key={encoded}&to=a",
            f"GET /api/messages?TOKEN={quote(self.raw_key)}",
        ):
            with self.subTest(text):
                masked = mask_api_keys(text)
                self.assertNotIn(secret, masked)
                self.assertNotIn(secret.upper(), masked)
                self.assertNotIn(encoded, masked)


class TracebackMaskingTests(SimpleTestCase):
    def test_a_key_in_an_exceptions_text_is_masked_in_the_traceback(self):
        """Tracebacks are formatted after filters run: the filter masks them itself."""
        import sys

        from mailservice.logfilters import MaskSecrets

        key = "smt_ABCDEFGHsecretpart0123456789"
        try:
            raise ValueError(f"bad key {key}")
        except ValueError:
            record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
        MaskSecrets().filter(record)
        self.assertNotIn("secretpart", logging.Formatter().format(record))
