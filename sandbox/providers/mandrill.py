"""Mandrill (Mailchimp Transactional) 1.0: `POST /api/1.0/messages/send.json` and
`send-template.json` (JSON with the key in the body; 200 with one result per recipient; every
error is HTTP 500 with {"status": "error", "code", "name", "message"}) and the webhook (a form
post of `mandrill_events`, signed with X-Mandrill-Signature: base64 HMAC-SHA1 of the exact URL,
credentials included, followed by each POST field's name and value in sorted order).

Mandrill has no "delivered" event: a message handed to the recipient's server is a "send"
event, which Anymail reports as `sent`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from sandbox.conventions import Fate, SimulatedEvent
from sandbox.providers.base import Events, Provider, ProviderAnswer, WebhookBody, name_events
from sandbox.store import ReceivedMessage, ReceivedRecipient
from sandbox.wire import ApiRequest, ApiResponse

ENDPOINTS = {"messages/send.json": "send", "messages/send-template.json": "send-template"}
STATES = {
    SimulatedEvent.DELIVERED: "sent",
    SimulatedEvent.BOUNCED: "bounced",
    SimulatedEvent.COMPLAINED: "sent",
}
REFUSED_STATUS = {Fate.REJECT: ("rejected", "hard-bounce"), Fate.INVALID: ("invalid", None)}


def _error(name: str, message: str, code: int = -1, status: int = 500) -> ApiResponse:
    """Mandrill's error body; the real API answers every error with HTTP 500."""
    return ApiResponse.json(status, {"status": "error", "code": code, "name": name, "message": message})


def _blank(field: str) -> ApiResponse:
    detail = json.dumps({field: "Sorry, this field can't be left blank."})
    return _error("ValidationError", f"Validation error: {detail}", code=-2)


