"""POST /api/messages, GET /api/messages/{id}, GET /api/messages."""

from datetime import timedelta

from django.test import TestCase
from django.utils import timezone

from mailservice.models import Message, TrackingEvent
from mailservice.services.delivery import message_deliver
from tests.mailservice.helpers import VALID, GatewayMixin, gateway_settings

try:
    from django_tasks_db.models import DBTaskResult
except ImportError:  # pragma: no cover
    DBTaskResult = None

SUMMARY_FIELDS = [
    "id",
    "url",
    "status",
    "from",
    "subject",
    "to",
    "provider",
    "provider_message_id",
    "created_at",
    "send_at",
]
DETAIL_FIELDS = SUMMARY_FIELDS + [
    "cc",
    "bcc",
    "tags",
    "metadata",
    "template",
    "template_id",
    "attempt_count",
    "next_attempt_at",
    "possible_duplicate",
    "last_error",
    "sent_at",
    "finished_at",
    "recipients",
    "attempts",
    "events",
]


@gateway_settings()
class CreateMessageTests(GatewayMixin, TestCase):
    def test_accepts_with_202_id_status_and_url(self):
        """A valid message is answered 202 with its id, status `queued` and its URL."""
        response = self.post_message(VALID)
        self.assertEqual(response.status_code, 202)
        body = response.json()
        self.assertEqual(set(body), {"id", "status", "url"})
        self.assertEqual(body["status"], "queued")
        self.assertTrue(body["url"].endswith(f"/api/messages/{body['id']}"))
        self.assertEqual(response["Location"], body["url"])

    def test_stores_message_and_recipients(self):
        """The message and each recipient are stored, `from` defaulting to DEFAULT_FROM_EMAIL."""
        response = self.post_message(
            {**VALID, "to": ["Jane <jane@example.com>"], "cc": "c@example.com", "bcc": ["b@example.com"]}
        )
        message = Message.objects.get(pk=response.json()["id"])
        self.assertEqual(message.from_email, "smtest@localhost")
        self.assertEqual(
            sorted((r.kind, r.address, r.email) for r in message.recipients.all()),
            [
                ("bcc", "b@example.com", "b@example.com"),
                ("cc", "c@example.com", "c@example.com"),
                ("to", "Jane <jane@example.com>", "jane@example.com"),
            ],
        )
        self.assertEqual(message.api_key, self.api_key)

    def test_wakes_delivery_on_commit(self):
        """Accepting a message wakes a delivery round once the transaction commits."""
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            self.post_message(VALID)
        self.assertEqual(len(callbacks), 1)
        task = DBTaskResult.objects.get()
        self.assertEqual((task.task_path, task.args_kwargs["args"]), ("mailservice.tasks.deliver_due", []))

    def test_an_accept_storm_wakes_one_round(self):
        """Wake-ups are coalesced: many accepts before a round starts leave one task row."""
        for _ in range(20):
            with self.captureOnCommitCallbacks(execute=True):
                self.post_message(VALID)
        self.assertEqual(DBTaskResult.objects.count(), 1)

    def test_send_at_in_future_defers_the_task(self):
        """With send_at in the future, the task waits until then and the message is due then."""
        send_at = timezone.now() + timedelta(hours=2)
        with self.captureOnCommitCallbacks(execute=True):
            response = self.post_message({**VALID, "send_at": send_at.isoformat()})
        message = Message.objects.get(pk=response.json()["id"])
        self.assertEqual(message.next_attempt_at, send_at)
        run_after = DBTaskResult.objects.get().run_after  # whole seconds, never early
        self.assertGreaterEqual(run_after, send_at)
        self.assertLess(run_after - send_at, timedelta(seconds=1))


