# A message's templates (docs/templates.md): `template_id` becomes JSON, so that it holds either one
# ESP template id (a string, as before) or one per provider ({"sendgrid": "d-…", "mailgun": "…"}),
# and `template` records the stored template a message was rendered from.
#
# A stored id is plain text, not JSON, so it is JSON-encoded in place first (in a text column, as
# a JSON string is longer than the id), then the column's type changes: PostgreSQL casts the text
# (`USING template_id::jsonb`), SQLite copies it into a column checked with JSON_VALID.

import json

from django.db import migrations, models


def _recode(apps, schema_editor, *, code, longest_first: bool) -> None:
    """Rewrite every distinct template_id with `code`, one UPDATE per value. Values are taken in
    an order where a rewritten value never equals one still to be rewritten: encoding lengthens
    a value, so the longest go first; decoding shortens it, so the shortest go first."""
    Message = apps.get_model("mailservice", "Message")
    stored = Message.objects.using(schema_editor.connection.alias).filter(template_id__isnull=False)
    values = sorted(set(stored.values_list("template_id", flat=True)), key=len, reverse=longest_first)
    for value in values:
        recoded = code(value)
        if recoded != value:
            stored.filter(template_id=value).update(template_id=recoded)


def encode_ids(apps, schema_editor) -> None:
    _recode(apps, schema_editor, code=json.dumps, longest_first=True)


def decode_ids(apps, schema_editor) -> None:
    """Back to plain ids. A per-provider object has no plain form: it stays as its JSON text."""

    def decode(value: str) -> str:
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value

    _recode(apps, schema_editor, code=decode, longest_first=False)


class Migration(migrations.Migration):
    dependencies = [
        ("mailservice", "0007_template"),
    ]

    operations = [
        migrations.AlterField(
            model_name="message",
            name="template_id",
            field=models.TextField(blank=True, null=True),
        ),
        migrations.RunPython(encode_ids, decode_ids, elidable=False),
        migrations.AlterField(
            model_name="message",
            name="template_id",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="message",
            name="template",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