class Mandrill(Provider):
    user_agent = "Mandrill-Webhook/1.0"
    # No "delivered": a message handed to the recipient's server is a "send" (Anymail: sent).
    event_names = name_events(delivered="send", bounced="hard_bounce", complained="spam")

    def endpoint(self, request: ApiRequest) -> str | None:
        if not request.path.startswith(self.prefix + "/"):
            return None
        return ENDPOINTS.get(request.path[len(self.prefix) + 1 :])

    def parse(self, request: ApiRequest, endpoint: str) -> ReceivedMessage:
        try:
            data = request.json()
        except (ValueError, UnicodeDecodeError):
            raise ProviderAnswer(
                _error("ValidationError", "Validation error: the request body is not valid JSON", code=-2),
                "body is not JSON",
            ) from None
        if not isinstance(data, dict):
            refusal = _error("ValidationError", "Validation error: expected an object", code=-2)
            raise ProviderAnswer(refusal, "not an object")
        body = data.get("message") if isinstance(data.get("message"), dict) else {}
        message = ReceivedMessage(
            provider=self.name,
            endpoint=endpoint,
            sender=body.get("from_email"),
            subject=body.get("subject"),
            tags=[str(tag) for tag in body.get("tags") or []],
            metadata=dict(body.get("metadata") or {}),
            template=data.get("template_name"),
            api_key=data.get("key") if isinstance(data.get("key"), str) else None,
        )
        per_recipient = {
            str(item.get("rcpt", "")).lower(): dict(item.get("values") or {})
            for item in body.get("recipient_metadata") or []
            if isinstance(item, dict)
        }
        for index, item in enumerate(body.get("to") or []):
            if not isinstance(item, dict) or not item.get("email"):
                continue
            email = str(item["email"])
            message.recipients.append(
                ReceivedRecipient(
                    email=email,
                    kind=str(item.get("type") or "to"),
                    metadata=per_recipient.get(email.lower(), {}),
                    where=f"message.to[{index}]",
                )
            )
        mode = "scheduled" if data.get("send_at") else "queued" if data.get("async") else "sent"
        message.details["send_mode"] = mode
        message.details["has_message"] = isinstance(data.get("message"), dict)
        return message

    def validate(self, request: ApiRequest, message: ReceivedMessage) -> ApiResponse | None:
        if not message.details.get("has_message"):
            return _blank("message")
        if message.endpoint == "send-template" and not message.template:
            return _blank("template_name")
        return None

    def refuse_recipients(
        self, message: ReceivedMessage, refused: list[ReceivedRecipient]
    ) -> ApiResponse | None:
        return None  # Mandrill reports refusals per recipient in its 200 answer

    def accept(self, message: ReceivedMessage) -> ApiResponse:
        results = []
        for recipient in message.recipients:
            recipient.message_id = uuid.uuid4().hex
            if recipient.refused:
                recipient.status, recipient.reject_reason = REFUSED_STATUS[recipient.fate]
            else:
                recipient.status = message.details.get("send_mode", "sent")
            results.append(
                {
                    "email": recipient.email,
                    "status": recipient.status,
                    "_id": recipient.message_id,
                    "reject_reason": recipient.reject_reason,
                }
            )
        return ApiResponse.json(200, results)

    def error_answer(self, status: int) -> ApiResponse:
        if status == 401:
            return _error("Invalid_Key", "Invalid API key", status=status)
        return _error("GeneralError", f"Sandbox fault: HTTP {status}", status=status)

    def unauthorized(self) -> ApiResponse:
        return _error("Invalid_Key", "Invalid API key")

    def not_found(self, request: ApiRequest) -> ApiResponse:
        return _error("Unknown_Method", f"Unknown method {request.path!r}")

    def webhook_body(
        self, message: ReceivedMessage, batch: Events, *, url: str, basic_auth: str, now: float
    ) -> WebhookBody:
        """The form field `mandrill_events`, signed for the URL as Anymail rebuilds it."""
        events = [self._event(message, recipient, event, now) for recipient, event in batch]
        fields = {"mandrill_events": json.dumps(events)}
        return WebhookBody(
            urlencode(fields).encode("ascii"),
            "application/x-www-form-urlencoded",
            {"X-Mandrill-Signature": signature(self.webhook_key, with_credentials(url, basic_auth), fields)},
        )

    def _event(
        self, message: ReceivedMessage, recipient: ReceivedRecipient, event: SimulatedEvent, now: float
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "ts": int(message.received_at or now),
            "_id": recipient.message_id,
            "state": STATES[event],
            "subject": message.subject,
            "email": recipient.email,
            "sender": message.sender,
            "tags": list(message.tags),
            "metadata": {**message.metadata, **recipient.metadata},
            "opens": [],
            "clicks": [],
            "_version": uuid.uuid4().hex[:22],
        }
        if event is SimulatedEvent.DELIVERED:
            msg["smtp_events"] = [
                {
                    "ts": int(now),
                    "type": "sent",
                    "diag": "250 2.0.0 OK (sandbox)",
                    "source_ip": "127.0.0.1",
                    "destination_ip": "127.0.0.1",
                    "size": 0,
                }
            ]
        elif event is SimulatedEvent.BOUNCED:
            msg["bounce_description"] = "bad_mailbox"
            msg["diag"] = "smtp;550 5.1.1 The email account that you tried to reach does not exist (sandbox)"
        return {"event": self.event_names[event], "_id": recipient.message_id, "ts": int(now), "msg": msg}


def signature(key: str, url: str, fields: dict[str, str]) -> str:
    """Mandrill's X-Mandrill-Signature: base64(HMAC-SHA1(key, url + name1 + value1 + ...))."""
    signed = url + "".join(name + fields[name] for name in sorted(fields))
    digest = hmac.new(key.encode("utf-8"), signed.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def with_credentials(url: str, basic_auth: str) -> str:
    """`http://user:pass@host/path`: the URL as Anymail's get_request_uri rebuilds it."""
    if not basic_auth:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{basic_auth}@{parts.netloc}", parts.path, parts.query, parts.fragment))
