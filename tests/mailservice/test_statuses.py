"""Status names: how a message summarises its recipients, and that worker and API agree."""

from django.test import SimpleTestCase, TestCase

from mailservice.statuses import MessageStatus, RecipientStatus, summarize
from tests.mailservice.helpers import GatewayMixin, gateway_settings


class SummarizeTests(SimpleTestCase):
    def test_one_recipient_gives_its_status(self):
        """A one-recipient message has its recipient's status, whatever it is."""
        for status in RecipientStatus:
            self.assertEqual(summarize([status]), status.value)

    def test_least_advanced_pending_recipient_wins(self):
        """While any recipient is not final, the least advanced one shows."""
        self.assertEqual(summarize(["sent", "queued"]), "queued")
        self.assertEqual(summarize(["sent", "sending"]), "sending")
        self.assertEqual(summarize(["sent", "delivered"]), "sent")

    def test_deferred_wins_a_tie_with_sending(self):
        """Between sending and deferred, deferred shows (it says why nothing moves)."""
        self.assertEqual(summarize(["sending", "deferred"]), "deferred")

    def test_all_final_and_agreeing_gives_the_outcome(self):
        """All final with one outcome: that outcome."""
        self.assertEqual(summarize(["bounced", "bounced"]), "bounced")

    def test_all_final_and_differing_is_partially_delivered(self):
        """All final with different outcomes: partially_delivered."""
        self.assertEqual(summarize(["delivered", "suppressed"]), "partially_delivered")


@gateway_settings()
class StatusAgreementTests(GatewayMixin, TestCase):
    def test_api_schema_lists_exactly_the_message_statuses(self):
        """The OpenAPI schema's status enum is the set of statuses the worker writes."""
        schema = self.client.get("/api/openapi.json").json()
        enums = [
            component["enum"]
            for component in schema["components"]["schemas"].values()
            if component.get("enum") and "partially_delivered" in component["enum"]
        ]
        self.assertEqual(len(enums), 1, enums)
        self.assertEqual(set(enums[0]), set(MessageStatus.values))

    def test_every_recipient_status_is_a_message_status(self):
        """A message can always show the status of its only recipient."""
        self.assertLessEqual(set(RecipientStatus.values), set(MessageStatus.values))

    def test_worker_statuses_read_back_through_the_api(self):
        """Each status the worker writes (sent, suppressed, deferred) is what the API shows and filters on."""
        from django.test import override_settings

        from mailservice.services.delivery import message_deliver
        from mailservice.services.suppressions import suppression_add

        suppression_add(address="blocked@example.com")
        written = {}
        for to in ("jane@example.com", "blocked@example.com"):
            message_id = self.post_message({"to": to, "text": "x"}).json()["id"]
            written[message_id] = message_deliver(message_id=message_id).status
        with override_settings(FIRST_WORKING_EMAIL_BACKENDS=[]):
            message_id = self.post_message({"to": "later@example.com", "text": "x"}).json()["id"]
            written[message_id] = message_deliver(message_id=message_id).status
        self.assertEqual(set(written.values()), {"sent", "suppressed", "deferred"})
        for message_id, status in written.items():
            shown = self.client.get(f"/api/messages/{message_id}", **self.auth).json()["status"]
            listed = self.client.get(f"/api/messages?status={status}", **self.auth).json()["items"]
            self.assertEqual(shown, status)
            self.assertIn(message_id, [item["id"] for item in listed])

    def test_every_status_is_accepted_by_the_list_filter(self):
        """Each status name the worker writes can be used to filter the list."""
        for status in MessageStatus.values:
            with self.subTest(status=status):
                response = self.client.get(f"/api/messages?status={status}", **self.auth)
                self.assertEqual(response.status_code, 200)
