"""Rotating an API key without downtime (docs/deployment.md, "Rotation without downtime"): the
replaced key keeps working, with its own scopes and sender domains, for the grace period, then is
refused like a revoked key; the new key inherits its scopes and sender domains."""

import json
import logging
from datetime import timedelta
from io import StringIO

from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import SimpleTestCase, TestCase
from django.utils import timezone
from django.utils.formats import date_format

from mailservice.exceptions import ApiKeyError
from mailservice.models import ApiKey
from mailservice.services.keys import (
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
    api_key_rotate,
    parse_grace,
)
from tests.mailservice.helpers import VALID, bearer, gateway_settings


@gateway_settings()
class RotationThroughTheApiTests(TestCase):
    def setUp(self):
        self.old, self.old_raw = api_key_create(
            name="shop", scopes=["send", "read", "manage"], from_domains=["shop.example.com"]
        )

    def post(self, raw_key: str, body: dict):
        return self.client.post(
            "/api/messages", json.dumps(body), content_type="application/json", **bearer(raw_key)
        )

    def test_both_keys_work_during_the_grace_period(self):
        """After --rotate --grace 24h the old and the new key both authenticate."""
        _, new_raw, _ = api_key_rotate(name="shop", grace=timedelta(hours=24))
        for raw in (self.old_raw, new_raw):
            with self.subTest(key=raw[:12]):
                self.assertEqual(self.client.get("/api/messages", **bearer(raw)).status_code, 200)

    def test_the_old_key_is_401_once_its_grace_period_is_over(self):
        """A replaced key past its grace period is refused like a revoked key; the new one works."""
        _, new_raw, _ = api_key_rotate(
            name="shop", grace=timedelta(hours=24), now=timezone.now() - timedelta(hours=24, seconds=1)
        )
        response = self.client.get("/api/messages", **bearer(self.old_raw))
        self.assertEqual(response.status_code, 401)
        self.assertEqual(response.json()["errors"][0]["field"], None)
        self.assertEqual(self.client.get("/api/messages", **bearer(new_raw)).status_code, 200)

    def test_the_old_key_keeps_its_scopes_and_sender_domains_during_the_grace_period(self):
        """During the grace period the old key may do what it could, and nothing more."""
        api_key_rotate(name="shop", grace=timedelta(hours=24))
        self.assertEqual(self.client.get("/api/suppressions", **bearer(self.old_raw)).status_code, 200)
        self.assertEqual(self.post(self.old_raw, {**VALID, "from": "a@shop.example.com"}).status_code, 202)
        refused = self.post(self.old_raw, {**VALID, "from": "a@other.example.com"})
        self.assertEqual(refused.status_code, 422)
        self.assertEqual(refused.json()["errors"][0]["field"], "from")

    def test_the_new_key_sends_with_the_old_keys_sender_domains(self):
        """The new key is limited to the sender domains of the key it replaces."""
        _, new_raw, _ = api_key_rotate(name="shop", grace=timedelta(hours=1))
        self.assertEqual(self.post(new_raw, {**VALID, "from": "a@shop.example.com"}).status_code, 202)
        self.assertEqual(self.post(new_raw, {**VALID, "from": "a@other.example.com"}).status_code, 422)


