"""Pydantic schemas of the JSON API: the shapes it accepts (the first line of validation) and the
shapes it answers with. Semantic checks (addresses, headers, limits) live in validation.py."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from ninja import Schema
from pydantic import AwareDatetime, BeforeValidator, ConfigDict, Field

from mailservice.models import Suppression
from mailservice.statuses import MessageStatus, RecipientStatus


def _one_or_many(value: Any) -> Any:
    """`"a@example.com"` is short for `["a@example.com"]`."""
    return [value] if isinstance(value, str) else value


AddressList = Annotated[list[str] | None, BeforeValidator(_one_or_many)]


class AttachmentIn(Schema):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(description="File name shown to the recipient.")
    content: str = Field(description="The file, base64-encoded.")
    mimetype: str | None = Field(None, description="e.g. `application/pdf`; guessed from the name if absent.")
    inline: bool = Field(False, description="Shown inside the HTML body instead of as an attachment.")
    content_id: str | None = Field(None, description="For inline parts: the id the HTML refers to as `cid:…`.")


class MessageIn(Schema):
    """A message to send. Unknown fields are refused so that typos surface."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False)

    from_: str | None = Field(None, alias="from", description="Sender; defaults to DEFAULT_FROM_EMAIL.")
    to: AddressList = Field(None, description="One address or a list; `Name <addr>` accepted.")
    cc: AddressList = None
    bcc: AddressList = None
    reply_to: AddressList = None
    subject: str | None = Field(None, description="At most 998 characters, no line breaks.")
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] | None = Field(None, description="Extra headers, e.g. `{\"X-Campaign\": \"spring\"}`.")
    attachments: list[AttachmentIn] | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    template_id: str | None = None
    merge_data: dict[str, dict[str, Any]] | None = None
    merge_global_data: dict[str, Any] | None = None
    send_at: AwareDatetime | None = Field(None, description="ISO 8601 with a time zone; delivery waits until then.")


class MessageAccepted(Schema):
    id: str
    status: MessageStatus
    url: str


class RecipientOut(Schema):
    address: str
    email: str
    kind: str
    status: RecipientStatus
    provider_message_id: str
    error: str


class AttemptOut(Schema):
    round: int
    provider: str
    outcome: str
    ambiguous: bool
    error_class: str
    error: str
    status_code: int | None
    duration: float
    created_at: datetime


class EventOut(Schema):
    provider: str
    event_id: str
    event_type: str
    timestamp: datetime | None
    recipient: str
    description: str


class MessageSummaryOut(Schema):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    url: str
    status: MessageStatus
    from_: str = Field(alias="from")
    subject: str
    to: list[str]
    provider: str
    provider_message_id: str
    created_at: datetime
    send_at: datetime | None


class MessageOut(MessageSummaryOut):
    cc: list[str]
    bcc: list[str]
    tags: list[str]
    metadata: dict[str, Any] | None
    attempt_count: int
    next_attempt_at: datetime | None
    possible_duplicate: bool
    last_error: str
    sent_at: datetime | None
    finished_at: datetime | None
    recipients: list[RecipientOut]
    attempts: list[AttemptOut]
    events: list[EventOut]


class ProviderOut(Schema):
    name: str
    state: str = Field(description="`active` (sends start here), `standby`, or `failing`.")
    active_until: datetime | None
    last_error: str | None
    last_error_class: str | None
    last_failure_at: datetime | None


class SuppressionIn(Schema):
    model_config = ConfigDict(extra="forbid")

    address: str
    reason: Suppression.Reason = Suppression.Reason.MANUAL


class SuppressionOut(Schema):
    address: str
    reason: str
    provider: str
    created_at: datetime


class FieldErrorOut(Schema):
    field: str | None
    message: str


class ErrorsOut(Schema):
    errors: list[FieldErrorOut]
