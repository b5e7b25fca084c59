"""POST /api/messages, GET /api/messages/{id}, DELETE /api/messages/{id} (cancel), GET /api/messages."""

# No `from __future__ import annotations` here: ninja reads the paginated views' annotations
# through @paginate's wrapper, whose module cannot resolve names given as strings.
from django.http import HttpRequest
from ninja import Query, Router
from ninja.pagination import paginate

from mailservice import selectors
from mailservice.api.auth import ApiKeyAuth, messages_owner
from mailservice.api.pagination import Pagination
from mailservice.api.submit import accepted_response, submit_message
from mailservice.exceptions import FieldError, MessageStateError, NotFound, RequestRejected
from mailservice.models import ApiKey, Message
from mailservice.schemas import (
    ErrorsOut,
    MessageAccepted,
    MessageFilters,
    MessageIn,
    MessageOut,
    MessageSummaryOut,
)
from mailservice.services.messages import message_cancel

# by_alias: a message's sender is answered as `from` (MessageSummaryOut.from_email).
router = Router(tags=["messages"], by_alias=True)
ERRORS = dict.fromkeys((400, 401, 403, 404, 409, 413, 422, 429), ErrorsOut)
# A key reads the messages it sent (`read`), or every message (`manage`); docs/api.md.
READ = ApiKeyAuth("read", "manage")
# A key cancels the messages it sent (`send`), or every message (`manage`).
CANCEL = ApiKeyAuth("send", "manage")
ONE_MESSAGE = "/messages/{message_id}"
MESSAGE_RESPONSES = {200: MessageOut, **ERRORS}


def message_or_404(message_id: str, owner: ApiKey | None) -> Message:
    """The message the key may see (`owner`: messages_owner), or NotFound (404)."""
    message = selectors.message_get(message_id=message_id, sent_by=owner)
    if message is None:
        raise NotFound([FieldError(None, f"No message has the id {message_id!r}.")])
    return message


@router.post(
    "/messages",
    response={202: MessageAccepted, **ERRORS},
    url_name="message_create",
    auth=ApiKeyAuth("send"),
    summary="Send a message",
    description="Accept a message for delivery and answer at once with its id and status. "
    "An `Idempotency-Key` header makes retries of the same request return the first message.",
)
def create_message(request: HttpRequest, payload: MessageIn):
    message, replayed = submit_message(request=request, data=payload, api_key=request.auth)
    return accepted_response(request, message, replayed)


@router.get(
    ONE_MESSAGE,
    response=MESSAGE_RESPONSES,
    url_name="message_get",
    auth=READ,
    summary="A message, its recipients, provider attempts and events",
)
def get_message(request: HttpRequest, message_id: str):
    return message_or_404(message_id, messages_owner(request.auth))


@router.delete(
    ONE_MESSAGE,
    response=MESSAGE_RESPONSES,
    url_name="message_cancel",
    auth=CANCEL,
    summary="Cancel a message no provider has taken yet",
    description="A queued or deferred message (one waiting for its `send_at` included) becomes "
    "`cancelled` and is never sent; the answer is the message. Once a worker is handing it to a "
    "provider (`sending`) or it is done, the answer is 409 naming its status.",
)
def cancel_message(request: HttpRequest, message_id: str):
    owner = messages_owner(request.auth)
    message = message_or_404(message_id, owner)
    try:
        message_cancel(message=message, by="api")
    except MessageStateError as err:
        raise RequestRejected(
            [
                FieldError(
                    None,
                    f"Too late to cancel: the message is {err.status or 'gone'}. Only a queued or deferred "
                    "message, which no provider has taken yet, can be cancelled.",
                )
            ],
            status=409,
        ) from None
    return selectors.message_get(message_id=message_id, sent_by=owner)


@router.get(
    "/messages",
    response={200: list[MessageSummaryOut], **ERRORS},
    url_name="message_list",
    auth=READ,
    summary="Messages, newest first, filtered and paginated",
)
@paginate(Pagination)
def list_messages(request: HttpRequest, filters: Query[MessageFilters]):
    return selectors.message_list(**filters.model_dump(), sent_by=messages_owner(request.auth))