class RotationServiceTests(TestCase):
    def test_the_new_key_copies_the_scopes_and_sender_domains(self):
        """Rotation without --scopes or --from-domains gives the new key the old key's."""
        api_key_create(name="shop", scopes=["send", "manage"], from_domains=["example.com", "example.org"])
        new, _, _ = api_key_rotate(name="shop", grace=timedelta(hours=1))
        self.assertEqual((new.scopes, new.from_domains), ("send,manage", "example.com,example.org"))

    def test_given_scopes_and_domains_replace_the_copied_ones(self):
        """--scopes and --from-domains given with --rotate apply to the new key only."""
        old, _ = api_key_create(name="shop", scopes=["send", "manage"], from_domains=["example.com"])
        new, _, _ = api_key_rotate(name="shop", grace=timedelta(hours=1), scopes=["send"], from_domains=[""])
        self.assertEqual((new.scopes, new.from_domains), ("send", ""))
        old.refresh_from_db()
        self.assertEqual((old.scopes, old.from_domains), ("send,manage", "example.com"))

    def test_a_zero_grace_stops_the_old_key_at_once(self):
        """--grace 0 (the default) refuses the old key from the moment of rotation."""
        _, old_raw = api_key_create(name="shop")
        api_key_rotate(name="shop", grace=timedelta(0))
        self.assertIsNone(api_key_authenticate(raw_key=old_raw))

    def test_the_old_key_expires_exactly_at_the_end_of_the_grace_period(self):
        """The replaced key authenticates until now + grace, and not at that instant."""
        _, old_raw = api_key_create(name="shop")
        now = timezone.now()
        api_key_rotate(name="shop", grace=timedelta(minutes=30), now=now)
        self.assertIsNotNone(
            api_key_authenticate(raw_key=old_raw, now=now + timedelta(minutes=29, seconds=59))
        )
        self.assertIsNone(api_key_authenticate(raw_key=old_raw, now=now + timedelta(minutes=30)))

    def test_rotating_again_never_extends_an_old_keys_grace(self):
        """A second rotation leaves an earlier expiry alone and gives the first new key its own."""
        old, _ = api_key_create(name="shop")
        now = timezone.now()
        first, _, _ = api_key_rotate(name="shop", grace=timedelta(hours=1), now=now)
        _, _, replaced = api_key_rotate(name="shop", grace=timedelta(days=7), now=now + timedelta(minutes=5))
        old.refresh_from_db()
        first.refresh_from_db()
        self.assertEqual(old.expires_at, now + timedelta(hours=1))
        self.assertEqual(first.expires_at, now + timedelta(days=7, minutes=5))
        expiries = {key.pk: key.expires_at for key in replaced}
        self.assertEqual(expiries, {old.pk: old.expires_at, first.pk: first.expires_at})

    def test_revoking_a_key_in_its_grace_period_stops_it_at_once(self):
        """revoke_api_key on the old key's prefix ends its grace period."""
        old, old_raw = api_key_create(name="shop")
        _, new_raw, _ = api_key_rotate(name="shop", grace=timedelta(days=1))
        self.assertEqual(api_key_revoke(name_or_prefix=old.prefix), 1)
        self.assertIsNone(api_key_authenticate(raw_key=old_raw))
        self.assertIsNotNone(api_key_authenticate(raw_key=new_raw))

    def test_an_expired_key_is_not_revoked_again(self):
        """A key past its grace period is no longer active: revoking its name finds nothing."""
        old, _ = api_key_create(name="gone")
        old.expires_at = timezone.now() - timedelta(seconds=1)
        old.save(update_fields=["expires_at"])
        with self.assertRaises(ApiKeyError):
            api_key_revoke(name_or_prefix="gone")

    def test_rotating_a_name_without_an_active_key_creates_one(self):
        """--rotate on a new name creates a key with the default scopes (setup scripts rerun it)."""
        new, raw, replaced = api_key_rotate(name="fresh", grace=timedelta(hours=1))
        self.assertEqual((new.scopes, replaced), ("send,read", []))
        self.assertEqual(api_key_authenticate(raw_key=raw), new)

    def test_a_rotation_logs_one_line_without_any_key(self):
        """One INFO line names both prefixes and the expiry; neither key appears in it."""
        old, old_raw = api_key_create(name="shop")
        with self.assertLogs("mailservice.services.keys", level="DEBUG") as logs:
            new, new_raw, _ = api_key_rotate(name="shop", grace=timedelta(hours=24))
        self.assertEqual(len(logs.records), 1)
        record = logs.records[0]
        self.assertEqual(record.levelno, logging.INFO)
        line = record.getMessage()
        self.assertIn("api key rotated", line)
        self.assertIn(new.prefix, line)
        self.assertIn(old.prefix, line)
        self.assertEqual(record.replaced_prefixes, old.prefix)
        for raw in (old_raw, new_raw):
            self.assertNotIn(raw, line)
            self.assertNotIn(raw[12:], str(record.__dict__))

    def test_a_negative_grace_is_refused(self):
        """A grace period below zero is an error, and nothing changes."""
        _, old_raw = api_key_create(name="shop")
        with self.assertRaises(ApiKeyError):
            api_key_rotate(name="shop", grace=timedelta(seconds=-1))
        self.assertEqual(ApiKey.objects.count(), 1)
        self.assertIsNotNone(api_key_authenticate(raw_key=old_raw))


