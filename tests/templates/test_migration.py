"""Migration 0008: the template ids stored before it (plain text) are read as the same strings
once `template_id` is JSON, and back again when it is reversed."""

from __future__ import annotations

import uuid

from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import TransactionTestCase

BEFORE = [("mailservice", "0007_template")]
AFTER = [("mailservice", "0008_message_templates")]
# Ids as an ESP names them, and two that look like JSON already: each must come back as it was.
IDS = ["d-13b8f94f", "welcome", '"quoted"', "{not json"]


class TemplateIdMigrationTests(TransactionTestCase):
    def migrate(self, targets):
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(targets)
        return executor.loader.project_state(targets).apps

    def tearDown(self):
        self.migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
        super().tearDown()

    def test_stored_ids_keep_their_value_through_the_migration_and_back(self):
        """Plain-text ids become JSON strings of the same value; reversing restores the text."""
        apps = self.migrate(BEFORE)
        Message = apps.get_model("mailservice", "Message")
        for template_id in [*IDS, None]:
            Message.objects.create(id=uuid.uuid4(), from_email="a@example.com", template_id=template_id)

        apps = self.migrate(AFTER)
        Message = apps.get_model("mailservice", "Message")
        stored = list(Message.objects.values_list("template_id", flat=True))
        self.assertCountEqual(stored, [*IDS, None])
        self.assertEqual(Message.objects.filter(template__isnull=False).count(), 0)

        apps = self.migrate(BEFORE)
        Message = apps.get_model("mailservice", "Message")
        self.assertCountEqual(Message.objects.values_list("template_id", flat=True), [*IDS, None])
