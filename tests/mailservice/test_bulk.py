"""models/bulk.py: many rows, each with its own values, in one prepared statement."""

from django.test import TestCase

from mailservice.models import Message, Recipient
from mailservice.models.bulk import insert_rows, update_rows
from tests.mailservice.helpers import T0, later


class BulkRowsTests(TestCase):
    def test_insert_then_update_each_row_with_its_own_values(self):
        """Inserted rows read back as saved; updated rows each get their own values, None included."""
        messages = [
            Message(from_email=f"s{n}@example.com", subject=f"S{n}", created_at=T0, updated_at=T0)
            for n in range(3)
        ]
        self.assertEqual(insert_rows(messages), 3)
        insert_rows(
            [Recipient(message=messages[0], kind="to", address="a@example.com", email="a@example.com")]
        )
        for n, message in enumerate(messages):
            message.status, message.provider_message_id = ("sent", f"id-{n}") if n else ("deferred", "")
            message.next_attempt_at = None if n else later(30)
            message.possible_duplicate = n == 2
        self.assertEqual(
            update_rows(messages, ["status", "provider_message_id", "next_attempt_at", "possible_duplicate"]),
            3,
        )
        rows = {
            m.pk: (m.status, m.provider_message_id, m.next_attempt_at, m.possible_duplicate, m.subject)
            for m in Message.objects.all()
        }
        self.assertEqual(rows[messages[0].pk], ("deferred", "", later(30), False, "S0"))
        self.assertEqual(rows[messages[1].pk], ("sent", "id-1", None, False, "S1"))
        self.assertEqual(rows[messages[2].pk], ("sent", "id-2", None, True, "S2"))
        self.assertEqual(Recipient.objects.get().message_id, messages[0].pk)

    def test_nothing_to_write_runs_no_statement(self):
        with self.assertNumQueries(0):
            self.assertEqual((insert_rows([]), update_rows([], ["status"])), (0, 0))
