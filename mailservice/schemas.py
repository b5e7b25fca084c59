"""Pydantic schemas of the JSON API: the shapes it accepts (the first line of validation) and the
shapes it answers with (docs/api.md), read straight from the models: no view builds an answer by
hand. Also the lists' filters (their pagination: api/pagination.py). Semantic checks (addresses, headers, limits) live in
validation.py."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from ninja import Schema
from pydantic import AwareDatetime, BeforeValidator, ConfigDict, Field, field_validator

from mailservice.models import Message, Recipient, Suppression
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


def _addresses(message: Message, kind: str) -> list[str]:
    return [r.address for r in message.recipients.all() if r.kind == kind]


class _MessageShape(Schema):
    # How every shape of a message reads its id and URL. The URL needs the request: ninja passes
    # it as context to the views' answers, message_accepted passes it itself.

    @staticmethod
    def resolve_id(message: Message) -> str:
        return str(message.pk)

    @staticmethod
    def resolve_url(message: Message, context: dict) -> str:
        path = reverse("api:message_get", kwargs={"message_id": str(message.pk)})
        return context["request"].build_absolute_uri(path)


class MessageAccepted(_MessageShape):
    id: str
    status: MessageStatus
    url: str


def message_accepted(request: HttpRequest, message: Message) -> dict[str, Any]:
    """The 202 body of POST /api/messages and of the send URL."""
    return MessageAccepted.model_validate(message, context={"request": request}).model_dump(mode="json")


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


# A message as the API shows it: what happened, never the body or the attachments. The operations
# answering with it use `by_alias=True` (their router does) so that `from_email` is answered as `from`.
class MessageSummaryOut(_MessageShape):
    id: str
    url: str
    status: MessageStatus
    from_email: str = Field(serialization_alias="from")
    subject: str
    to: list[str]
    provider: str
    provider_message_id: str
    created_at: datetime
    send_at: datetime | None

    @staticmethod
    def resolve_to(message: Message) -> list[str]:
        return _addresses(message, Recipient.Kind.TO)


# Recipients, attempts and events are prefetched by selectors.message_get.
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

    @staticmethod
    def resolve_cc(message: Message) -> list[str]:
        return _addresses(message, Recipient.Kind.CC)

    @staticmethod
    def resolve_bcc(message: Message) -> list[str]:
        return _addresses(message, Recipient.Kind.BCC)

    @staticmethod
    def resolve_tags(message: Message) -> list[str]:
        return list(message.tags or [])


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


class MessageFilters(Schema):
    status: MessageStatus | None = Field(None, description="Only messages in this status.")
    recipient: str | None = Field(None, description="Only messages to this address (to, cc or bcc).")
    since: datetime | None = Field(None, description="Only messages accepted at or after this time (ISO 8601).")

    @field_validator("since")
    @classmethod
    def _naive_is_utc(cls, value: datetime | None) -> datetime | None:
        """A time without a zone is taken as UTC."""
        return timezone.make_aware(value, UTC) if value is not None and timezone.is_naive(value) else value


class SuppressionFilters(Schema):
    address: str | None = Field(None, description="Only this address.")


class FieldErrorOut(Schema):
    field: str | None
    message: str


class ErrorsOut(Schema):
    errors: list[FieldErrorOut]