@gateway_settings()
class GetMessageTests(GatewayMixin, TestCase):
    def test_shows_status_provider_recipients_attempts_and_events(self):
        """A sent message shows its status, provider, recipients and attempts."""
        message_id = self.post_message(VALID).json()["id"]
        message_deliver(message_id=message_id)
        body = self.client.get(f"/api/messages/{message_id}", **self.auth).json()
        self.assertEqual(body["status"], "sent")
        self.assertEqual(body["provider"], "locmem")
        self.assertEqual(body["recipients"][0]["status"], "sent")
        self.assertEqual([a["outcome"] for a in body["attempts"]], ["sent"])
        self.assertEqual(body["events"], [])
        self.assertEqual(body["from"], "smtest@localhost")

    def test_answers_exactly_the_documented_fields_in_order(self):
        """The message, its recipients, attempts and events have these fields, nothing else."""
        message_id = self.post_message(
            {
                **VALID,
                "from": "Shop <shop@example.com>",
                "cc": "c@example.com",
                "bcc": "b@example.com",
                "tags": ["t"],
                "metadata": {"order": 4711},
            }
        ).json()["id"]
        message_deliver(message_id=message_id)
        TrackingEvent.objects.create(
            message_id=message_id,
            provider="locmem",
            event_id="e1",
            event_type="delivered",
            recipient="jane@example.com",
        )
        body = self.client.get(f"/api/messages/{message_id}", **self.auth).json()
        self.assertEqual(list(body), DETAIL_FIELDS)
        self.assertEqual(body["url"], f"http://testserver/api/messages/{message_id}")
        self.assertEqual(
            (body["from"], body["to"], body["cc"], body["bcc"], body["tags"], body["metadata"]),
            (
                "Shop <shop@example.com>",
                ["jane@example.com"],
                ["c@example.com"],
                ["b@example.com"],
                ["t"],
                {"order": 4711},
            ),
        )
        self.assertEqual(
            list(body["recipients"][0]),
            ["address", "email", "kind", "status", "provider_message_id", "error"],
        )
        self.assertEqual(
            list(body["attempts"][0]),
            [
                "round",
                "provider",
                "outcome",
                "ambiguous",
                "error_class",
                "error",
                "status_code",
                "duration",
                "created_at",
            ],
        )
        self.assertEqual(
            list(body["events"][0]),
            ["provider", "event_id", "event_type", "timestamp", "recipient", "description"],
        )

    def test_unknown_id_is_404(self):
        """An id no message has answers 404 in the error format."""
        response = self.client.get("/api/messages/6a1b3c9e-7f3f-4b8e-9d7e-1a2b3c4d5e6f", **self.auth)
        self.assertEqual(response.status_code, 404)
        self.assertEqual(response.json()["errors"][0]["field"], None)

    def test_malformed_id_is_404(self):
        """An id that is not a UUID answers 404, not 422 or 500."""
        response = self.client.get("/api/messages/not-a-uuid", **self.auth)
        self.assertEqual(response.status_code, 404)


@gateway_settings()
class ListMessagesTests(GatewayMixin, TestCase):
    def setUp(self):
        super().setUp()
        self.first = self.post_message({**VALID, "to": "a@example.com"}).json()["id"]
        self.second = self.post_message({**VALID, "to": "b@example.com"}).json()["id"]
        message_deliver(message_id=self.second)

    def list(self, query=""):
        response = self.client.get(f"/api/messages{query}", **self.auth)
        self.assertEqual(response.status_code, 200, response.content)
        return response.json()

    def test_lists_newest_first_with_count(self):
        """Without filters every message is listed, newest first, with the total count."""
        body = self.list()
        self.assertEqual(body["count"], 2)
        self.assertEqual([m["id"] for m in body["items"]], [self.second, self.first])

    def test_items_have_the_summary_fields_in_order(self):
        """Each listed message has the summary fields only: no recipients, attempts or events."""
        items = self.list()["items"]
        self.assertEqual([list(item) for item in items], [SUMMARY_FIELDS, SUMMARY_FIELDS])
        self.assertEqual(items[1]["to"], ["a@example.com"])
        self.assertEqual(items[1]["url"], f"http://testserver/api/messages/{self.first}")

    def test_filters_by_status(self):
        """`status` keeps only messages in that status."""
        self.assertEqual([m["id"] for m in self.list("?status=sent")["items"]], [self.second])
        self.assertEqual([m["id"] for m in self.list("?status=queued")["items"]], [self.first])

    def test_filters_by_recipient_case_insensitively(self):
        """`recipient` matches any recipient's address, whatever its case."""
        self.assertEqual([m["id"] for m in self.list("?recipient=A@Example.com")["items"]], [self.first])

    def test_filters_by_since(self):
        """`since` keeps messages accepted at or after that time."""
        Message.objects.filter(pk=self.first).update(created_at=timezone.now() - timedelta(days=2))
        since = (timezone.now() - timedelta(days=1)).isoformat().replace("+00:00", "Z")
        self.assertEqual([m["id"] for m in self.list(f"?since={since}")["items"]], [self.second])

    def test_since_without_a_time_zone_is_taken_as_utc(self):
        """A `since` with no zone (2030-01-01T00:00:00) is UTC, not a 500."""
        Message.objects.filter(pk=self.first).update(created_at=timezone.now() - timedelta(days=2))
        since = (timezone.now() - timedelta(days=1)).replace(tzinfo=None).isoformat()
        self.assertEqual([m["id"] for m in self.list(f"?since={since}")["items"]], [self.second])

    def test_paginates_with_limit_and_offset(self):
        """`limit` and `offset` page through the list; count stays the total."""
        body = self.list("?limit=1&offset=1")
        self.assertEqual((body["count"], [m["id"] for m in body["items"]]), (2, [self.first]))

    def test_unknown_status_is_422_on_status(self):
        """A status name that does not exist is refused on the `status` field."""
        response = self.client.get("/api/messages?status=lost", **self.auth)
        self.assertEqual(response.status_code, 422)
        self.assertEqual(response.json()["errors"][0]["field"], "status")
