"""The admin: retry and cancel actions, read-only attempts, masked API keys, suppressions."""
from django.contrib.auth import get_user_model
from django.test import TestCase

from mailservice.models import ApiKey, Message, Suppression
from mailservice.services.delivery import message_deliver
from mailservice.services.messages import message_cancel, message_retry
from mailservice.services.suppressions import suppression_add, suppression_remove
from tests.mailservice.helpers import VALID, GatewayMixin, gateway_settings


@gateway_settings()
class AdminTests(GatewayMixin, TestCase):
    def setUp(self):
        super().setUp()
        self.admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.force_login(self.admin)

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

    def test_cancel_action_fails_a_queued_message(self):
        """Cancelling a queued message fails it with the operator's reason."""
        message_id = self.post_message(VALID).json()["id"]
        self.action("cancel_messages", message_id)
        message = Message.objects.get(pk=message_id)
        self.assertEqual((message.status, message.last_error), ("failed", "Cancelled by an operator."))
        self.assertIsNone(message_deliver(message_id=message_id))

    def test_retry_action_queues_a_failed_message_again(self):
        """Retrying a failed message queues it and the worker sends it."""
        message_id = self.post_message(VALID).json()["id"]
        message_cancel(message=Message.objects.get(pk=message_id))
        self.action("retry_messages", message_id)
        self.assertEqual(Message.objects.get(pk=message_id).status, "queued")
        self.assertEqual(message_deliver(message_id=message_id).status, "sent")

    def test_retry_of_a_sent_message_is_refused(self):
        """A sent message is not retried (it would be sent twice)."""
        from mailservice.exceptions import MessageStateError

        message_id = self.post_message(VALID).json()["id"]
        message = message_deliver(message_id=message_id)
        with self.assertRaises(MessageStateError):
            message_retry(message=message)
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
            "/admin/mailservice/apikey/", {"action": "revoke", "_selected_action": [self.api_key.pk]}, follow=True
        )
        self.assertIsNotNone(ApiKey.objects.get(pk=self.api_key.pk).revoked_at)


@gateway_settings()
class SuppressionAdminTests(GatewayMixin, TestCase):
    """Suppressions typed in the admin go through the same service as the API's."""

    def setUp(self):
        super().setUp()
        self.admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.force_login(self.admin)

    def test_added_address_is_normalized_like_the_apis(self):
        """`Ops.Block@Example.COM` added in the admin is stored as the API stores it."""
        response = self.client.post(
            "/admin/mailservice/suppression/add/", {"address": "Ops.Block@Example.COM", "reason": "manual"}
        )
        self.assertEqual(response.status_code, 302)
        self.assertEqual(list(Suppression.objects.values_list("address", flat=True)), ["ops.block@example.com"])
        self.assertTrue(suppression_remove(address="ops.block@example.com"))

    def test_invalid_address_is_refused_with_the_reason(self):
        """An address that is not one is refused on the form, and nothing is stored."""
        response = self.client.post("/admin/mailservice/suppression/add/", {"address": "not an address", "reason": "manual"})
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
        self.client.post(f"/admin/mailservice/suppression/{suppression.pk}/change/", {"address": "b@example.com"})
        self.assertEqual(Suppression.objects.get().address, "a@example.com")

    def test_an_address_listed_in_another_case_is_refused_as_a_duplicate(self):
        """Adding `A@Example.com` when `a@example.com` is listed says so instead of claiming a new entry."""
        suppression_add(address="a@example.com")
        response = self.client.post("/admin/mailservice/suppression/add/", {"address": "A@Example.com", "reason": "manual"})
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
