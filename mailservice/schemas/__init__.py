"""Pydantic schemas of the JSON API, the only statement of every request and response shape
(docs/api.md): what it accepts (`requests.py`) and what it answers with (`responses.py`)."""

from mailservice.schemas.requests import (
    MAX_ATTACHMENTS,
    MAX_HEADERS,
    MAX_TAGS,
    AttachmentIn,
    MessageFilters,
    MessageIn,
    SuppressionFilters,
    SuppressionIn,
)
from mailservice.schemas.responses import (
    AttemptOut,
    ErrorsOut,
    EventOut,
    FieldErrorOut,
    MessageAccepted,
    MessageOut,
    MessageSummaryOut,
    ProviderOut,
    RecipientOut,
    SuppressionOut,
    message_accepted,
)

__all__ = [
    "MAX_ATTACHMENTS",
    "MAX_HEADERS",
    "MAX_TAGS",
    "AttachmentIn",
    "AttemptOut",
    "ErrorsOut",
    "EventOut",
    "FieldErrorOut",
    "MessageAccepted",
    "MessageFilters",
    "MessageIn",
    "MessageOut",
    "MessageSummaryOut",
    "ProviderOut",
    "RecipientOut",
    "SuppressionFilters",
    "SuppressionIn",
    "SuppressionOut",
    "message_accepted",
]
