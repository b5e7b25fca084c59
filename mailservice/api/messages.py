"""POST /api/messages, GET /api/messages/{id}, GET /api/messages."""
from __future__ import annotations

from datetime import UTC, datetime

from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Query, Router, Schema

from mailservice import selectors
from mailservice.api.render import message_detail, message_summary
from mailservice.api.submit import accepted_response, submit_message
from mailservice.exceptions import FieldError, NotFound
from mailservice.schemas import ErrorsOut, MessageAccepted, MessageIn, MessageOut, MessageSummaryOut
from mailservice.statuses import MessageStatus

router = Router(tags=["messages"])
ERRORS = {code: ErrorsOut for code in (400, 401, 404, 409, 413, 422)}


class MessageFilters(Schema):
    status: MessageStatus | None = Field(None, description="Only messages in this status.")
    recipient: str | None = Field(None, description="Only messages to this address (to, cc or bcc).")
    since: datetime | None = Field(None, description="Only messages accepted at or after this time (ISO 8601).")
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0)


class MessagePage(Schema):
    count: int
    limit: int
    offset: int
    items: list[MessageSummaryOut]


@router.post(
    "/messages",
    response={202: MessageAccepted, **ERRORS},
    url_name="message_create",
    summary="Send a message",
    description="Accept a message for delivery and answer at once with its id and status. "
    "An `Idempotency-Key` header makes retries of the same request return the first message.",
)
def create_message(request: HttpRequest, payload: MessageIn):
    message, replayed = submit_message(request=request, data=payload, api_key=request.auth)
    return accepted_response(request, message, replayed)


@router.get(
    "/messages/{message_id}",
    response={200: MessageOut, **ERRORS},
    url_name="message_get",
    by_alias=True,
    summary="A message, its recipients, provider attempts and events",
)
def get_message(request: HttpRequest, message_id: str):
    message = selectors.message_get(message_id=message_id)
    if message is None:
        raise NotFound([FieldError(None, f"No message has the id {message_id!r}.")])
    return message_detail(request, message)


@router.get(
    "/messages",
    response={200: MessagePage, **ERRORS},
    url_name="message_list",
    by_alias=True,
    summary="Messages, newest first, filtered and paginated",
)
def list_messages(request: HttpRequest, filters: Query[MessageFilters]):
    since = filters.since
    if since is not None and timezone.is_naive(since):
        since = timezone.make_aware(since, UTC)  # a time without zone is taken as UTC
    messages = selectors.message_list(status=filters.status, recipient=filters.recipient, since=since)
    page = messages[filters.offset : filters.offset + filters.limit]
    return {
        "count": messages.count(),
        "limit": filters.limit,
        "offset": filters.offset,
        "items": [message_summary(request, message) for message in page],
    }
