"""Mailgun v3: `POST /v3/<domain>/messages` (form-urlencoded, or multipart with attachments;
basic auth `api:KEY`; 200 {"id", "message": "Queued. Thank you."}) and the JSON tracking
webhook, one event per POST, signed with the webhook signing key (HMAC-SHA256 of
timestamp + token)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from email.parser import BytesParser
from email.policy import HTTP
from email.utils import getaddresses
from typing import Any
from urllib.parse import parse_qsl, unquote

from sandbox.conventions import SimulatedEvent
from sandbox.providers.base import Events, Provider, ProviderAnswer, WebhookBody, name_events, url_token
from sandbox.store import ReceivedMessage, ReceivedRecipient
from sandbox.wire import ApiRequest, ApiResponse

BOUNCE_TEXT = "550 5.1.1 The email account that you tried to reach does not exist (sandbox bounce)"
ERROR_MESSAGES = {
    400: "Bad Request",
    402: "Request failed",
    404: "Not Found",
    413: "Request Entity Too Large",
    429: "Too many requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Mailgun(Provider):
    user_agent = "mailgun/treq-16.12.0"
    event_names = name_events(delivered="delivered", bounced="failed", complained="complained")
    post_per_event = True

    def endpoint(self, request: ApiRequest) -> str | None:
        return "send" if self._match(request) else None

    def _match(self, request: ApiRequest) -> re.Match[str] | None:
        return re.match(rf"^{re.escape(self.prefix)}/(?P<domain>[^/]+)/messages/?$", request.path)

    def parse(self, request: ApiRequest, endpoint: str) -> ReceivedMessage:
        match = self._match(request)
        assert match is not None  # endpoint() said so
        fields = _form_fields(request)
        message = ReceivedMessage(
            provider=self.name,
            endpoint=endpoint,
            sender=_first_address(fields.get("from", [])),
            subject=_first(fields, "subject"),
            tags=fields.get("o:tag", []),
            metadata={key[2:]: values[-1] for key, values in fields.items() if key.startswith("v:")},
            template=_first(fields, "template"),
            domain=unquote(match.group("domain")),
            api_key=_basic_auth_password(request),
        )
        for kind in ("to", "cc", "bcc"):
            for index, (_, email) in enumerate(getaddresses(fields.get(kind, []))):
                if email:
                    recipient = ReceivedRecipient(email=email, kind=kind, where=f"{kind}[{index}]")
                    message.recipients.append(recipient)
        return message

    def validate(self, request: ApiRequest, message: ReceivedMessage) -> ApiResponse | None:
        if self.sender_domains and (message.domain or "").lower() not in self.sender_domains:
            return ApiResponse.json(404, {"message": f"Domain not found: {message.domain}"})
        if not message.sender:
            return ApiResponse.json(400, {"message": "from parameter is missing"})
        if not any(recipient.kind == "to" for recipient in message.recipients):
            return ApiResponse.json(400, {"message": "to parameter is missing"})
        return None

    def refuse_recipients(
        self, message: ReceivedMessage, refused: list[ReceivedRecipient]
    ) -> ApiResponse | None:
        kind = refused[0].kind
        return ApiResponse.json(
            400, {"message": f"{kind} parameter is not a valid address. please check documentation"}
        )

    def accept(self, message: ReceivedMessage) -> ApiResponse:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        message_id = f"<{stamp}.{secrets.token_hex(8)}@{message.domain}>"
        message.provider_message_id = message_id
        for recipient in message.recipients:
            recipient.status = "queued"
            recipient.message_id = message_id
        return ApiResponse.json(200, {"id": message_id, "message": "Queued. Thank you."})

    def error_answer(self, status: int) -> ApiResponse:
        if status == 401:
            return self.unauthorized()
        return ApiResponse.json(status, {"message": ERROR_MESSAGES.get(status, "Error")})

    def unauthorized(self) -> ApiResponse:
        return ApiResponse.text(401, "Forbidden")

    def not_found(self, request: ApiRequest) -> ApiResponse:
        return ApiResponse.json(404, {"message": "Invalid URL"})

    def webhook_body(
        self, message: ReceivedMessage, batch: Events, *, url: str, basic_auth: str, now: float
    ) -> WebhookBody:
        """One event (`post_per_event`) with its signature block."""
        ((recipient, event),) = batch
        return WebhookBody.json(
            {
                "signature": _signature(self.webhook_key, now),
                "event-data": self._event_data(message, recipient, event, now),
            }
        )

    def _event_data(
        self, message: ReceivedMessage, recipient: ReceivedRecipient, event: SimulatedEvent, now: float
    ) -> dict[str, Any]:
        # Mailgun's events carry the Message-Id header without angle brackets.
        header_id = (message.provider_message_id or "").strip("<>")
        data: dict[str, Any] = {
            "id": url_token(),
            "timestamp": round(now, 6),
            "event": self.event_names[event],
            "recipient": recipient.email,
            "recipient-domain": recipient.email.rsplit("@", 1)[-1],
            "tags": list(message.tags),
            "user-variables": dict(message.metadata),
            "envelope": {"sender": message.sender or "", "targets": recipient.email, "transport": "smtp"},
            "message": {
                "headers": {
                    "message-id": header_id,
                    "from": message.sender or "",
                    "to": recipient.email,
                    "subject": message.subject or "",
                },
                "attachments": [],
                "size": 0,
            },
            "flags": {"is-authenticated": True, "is-test-mode": False},
        }
        if event is SimulatedEvent.DELIVERED:
            data["log-level"] = "info"
            data["delivery-status"] = _delivery_status(250, "OK")
        elif event is SimulatedEvent.BOUNCED:
            data.update({"log-level": "error", "severity": "permanent", "reason": "bounce"})
            data["delivery-status"] = _delivery_status(550, BOUNCE_TEXT)
        else:
            data["log-level"] = "warn"
        return data


def _delivery_status(code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "description": "",
        "attempt-no": 1,
        "tls": True,
        "mx-host": "sandbox.invalid",
    }


def _signature(signing_key: str, now: float) -> dict[str, str]:
    """Mailgun's signature block: HMAC-SHA256 (hex) of timestamp + token with the signing key."""
    timestamp = str(int(now))
    token = secrets.token_hex(25)  # 50 hex characters, unique per event (Anymail's event_id)
    signature = hmac.new(signing_key.encode("utf-8"), f"{timestamp}{token}".encode("ascii"), hashlib.sha256)
    return {"timestamp": timestamp, "token": token, "signature": signature.hexdigest()}


