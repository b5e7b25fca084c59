"""The shapes the JSON API answers with (docs/api.md), read straight from the models: no view
builds an answer by hand."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from django.urls import reverse
from ninja import Schema
from pydantic import Field

from mailservice.models import DeliveryAttempt, Message, Recipient
from mailservice.reasons import delivery_attempt_reason, delivery_error_reason
from mailservice.statuses import MessageStatus, RecipientStatus


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


# A tenant sees why delivery failed in the gateway's words, never a provider's own answer, which
# stays in the database, the admin and the logs (mailservice/reasons.py).
DELIVERY_ERROR_DESCRIPTION = (
    'Why delivery failed, in one line: the gateway\'s own sentence ("Cancelled by an operator."), or '
    'the reasons of the latest failed attempts, "<provider>: <reason>" each '
    '("sendgrid: provider unavailable (HTTP 503); mailgun: timed out connecting to provider"); '
    "empty when nothing failed."
)


class RecipientOut(Schema):
    address: str
    email: str
    kind: str
    status: RecipientStatus
    provider_message_id: str
    error: str = Field(description=DELIVERY_ERROR_DESCRIPTION)

    @staticmethod
    def resolve_error(recipient: Recipient) -> str:
        return delivery_error_reason(recipient.error, recipient.message)


class AttemptOut(Schema):
    round: int
    provider: str
    outcome: str
    ambiguous: bool
    error_class: str
    error: str = Field(
        description="Why this attempt failed, in one line derived from its outcome, HTTP status and "
        'error class ("provider unavailable (HTTP 503)", "timed out connecting to provider"); '
        "empty when it was sent. Never the provider's own answer (docs/api.md)."
    )
    status_code: int | None
    duration: float
    created_at: datetime

    @staticmethod
    def resolve_error(attempt: DeliveryAttempt) -> str:
        return delivery_attempt_reason(attempt)


class EventOut(Schema):
    provider: str
    event_id: str
    event_type: str
    timestamp: datetime | None
    recipient: str
    description: str


class TemplateRefOut(Schema):
    """Which stored template, in which language and version, a message was rendered from."""

    name: str
    language: str
    version: int


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
    template: TemplateRefOut | None = Field(
        description="The stored template the message was rendered from; null for a message given its "
        "own content."
    )
    template_id: str | dict[str, str] | None = Field(
        description="The ESP template id as given: one id, or one per provider."
    )
    attempt_count: int
    next_attempt_at: datetime | None
    possible_duplicate: bool
    last_error: str = Field(description=DELIVERY_ERROR_DESCRIPTION)
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

    @staticmethod
    def resolve_last_error(message: Message) -> str:
        return delivery_error_reason(message.last_error, message)


class ProviderOut(Schema):
    name: str
    state: str = Field(
        description="`active` (sends start here), `standby`, `failing` (tried again first at "
        "`next_probe_at`), or `waiting` (asked to slow down until `retry_after_until`)."
    )
    active_until: datetime | None
    last_error: str | None
    last_error_class: str | None
    last_failure_at: datetime | None
    next_probe_at: datetime | None
    retry_after_until: datetime | None


class SuppressionOut(Schema):
    address: str
    reason: str
    provider: str
    created_at: datetime


class TemplateSummaryOut(Schema):
    name: str
    language: str = Field(description="A BCP 47 tag, or empty for the default language.")
    description: str
    version: int = Field(description="1 when created, one more with each change.")
    created_at: datetime
    updated_at: datetime


class TemplateOut(TemplateSummaryOut):
    subject: str
    text: str
    html: str


class TemplatePreviewOut(Schema):
    """What a message naming the template with this data would send, as it would store it."""

    subject: str
    text: str | None = Field(description="The text part (made from the HTML when the template has none).")
    html: str | None = Field(description="With its CSS inlined; null when the template has no HTML part.")
    language: str = Field(description="The language of the template used (after any fallback).")
    version: int


class FieldErrorOut(Schema):
    field: str | None
    message: str


class ErrorsOut(Schema):
    errors: list[FieldErrorOut]
