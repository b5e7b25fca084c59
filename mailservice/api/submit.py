"""The one path every submission takes (the API and the send URL): validate, check the
Idempotency-Key, store, enqueue."""

from __future__ import annotations

import re

from django.http import HttpRequest, JsonResponse

from mailservice.addresses import AddressError, parse_address
from mailservice.exceptions import FieldError, InvalidRequest
from mailservice.models import ApiKey, Message
from mailservice.schemas import MessageIn, message_accepted
from mailservice.services.keys import api_key_sender_allowed
from mailservice.services.messages import message_accept, request_fingerprint
from mailservice.validation import check_message

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def idempotency_key(request: HttpRequest) -> str | None:
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if not IDEMPOTENCY_KEY.match(value):
        raise InvalidRequest(
            [FieldError(None, "The Idempotency-Key header must be 1 to 255 printable ASCII characters.")]
        )
    return value


def submit_message(*, request: HttpRequest, data: MessageIn, api_key: ApiKey) -> tuple[Message, bool]:
    key = idempotency_key(request)
    draft = check_message(data)
    check_sender(api_key=api_key, from_email=draft.from_email)
    fingerprint = None
    if key:
        fingerprint = request_fingerprint(data.model_dump(mode="json", by_alias=True, exclude_defaults=True))
    return message_accept(draft=draft, api_key=api_key, idempotency_key=key, request_hash=fingerprint)


def check_sender(*, api_key: ApiKey, from_email: str) -> None:
    """422 on `from` when the key is limited to sender domains and this sender (the default
    sender when the request names none) is not in one of them."""
    if not api_key.from_domain_list:
        return
    try:
        addr_spec = parse_address(from_email).addr_spec
    except AddressError:
        addr_spec = from_email
    if not api_key_sender_allowed(api_key=api_key, addr_spec=addr_spec):
        allowed = ", ".join(api_key.from_domain_list)
        raise InvalidRequest(
            [FieldError("from", f"This API key may send only from these domains: {allowed}.")]
        )


def accepted_response(request: HttpRequest, message: Message, replayed: bool) -> JsonResponse:
    body = message_accepted(request, message)
    response = JsonResponse(body, status=202)
    response["Location"] = body["url"]
    if replayed:
        response["Idempotent-Replayed"] = "true"
    return response