def _form_fields(request: ApiRequest) -> dict[str, list[str]]:
    """Every non-file form field with all its values, from urlencoded or multipart bodies."""
    fields: dict[str, list[str]] = {}
    try:
        if request.content_type == "multipart/form-data":
            head = f"Content-Type: {request.headers.get('Content-Type')}\r\n\r\n".encode("latin-1")
            parsed = BytesParser(policy=HTTP).parsebytes(head + request.body)
            if not parsed.is_multipart():
                raise ValueError("not multipart")
            for part in parsed.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if not name or part.get_filename():
                    continue  # attachments are not kept
                payload = part.get_payload(decode=True) or b""
                fields.setdefault(str(name), []).append(payload.decode("utf-8"))
        else:
            for name, value in parse_qsl(request.body.decode("utf-8"), keep_blank_values=True):
                fields.setdefault(name, []).append(value)
    except (ValueError, UnicodeDecodeError):
        raise ProviderAnswer(ApiResponse.json(400, {"message": "Bad Request"}), "unreadable form") from None
    return fields


def _first(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values else None


def _first_address(values: list[str]) -> str | None:
    addresses = [email for _, email in getaddresses(values) if email]
    return addresses[0] if addresses else None


def _basic_auth_password(request: ApiRequest) -> str | None:
    """The KEY of `Authorization: Basic base64(api:KEY)`; None when absent or another user."""
    scheme, _, encoded = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return password if user == "api" else None
