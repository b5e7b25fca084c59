"""Scoped, isolated API keys (docs/api.md, "Authentication"): a key reads only the messages it
sent, a call outside its scopes is a JSON 403, and sender domains limit `from`."""

import json
from io import StringIO

from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import TestCase, TransactionTestCase

from mailservice.exceptions import ApiKeyError
from mailservice.models import ApiKey, Message
from mailservice.services.keys import api_key_authenticate, api_key_create
from tests.mailservice.helpers import VALID, GatewayMixin, bearer, gateway_settings

MESSAGE_ID = "6a1b3c9e-7f3f-4b8e-9d7e-1a2b3c4d5e6f"
# Each operation and the scopes that allow it.
OPERATIONS = [
    ("post", "/api/messages", {"send"}),
    ("get", "/api/messages", {"read", "manage"}),
    ("get", f"/api/messages/{MESSAGE_ID}", {"read", "manage"}),
    ("delete", f"/api/messages/{MESSAGE_ID}", {"send", "manage"}),
    ("get", "/api/providers", {"manage"}),
    ("get", "/api/suppressions", {"manage"}),
    ("post", "/api/suppressions", {"manage"}),
    ("delete", "/api/suppressions/a@example.com", {"manage"}),
]


@gateway_settings()
class ScopeTests(GatewayMixin, TestCase):
    def key(self, name, scopes, **kwargs):
        return api_key_create(name=name, scopes=scopes, **kwargs)[1]

    def call(self, method, path, raw_key, body=None):
        data = json.dumps(body) if body is not None else None
        kwargs = {"content_type": "application/json", **bearer(raw_key)}
        return (
            getattr(self.client, method)(path, data, **kwargs)
            if data
            else getattr(self.client, method)(path, **kwargs)
        )

    def test_a_call_outside_the_keys_scopes_is_a_json_403_naming_the_scope(self):
        """Each operation answers 403 to a key with none of the scopes it needs, naming them."""
        for scope in ("send", "read", "manage"):
            raw = self.key(f"only-{scope}", [scope])
            for method, path, allowed in OPERATIONS:
                if scope in allowed:
                    continue
                with self.subTest(scope=scope, method=method, path=path):
                    response = self.call(method, path, raw, VALID if method == "post" else None)
                    self.assertEqual(response.status_code, 403, response.content)
                    message = response.json()["errors"][0]["message"]
                    for needed in allowed:
                        self.assertIn(f"'{needed}'", message)
        self.assertEqual(Message.objects.count(), 0)

    def test_default_scopes_are_send_and_read(self):
        """A key created without scopes sends and reads its messages, and manages nothing."""
        api_key, raw = api_key_create(name="plain")
        self.assertEqual(api_key.scopes, "send,read")
        message_id = self.call("post", "/api/messages", raw, VALID).json()["id"]
        self.assertEqual(self.call("get", f"/api/messages/{message_id}", raw).status_code, 200)
        self.assertEqual(self.call("get", "/api/providers", raw).status_code, 403)

    def test_send_url_needs_the_send_scope(self):
        """The send URL refuses a key without `send` with 403, and stores nothing."""
        raw = self.key("reader", ["read"])
        response = self.client.get("/?to=jane@example.com", **bearer(raw))
        self.assertEqual(response.status_code, 403)
        self.assertIn("'send'", response.json()["errors"][0]["message"])
        self.assertEqual(Message.objects.count(), 0)
        sender = self.key("sender", ["send"])
        self.assertEqual(self.client.get("/?to=jane@example.com", **bearer(sender)).status_code, 202)

    def test_a_key_reads_only_the_messages_it_sent(self):
        """Key B gets 404 for key A's message and does not list it; A sees its own."""
        raw_a, raw_b = self.key("a", ["send", "read"]), self.key("b", ["send", "read"])
        mine = self.call("post", "/api/messages", raw_a, VALID).json()["id"]
        theirs = self.call("post", "/api/messages", raw_b, {**VALID, "bcc": "secret@example.com"}).json()[
            "id"
        ]
        self.assertEqual(self.call("get", f"/api/messages/{mine}", raw_a).status_code, 200)
        refused = self.call("get", f"/api/messages/{theirs}", raw_a)
        self.assertEqual(refused.status_code, 404)
        self.assertNotIn("secret@example.com", refused.content.decode())
        listed = self.call("get", "/api/messages", raw_a).json()
        self.assertEqual(([item["id"] for item in listed["items"]], listed["count"]), ([mine], 1))

    def test_manage_reads_every_message(self):
        """A key with `manage` reads and lists every key's messages."""
        raw_a, admin = self.key("a", ["send"]), self.key("ops", ["manage"])
        message_id = self.call("post", "/api/messages", raw_a, VALID).json()["id"]
        self.assertEqual(self.call("get", f"/api/messages/{message_id}", admin).status_code, 200)
        self.assertEqual(self.call("get", "/api/messages", admin).json()["count"], 1)

    def test_sender_domains_limit_from(self):
        """With --from-domains, a `from` outside them is a 422 on `from`; inside is accepted."""
        raw = self.key("shop", ["send"], from_domains=["example.com", "Bücher.de"])
        for sender in ("shop@example.com", "Shop <news@EXAMPLE.com>", "a@xn--bcher-kva.de", "a@bücher.de"):
            with self.subTest(sender=sender):
                self.assertEqual(
                    self.call("post", "/api/messages", raw, {**VALID, "from": sender}).status_code, 202
                )
        count = Message.objects.count()
        for sender in ("a@example.org", "a@mail.example.com", "a@notexample.com"):
            with self.subTest(sender=sender):
                response = self.call("post", "/api/messages", raw, {**VALID, "from": sender})
                self.assertEqual(response.status_code, 422)
                self.assertEqual(response.json()["errors"][0]["field"], "from")
        self.assertEqual(Message.objects.count(), count)

    def test_the_default_sender_must_be_in_the_keys_domains_too(self):
        """A request without `from` uses DEFAULT_FROM_EMAIL, which is checked the same way."""
        raw = self.key("shop", ["send"], from_domains=["example.com"])
        with self.settings(DEFAULT_FROM_EMAIL="smtest@localhost"):
            response = self.call("post", "/api/messages", raw, VALID)
        self.assertEqual((response.status_code, response.json()["errors"][0]["field"]), (422, "from"))
        with self.settings(DEFAULT_FROM_EMAIL="Gateway <noreply@example.com>"):
            self.assertEqual(self.call("post", "/api/messages", raw, VALID).status_code, 202)

    def test_schema_documents_403_and_429_on_every_operation(self):
        """Every operation of the OpenAPI schema lists 401, 403 and 429."""
        schema = self.client.get("/api/openapi.json").json()
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                with self.subTest(method=method, path=path):
                    self.assertLessEqual({"401", "403", "429"}, set(operation["responses"]))


