"""The admin: retry and cancel actions, read-only attempts, masked API keys, suppressions."""

import os
import subprocess
import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.test import SimpleTestCase, TestCase

from mailservice.models import ApiKey, DeliveryAttempt, Message, Recipient, Suppression
from mailservice.services.delivery import message_deliver
from mailservice.services.keys import api_key_create
from mailservice.services.messages import message_cancel, message_requeue
from mailservice.services.suppressions import suppression_add, suppression_remove
from tests.mailservice.helpers import VALID, GatewayMixin, gateway_settings

ROOT = Path(__file__).resolve().parents[2]


class LoggedInAdminMixin(GatewayMixin):
    """The gateway, with a superuser logged in to the admin."""

    def setUp(self):
        super().setUp()
        self.admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.force_login(self.admin)


@gateway_settings()
class AdminTests(LoggedInAdminMixin, TestCase):
    def action(self, action, *messages):
        return self.client.post(
            "/admin/mailservice/message/",
            {"action": action, "_selected_action": [str(m) for m in messages]},
            follow=True,
        )

    def test_message_pages_render(self):
        """The message list and a message's page render with its recipients and attempts."""
        message_id = self.post_message(VALID).json()["id"]
        message_deliver(message_id=message_id)
        self.assertEqual(self.client.get("/admin/mailservice/message/").status_code, 200)
        page = self.client.get(f"/admin/mailservice/message/{message_id}/change/")
        self.assertContains(page, "jane@example.com")
        self.assertContains(page, "locmem")

    def test_cancel_action_cancels_a_queued_message(self):
        """Cancelling a queued message makes it and its recipients `cancelled`, with the operator's reason."""
        message_id = self.post_message(VALID).json()["id"]
        self.action("cancel_messages", message_id)
        message = Message.objects.get(pk=message_id)
        self.assertEqual((message.status, message.last_error), ("cancelled", "Cancelled by an operator."))
        self.assertEqual(list(message.recipients.values_list("status", flat=True)), ["cancelled"])
        self.assertIsNone(message_deliver(message_id=message_id))

    def test_cancel_action_leaves_a_message_being_sent_alone(self):
        """A message a worker holds (`sending`) is skipped by the cancel action, with a warning."""
        message_id = self.post_message(VALID).json()["id"]
        Message.objects.filter(pk=message_id).update(status="sending")
        page = self.action("cancel_messages", message_id)
        self.assertContains(page, "1 message(s) skipped")
        self.assertEqual(Message.objects.get(pk=message_id).status, "sending")

    def test_a_cancelled_message_is_not_retried(self):
        """Cancelling is final: the retry action skips a cancelled message."""
        message_id = self.post_message(VALID).json()["id"]
        message_cancel(message=Message.objects.get(pk=message_id))
        self.action("retry_messages", message_id)
        self.assertEqual(Message.objects.get(pk=message_id).status, "cancelled")

    def test_retry_action_queues_a_failed_message_again(self):
        """Retrying a failed message queues it and the worker sends it."""
        message_id = self.post_message(VALID).json()["id"]
        Message.objects.filter(pk=message_id).update(status="failed")
        Recipient.objects.filter(message_id=message_id).update(status="failed")
        self.action("retry_messages", message_id)
        self.assertEqual(Message.objects.get(pk=message_id).status, "queued")
        self.assertEqual(message_deliver(message_id=message_id).status, "sent")

    def test_retry_of_a_sent_message_is_refused(self):
        """A sent message is not retried (it would be sent twice)."""
        from mailservice.exceptions import MessageStateError

        message_id = self.post_message(VALID).json()["id"]
        message = message_deliver(message_id=message_id)
        with self.assertRaises(MessageStateError):
            message_requeue(message=message)
        self.action("retry_messages", message_id)
        self.assertEqual(Message.objects.get(pk=message_id).status, "sent")

    def test_api_keys_are_masked(self):
        """The API key pages show the prefix, never the hash or the key."""
        page = self.client.get("/admin/mailservice/apikey/").content.decode()
        self.assertIn(self.api_key.prefix, page)
        self.assertNotIn(self.api_key.key_hash, page)
        self.assertNotIn(self.raw_key, page)
        change = self.client.get(f"/admin/mailservice/apikey/{self.api_key.pk}/change/").content.decode()
        self.assertNotIn(self.api_key.key_hash, change)

    def test_attempts_are_read_only(self):
        """Delivery attempts cannot be edited or added from the message page."""
        from django.contrib import admin

        from mailservice.admin import AttemptInline

        inline = AttemptInline(Message, admin.site)
        self.assertFalse(inline.has_change_permission(None))
        self.assertFalse(inline.has_add_permission(None))

    def test_admin_revoke_action(self):
        """The admin can revoke keys."""
        self.client.post(
            "/admin/mailservice/apikey/",
            {"action": "revoke", "_selected_action": [self.api_key.pk]},
            follow=True,
        )
        self.assertIsNotNone(ApiKey.objects.get(pk=self.api_key.pk).revoked_at)


