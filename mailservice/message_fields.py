"""The fields of a message, declared once: the name a request gives each, the Message column that
stores it, how the send URL reads it from a query string or a form, and the attribute of the
EmailMessage it is copied to. Their types are stated for the API (`schemas.MessageIn`) and for the
database (`models.Message`); the code between loops over FIELDS instead of naming them
(docs/architecture.md, "A message field")."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Param(Enum):
    """How the send URL reads a field from a query string or a form (docs/api.md, "The send URL")."""

    ONE = "one"  # one parameter; given twice is an error
    LIST = "list"  # each repetition is an item of the list
    JSON_ONLY = "json only"  # refused there: only a JSON body can say it


@dataclass(frozen=True)
class MessageField:
    name: str  # in a request (MessageIn's field, or its alias)
    # The Message column and the Draft's attribute. None: not stored as given (to, cc and bcc
    # become Recipient rows; template_data and language are rendered into the message).
    column: str | None
    param: Param
    # The EmailMessage attribute the stored value is copied to when it is not empty or false
    # (with `empty_too`: when it is not None). None: build_email composes the field itself
    # (sender, subject, body, attachments).
    email_attribute: str | None = None
    empty_too: bool = False


FIELDS: tuple[MessageField, ...] = (
    MessageField("from", "from_email", Param.ONE),
    MessageField("to", None, Param.LIST),
    MessageField("cc", None, Param.LIST),
    MessageField("bcc", None, Param.LIST),
    MessageField("reply_to", "reply_to", Param.LIST, "reply_to"),
    MessageField("subject", "subject", Param.ONE),
    MessageField("text", "text", Param.ONE),
    MessageField("html", "html", Param.ONE),
    MessageField("headers", "headers", Param.JSON_ONLY, "extra_headers"),
    MessageField("attachments", "attachments", Param.JSON_ONLY),
    MessageField("tags", "tags", Param.LIST, "tags"),
    MessageField("metadata", "metadata", Param.JSON_ONLY, "metadata"),
    # An ESP's stored template: one id, or {provider: id}; build_email makes the latter the
    # email's `failover_providers` (docs/templates.md, "Templates stored at an ESP").
    MessageField("template_id", "template_id", Param.ONE),
    # A template stored in the gateway, rendered when the message is accepted: the column holds
    # {"name", "language", "version"} of the one used (validation.check_message).
    MessageField("template", "template", Param.ONE),
    MessageField("template_data", None, Param.JSON_ONLY),
    MessageField("language", None, Param.ONE),
    # Passed on even when empty: to Anymail, `merge_data={}` asks for a batch send (one message
    # per recipient).
    MessageField("merge_data", "merge_data", Param.JSON_ONLY, "merge_data", empty_too=True),
    MessageField(
        "merge_global_data", "merge_global_data", Param.JSON_ONLY, "merge_global_data", empty_too=True
    ),
    # Not Anymail's send_at: the gateway itself holds the message until then (docs/delivery.md).
    MessageField("send_at", "send_at", Param.ONE),
)
COLUMNS = tuple(field for field in FIELDS if field.column)
EMAIL_ATTRIBUTES = tuple(field for field in FIELDS if field.email_attribute)
# A message needs one of these: without them it has no content.
CONTENT = ("text", "html", "template_id", "template")