class RotationCommandTests(TestCase):
    def test_rotate_with_grace_prints_the_new_key_once_and_keeps_the_old(self):
        """`create_api_key NAME --rotate --grace 24h`: a new key last, the old one's expiry above it."""
        old, old_raw = api_key_create(name="billing", scopes=["send"], from_domains=["example.com"])
        out = StringIO()
        call_command("create_api_key", "billing", "--rotate", "--grace", "24h", stdout=out)
        lines = out.getvalue().strip().splitlines()
        new = api_key_authenticate(raw_key=lines[-1])
        self.assertEqual((new.name, new.scopes, new.from_domains), ("billing", "send", "example.com"))
        self.assertIn(f"Replaced key {old.prefix}… keeps working until", out.getvalue())
        self.assertEqual(api_key_authenticate(raw_key=old_raw), old)
        old.refresh_from_db()
        self.assertAlmostEqual(
            old.expires_at, timezone.now() + timedelta(hours=24), delta=timedelta(minutes=1)
        )

    def test_rotate_without_grace_stops_the_old_key(self):
        """--rotate alone replaces the old key at once, as `make run` does for its "dev" key."""
        _, old_raw = api_key_create(name="dev")
        out = StringIO()
        call_command("create_api_key", "dev", "--rotate", stdout=out)
        self.assertIn("no longer works", out.getvalue())
        self.assertIsNone(api_key_authenticate(raw_key=old_raw))

    def test_grace_without_rotate_is_an_error(self):
        """--grace alone is refused: it only says how long a replaced key lives."""
        with self.assertRaisesMessage(CommandError, "--grace applies to --rotate"):
            call_command("create_api_key", "new", "--grace", "24h", stdout=StringIO())
        self.assertFalse(ApiKey.objects.exists())

    def test_a_malformed_grace_is_a_command_error(self):
        """A grace that is not a duration is refused before anything changes."""
        _, old_raw = api_key_create(name="billing")
        with self.assertRaisesMessage(CommandError, "24 hours"):
            call_command("create_api_key", "billing", "--rotate", "--grace", "24 hours", stdout=StringIO())
        self.assertEqual(ApiKey.objects.count(), 1)
        self.assertIsNotNone(api_key_authenticate(raw_key=old_raw))


class RotationInTheAdminTests(TestCase):
    def test_the_key_list_shows_when_a_replaced_key_stops_working(self):
        """The admin's API key list has an "expires at" column, filled for a key in its grace period."""
        old, _ = api_key_create(name="shop")
        api_key_rotate(name="shop", grace=timedelta(hours=24))
        self.client.force_login(get_user_model().objects.create_superuser("ops", "ops@example.com", "pw"))
        response = self.client.get("/admin/mailservice/apikey/")
        self.assertContains(response, "column-expires_at")
        old.refresh_from_db()
        shown = date_format(timezone.localtime(old.expires_at), "DATETIME_FORMAT")
        self.assertContains(response, f'<td class="field-expires_at nowrap">{shown}</td>', html=True)


class GraceParsingTests(SimpleTestCase):
    def test_durations_with_a_unit(self):
        """24h, 30m, 7d, 90s and 0 are read as durations."""
        cases = {
            "24h": timedelta(hours=24),
            "30m": timedelta(minutes=30),
            "7d": timedelta(days=7),
            "90s": timedelta(seconds=90),
            "0": timedelta(0),
            " 2H ": timedelta(hours=2),
        }
        for text, expected in cases.items():
            with self.subTest(text=text):
                self.assertEqual(parse_grace(text), expected)

    def test_anything_else_is_refused(self):
        """A number without a unit, a fraction, a sign, other units or over a year are errors."""
        for text in ("24", "h", "1.5h", "-1h", "1w", "1h30m", "", "366d", "9999999999d"):
            with self.subTest(text=text):
                with self.assertRaises(ApiKeyError):
                    parse_grace(text)