@gateway_settings()
class SuppressionAdminTests(LoggedInAdminMixin, TestCase):
    """Suppressions typed in the admin go through the same service as the API's."""

    def test_added_address_is_normalized_like_the_apis(self):
        """`Ops.Block@Example.COM` added in the admin is stored as the API stores it."""
        response = self.client.post(
            "/admin/mailservice/suppression/add/", {"address": "Ops.Block@Example.COM", "reason": "manual"}
        )
        self.assertEqual(response.status_code, 302)
        self.assertEqual(
            list(Suppression.objects.values_list("address", flat=True)), ["ops.block@example.com"]
        )
        self.assertTrue(suppression_remove(address="ops.block@example.com"))

    def test_invalid_address_is_refused_with_the_reason(self):
        """An address that is not one is refused on the form, and nothing is stored."""
        response = self.client.post(
            "/admin/mailservice/suppression/add/", {"address": "not an address", "reason": "manual"}
        )
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response.context["adminform"].form.errors["address"])
        self.assertFalse(Suppression.objects.exists())

    def test_delete_action_removes_through_the_service(self):
        """The admin's delete action removes the selected entries."""
        suppression, _ = suppression_add(address="a@example.com")
        self.client.post(
            "/admin/mailservice/suppression/",
            {"action": "delete_selected", "_selected_action": [suppression.pk], "post": "yes"},
        )
        self.assertFalse(Suppression.objects.exists())

    def test_entries_cannot_be_edited(self):
        """An entry is added or removed, never edited in place."""
        suppression, _ = suppression_add(address="a@example.com")
        self.client.post(
            f"/admin/mailservice/suppression/{suppression.pk}/change/", {"address": "b@example.com"}
        )
        self.assertEqual(Suppression.objects.get().address, "a@example.com")

    def test_an_address_listed_in_another_case_is_refused_as_a_duplicate(self):
        """Adding `A@Example.com` when `a@example.com` is listed says so instead of claiming a new entry."""
        suppression_add(address="a@example.com")
        response = self.client.post(
            "/admin/mailservice/suppression/add/", {"address": "A@Example.com", "reason": "manual"}
        )
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response.context["adminform"].form.errors)
        self.assertEqual(Suppression.objects.count(), 1)

    def test_an_entry_stored_before_normalization_can_be_deleted(self):
        """Deleting works on the entry itself, whatever its stored form."""
        legacy = Suppression.objects.create(address="Legacy@Example.com")
        self.client.post(
            "/admin/mailservice/suppression/",
            {"action": "delete_selected", "_selected_action": [legacy.pk], "post": "yes"},
        )
        self.assertFalse(Suppression.objects.exists())


class ViewOnlyAdminTests(TestCase):
    def test_rows_written_by_services_are_neither_saved_nor_deleted_by_the_admin(self):
        """Messages, events and API keys have no Save or Delete in the admin."""
        from django.contrib import admin

        from mailservice.models import TrackingEvent

        for model in (Message, TrackingEvent, ApiKey):
            model_admin = admin.site._registry[model]
            with self.subTest(model.__name__):
                self.assertFalse(model_admin.has_change_permission(None))
                self.assertFalse(model_admin.has_delete_permission(None))
                self.assertFalse(model_admin.has_add_permission(None))