class ApiKeyScopeServiceTests(TestCase):
    def test_unknown_scope_or_none_is_refused(self):
        """Scopes are send, read and manage; an empty list is an error too."""
        for scopes in (["send", "admin"], [], [" "]):
            with self.subTest(scopes=scopes), self.assertRaises(ApiKeyError):
                api_key_create(name="bad", scopes=scopes)
        self.assertFalse(ApiKey.objects.exists())

    def test_domains_are_stored_lowercased_in_ascii(self):
        """Sender domains are kept lowercased, IDN in punycode, without duplicates."""
        api_key, _ = api_key_create(name="shop", from_domains=["Example.COM", "bücher.de", "example.com", ""])
        self.assertEqual(api_key.from_domains, "example.com,xn--bcher-kva.de")
        with self.assertRaises(ApiKeyError):
            api_key_create(name="bad", from_domains=["not a domain"])


class CreateApiKeyCommandScopeTests(TestCase):
    def test_scopes_and_domains_options(self):
        """--scopes and --from-domains are stored; the output names them."""
        out = StringIO()
        call_command(
            "create_api_key", "ops", "--scopes", "manage,read", "--from-domains", "example.com", stdout=out
        )
        api_key = api_key_authenticate(raw_key=out.getvalue().strip().splitlines()[-1])
        self.assertEqual((api_key.scopes, api_key.from_domains), ("read,manage", "example.com"))
        self.assertIn("read,manage", out.getvalue())

    def test_default_is_send_and_read(self):
        """Without --scopes a key gets send and read."""
        out = StringIO()
        call_command("create_api_key", "app", "--quiet-key", stdout=out)
        self.assertEqual(api_key_authenticate(raw_key=out.getvalue().strip()).scopes, "send,read")

    def test_unknown_scope_is_a_command_error(self):
        with self.assertRaises(CommandError):
            call_command("create_api_key", "app", "--scopes", "send,everything", stdout=StringIO())


class ScopeMigrationTests(TransactionTestCase):
    """Keys that existed before scopes keep working: they get send, read and manage."""

    before = [("mailservice", "0001_initial")]
    after = [("mailservice", "0002_apikey_scopes_from_domains")]

    def test_existing_keys_get_every_scope(self):
        executor = MigrationExecutor(connection)
        executor.migrate(self.before)
        old_apps = executor.loader.project_state(self.before).apps
        old_apps.get_model("mailservice", "ApiKey").objects.create(
            name="old", prefix="smt_old", key_hash="0" * 64
        )
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(self.after)
        new_apps = executor.loader.project_state(self.after).apps
        migrated = new_apps.get_model("mailservice", "ApiKey").objects.get(name="old")
        self.assertEqual((migrated.scopes, migrated.from_domains), ("send,read,manage", ""))
        # Back to the latest state for the other tests.
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
