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
import secrets
import uuid
from typing import Any
from urllib.parse import urlencode

from sandbox.conf import API_PREFIXES
from sandbox.conventions import Fate, TrackingEvent
from sandbox.providers.base import (
    HttpRequest,
    HttpResponse,
    Provider,
    ProviderAnswer,
    WebhookPost,
    WebhookSecrets,
    retry_after_headers,
    with_credentials,
)
from sandbox.store import ReceivedMessage, ReceivedRecipient

ENDPOINTS = {"messages/send.json": "send", "messages/send-template.json": "send-template"}
EVENT_NAMES = {
    TrackingEvent.DELIVERED: "send",
    TrackingEvent.BOUNCED: "hard_bounce",
    TrackingEvent.COMPLAINED: "spam",
}
STATES = {TrackingEvent.DELIVERED: "sent", TrackingEvent.BOUNCED: "bounced", TrackingEvent.COMPLAINED: "sent"}
REFUSED_STATUS = {Fate.REJECT: ("rejected", "hard-bounce"), Fate.INVALID: ("invalid", None)}


def _error(
    name: str, message: str, code: int = -1, status: int = 500, headers: dict[str, str] | None = None
) -> HttpResponse:
    """Mandrill's error body; the real API answers every error with HTTP 500."""
    body = {"status": "error", "code": code, "name": name, "message": message}
    return HttpResponse.json(status, body, headers)


def _blank(field: str) -> HttpResponse:
    detail = json.dumps({field: "Sorry, this field can't be left blank."})
    return _error("ValidationError", f"Validation error: {detail}", code=-2)


class Mandrill(Provider):
    name = "mandrill"
    prefix = API_PREFIXES["mandrill"]
    tracking_path = "/anymail/mandrill/"

    def endpoint(self, request: HttpRequest) -> str | None:
        if not request.path.startswith(self.prefix + "/"):
            return None
        return ENDPOINTS.get(request.path[len(self.prefix) + 1 :])

    def parse(self, request: HttpRequest, endpoint: str) -> ReceivedMessage:
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

    def authenticate(self, request: HttpRequest, message: ReceivedMessage) -> HttpResponse | None:
        if not message.api_key or not secrets.compare_digest(message.api_key, self.api_key):
            return self.unauthorized()
        return None

    def validate(self, request: HttpRequest, message: ReceivedMessage) -> HttpResponse | None:
        if not message.details.get("has_message"):
            return _blank("message")
        if message.endpoint == "send-template" and not message.template:
            return _blank("template_name")
        return None

    def refuse_recipients(
        self, message: ReceivedMessage, refused: list[ReceivedRecipient]
    ) -> HttpResponse | None:
        return None  # Mandrill reports refusals per recipient in its 200 answer

    def accept(self, message: ReceivedMessage) -> HttpResponse:
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
        return HttpResponse.json(200, results)

    def error(self, status: int, retry_after: int | None = None) -> HttpResponse:
        headers = retry_after_headers(retry_after)
        if status == 401:
            return _error("Invalid_Key", "Invalid API key", status=status, headers=headers)
        return _error("GeneralError", f"Sandbox fault: HTTP {status}", status=status, headers=headers)

    def unauthorized(self) -> HttpResponse:
        return _error("Invalid_Key", "Invalid API key")

    def not_found(self, request: HttpRequest) -> HttpResponse:
        return _error("Unknown_Method", f"Unknown method {request.path!r}")

    def webhook_posts(
        self,
        message: ReceivedMessage,
        events: list[tuple[ReceivedRecipient, TrackingEvent]],
        *,
        base_url: str,
        secrets: WebhookSecrets,
        now: float,
    ) -> list[WebhookPost]:
        batch = [_event(message, recipient, event, now) for recipient, event in events]
        fields = {"mandrill_events": json.dumps(batch)}
        url = self.tracking_url(base_url)
        return [
            WebhookPost(
                provider=self.name,
                url=url,
                body=urlencode(fields).encode("ascii"),
                content_type="application/x-www-form-urlencoded",
                headers={
                    "User-Agent": "Mandrill-Webhook/1.0",
                    "X-Mandrill-Signature": signature(
                        secrets.mandrill_webhook_key, with_credentials(url, secrets.basic_auth), fields
                    ),
                },
                events=[item["event"] for item in batch],
                recipients=[item["msg"]["email"] for item in batch],
                message_ids=[item["_id"] for item in batch],
            )
        ]


def signature(key: str, url: str, fields: dict[str, str]) -> str:
    """Mandrill's X-Mandrill-Signature: base64(HMAC-SHA1(key, url + name1 + value1 + ...))."""
    signed = url + "".join(name + fields[name] for name in sorted(fields))
    digest = hmac.new(key.encode("utf-8"), signed.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _event(
    message: ReceivedMessage, recipient: ReceivedRecipient, event: TrackingEvent, now: float
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
    if event is TrackingEvent.DELIVERED:
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
    elif event is TrackingEvent.BOUNCED:
        msg["bounce_description"] = "bad_mailbox"
        msg["diag"] = "smtp;550 5.1.1 The email account that you tried to reach does not exist (sandbox)"
    return {"event": EVENT_NAMES[event], "_id": recipient.message_id, "ts": int(now), "msg": msg}