@gateway_settings()
class AdminReadabilityTests(LoggedInAdminMixin, TestCase):
    def test_attempts_show_durations_in_ms_and_whole_wrapped_errors(self):
        """A duration reads "7.0 ms", not a raw float; a long error is shown whole, wrapping."""
        message_id = self.post_message(VALID).json()["id"]
        error = " ".join(f"word{i}" for i in range(150))  # ~1,000 characters
        DeliveryAttempt.objects.create(
            message_id=message_id,
            round=1,
            provider="sendgrid",
            outcome="provider_error",
            error_class="anymail.exceptions.AnymailRequestsAPIError",
            error=error,
            duration=0.006960218999665813,
        )
        DeliveryAttempt.objects.create(
            message_id=message_id, round=1, provider="mailgun", outcome="sent", duration=1.2345
        )
        page = self.client.get(f"/admin/mailservice/message/{message_id}/change/").content.decode()
        self.assertIn("7.0 ms", page)
        self.assertIn("1,234 ms", page)
        self.assertNotIn("0.00696", page)
        self.assertIn(error, page)
        self.assertIn("overflow-wrap: anywhere", page)

    def test_message_list_has_a_recipients_column(self):
        """The list names each message's recipients (a few, then how many more)."""
        self.post_message({**VALID, "cc": ["b@example.com", "c@example.com", "d@example.com"]})
        page = self.client.get("/admin/mailservice/message/").content.decode()
        self.assertIn("jane@example.com, b@example.com, c@example.com and 1 more", page)

    def test_api_keys_show_scopes_and_sender_domains(self):
        """The key list shows each key's scopes and sender domains."""
        api_key_create(name="shop", scopes=["send"], from_domains=["shop.example.com"])
        page = self.client.get("/admin/mailservice/apikey/").content.decode()
        self.assertIn("shop.example.com", page)
        self.assertIn("send,read,manage", page)  # the test key's


@gateway_settings(AXES_FAILURE_LIMIT=3, AXES_COOLOFF_TIME=1.0)
class AdminLockoutTests(GatewayMixin, TestCase):
    def login(self, password):
        return self.client.post(
            "/admin/login/?next=/admin/", {"username": "admin", "password": password, "next": "/admin/"}
        )

    def test_repeated_failed_logins_lock_the_admin_login(self):
        """After AXES_FAILURE_LIMIT failures even the right password is refused (429)."""
        get_user_model().objects.create_superuser("admin", "admin@example.com", "right-password")
        for _ in range(2):
            self.assertEqual(self.login("wrong").status_code, 200)  # the form again, with an error
        self.assertEqual(self.login("wrong").status_code, 429)
        self.assertEqual(self.login("right-password").status_code, 429)
        self.assertEqual(self.client.get("/admin/").status_code, 302)  # still not logged in

    def test_a_locked_out_address_still_uses_the_api(self):
        """API keys are not Django logins: a lockout of the address does not touch them."""
        for _ in range(3):
            self.login("wrong")
        self.assertEqual(self.login("wrong").status_code, 429)
        self.assertEqual(self.post_message(VALID).status_code, 202)
        self.assertEqual(self.client.get("/api/messages", **self.auth).status_code, 200)

    def test_a_successful_login_clears_earlier_failures(self):
        """AXES_RESET_ON_SUCCESS: failures before a good login do not add up to a lockout."""
        get_user_model().objects.create_superuser("admin", "admin@example.com", "right-password")
        for _ in range(2):
            self.login("wrong")
        self.assertEqual(self.login("right-password").status_code, 302)
        self.client.logout()
        for _ in range(2):
            self.assertEqual(self.login("wrong").status_code, 200)


class AdminToggleTests(SimpleTestCase):
    def test_mailservice_admin_0_removes_the_admin(self):
        """With MAILSERVICE_ADMIN=0 the admin and its login are 404 (the project's URLs, read
        in a fresh process)."""
        code = (
            "import django; django.setup()\n"
            "from django.urls import Resolver404, resolve\n"
            "for path in ('/admin/', '/admin/login/', '/admin/mailservice/message/'):\n"
            "    try:\n"
            "        resolve(path)\n"
            "    except Resolver404:\n"
            "        continue\n"
            "    raise SystemExit(f'{path} resolves')\n"
            "print('ok')\n"
        )
        env = {
            **{name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ},
            "DJANGO_SETTINGS_MODULE": "smtest.settings",
            "DEBUG": "1",
        }
        for value, expected in (("0", "ok"), ("1", "/admin/ resolves")):
            with self.subTest(MAILSERVICE_ADMIN=value):
                result = subprocess.run(
                    [sys.executable, "-c", code],
                    cwd=ROOT,
                    env={**env, "MAILSERVICE_ADMIN": value},
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                self.assertIn(expected, result.stdout + result.stderr)
