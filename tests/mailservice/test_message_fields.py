"""The table of a message's fields (mailservice/message_fields.py) matches the request schema,
the Message model and the EmailMessage it fills (docs/architecture.md, "A message field")."""

from anymail.message import AnymailMessage
from django.test import SimpleTestCase

from mailservice.message_fields import COLUMNS, CONTENT, EMAIL_ATTRIBUTES, FIELDS
from mailservice.models import Message
from mailservice.schemas import MessageIn


class MessageFieldTableTests(SimpleTestCase):
    def test_every_request_field_is_in_the_table_once(self):
        """The table names each field of MessageIn, as a request spells it, and nothing else."""
        names = [field.name for field in FIELDS]
        schema_names = [info.alias or name for name, info in MessageIn.model_fields.items()]
        self.assertEqual(len(names), len(set(names)))
        self.assertEqual(set(names), set(schema_names))

    def test_every_column_is_a_message_field(self):
        """Each column the table names is a field of the Message model."""
        model_fields = {field.name for field in Message._meta.get_fields()}
        self.assertLessEqual({field.column for field in COLUMNS}, model_fields)

    def test_every_email_attribute_exists_on_the_email(self):
        """Each attribute a stored field is copied to is one an AnymailMessage has."""
        email = AnymailMessage()
        for field in EMAIL_ATTRIBUTES:
            with self.subTest(field.name):
                self.assertTrue(hasattr(email, field.email_attribute))

    def test_content_fields_are_in_the_table(self):
        """The fields that give a message its content are fields of the table."""
        self.assertLessEqual(set(CONTENT), {field.name for field in FIELDS})
