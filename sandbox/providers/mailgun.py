"""Mailgun v3: `POST /v3/<domain>/messages` (form-urlencoded, or multipart with attachments;
basic auth `api:KEY`; 200 {"id", "message": "Queued. Thank you."}) and the JSON tracking
webhook, one event per POST, signed with the webhook signing key (HMAC-SHA256 of
timestamp + token)."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from email.parser import BytesParser
from email.policy import HTTP
from email.utils import getaddresses
from typing import Any
from urllib.parse import parse_qsl, unquote

from sandbox.conf import API_PREFIXES
from sandbox.conventions import TrackingEvent
from sandbox.providers.base import (
    HttpRequest,
    HttpResponse,
    Provider,
    ProviderAnswer,
    WebhookPost,
    WebhookSecrets,
    random_token,
    retry_after_headers,
)
from sandbox.store import ReceivedMessage, ReceivedRecipient

BOUNCE_TEXT = "550 5.1.1 The email account that you tried to reach does not exist (sandbox bounce)"
ENDPOINT = re.compile(rf"^{re.escape(API_PREFIXES['mailgun'])}/(?P<domain>[^/]+)/messages/?$")
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
EVENT_NAMES = {
    TrackingEvent.DELIVERED: "delivered",
    TrackingEvent.BOUNCED: "failed",
    TrackingEvent.COMPLAINED: "complained",
}


class Mailgun(Provider):
    name = "mailgun"
    prefix = API_PREFIXES["mailgun"]
    tracking_path = "/anymail/mailgun/tracking/"

    def __init__(self, api_key: str, *, domains: tuple[str, ...] = (), **options: Any):
        super().__init__(api_key, **options)
        self.domains = frozenset(domain.lower() for domain in domains)

    def endpoint(self, request: HttpRequest) -> str | None:
        return "send" if ENDPOINT.match(request.path) else None

    def parse(self, request: HttpRequest, endpoint: str) -> ReceivedMessage:
        match = ENDPOINT.match(request.path)
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

    def authenticate(self, request: HttpRequest, message: ReceivedMessage) -> HttpResponse | None:
        if message.api_key is None or not secrets.compare_digest(message.api_key, self.api_key):
            return self.unauthorized()
        return None

    def validate(self, request: HttpRequest, message: ReceivedMessage) -> HttpResponse | None:
        if self.domains and (message.domain or "").lower() not in self.domains:
            return HttpResponse.json(404, {"message": f"Domain not found: {message.domain}"})
        if not message.sender:
            return HttpResponse.json(400, {"message": "from parameter is missing"})
        if not any(recipient.kind == "to" for recipient in message.recipients):
            return HttpResponse.json(400, {"message": "to parameter is missing"})
        return None

    def refuse_recipients(
        self, message: ReceivedMessage, refused: list[ReceivedRecipient]
    ) -> HttpResponse | None:
        kind = refused[0].kind
        return HttpResponse.json(
            400, {"message": f"{kind} parameter is not a valid address. please check documentation"}
        )

    def accept(self, message: ReceivedMessage) -> HttpResponse:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        message_id = f"<{stamp}.{random_token(8)}@{message.domain}>"
        message.provider_message_id = message_id
        for recipient in message.recipients:
            recipient.status = "queued"
            recipient.message_id = message_id
        return HttpResponse.json(200, {"id": message_id, "message": "Queued. Thank you."})

    def error(self, status: int, retry_after: int | None = None) -> HttpResponse:
        if status == 401:
            return HttpResponse.text(401, "Forbidden", retry_after_headers(retry_after))
        return HttpResponse.json(
            status, {"message": ERROR_MESSAGES.get(status, "Error")}, retry_after_headers(retry_after)
        )

    def unauthorized(self) -> HttpResponse:
        return HttpResponse.text(401, "Forbidden")

    def not_found(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(404, {"message": "Invalid URL"})

    def webhook_posts(
        self,
        message: ReceivedMessage,
        events: list[tuple[ReceivedRecipient, TrackingEvent]],
        *,
        base_url: str,
        secrets: WebhookSecrets,
        now: float,
    ) -> list[WebhookPost]:
        posts = []
        for recipient, event in events:
            body = {
                "signature": _signature(secrets.mailgun_signing_key, now),
                "event-data": _event_data(message, recipient, event, now),
            }
            posts.append(
                WebhookPost(
                    provider=self.name,
                    url=self.tracking_url(base_url),
                    body=json.dumps(body).encode("utf-8"),
                    content_type="application/json",
                    headers={"User-Agent": "mailgun/treq-16.12.0"},
                    events=[body["event-data"]["event"]],
                    recipients=[recipient.email],
                    message_ids=[message.provider_message_id or ""],
                )
            )
        return posts


def _signature(signing_key: str, now: float) -> dict[str, str]:
    """Mailgun's signature block: HMAC-SHA256 (hex) of timestamp + token with the signing key."""
    timestamp = str(int(now))
    token = random_token(25)  # 50 hex characters, unique per event (Anymail's event_id)
    signature = hmac.new(signing_key.encode("utf-8"), f"{timestamp}{token}".encode("ascii"), hashlib.sha256)
    return {"timestamp": timestamp, "token": token, "signature": signature.hexdigest()}


def _event_data(
    message: ReceivedMessage, recipient: ReceivedRecipient, event: TrackingEvent, now: float
) -> dict[str, Any]:
    # Mailgun's events carry the Message-Id header without angle brackets.
    header_id = (message.provider_message_id or "").strip("<>")
    data: dict[str, Any] = {
        "id": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode("ascii").rstrip("="),
        "timestamp": round(now, 6),
        "event": EVENT_NAMES[event],
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
    if event is TrackingEvent.DELIVERED:
        data["log-level"] = "info"
        data["delivery-status"] = {
            "code": 250,
            "message": "OK",
            "description": "",
            "attempt-no": 1,
            "tls": True,
            "mx-host": "sandbox.invalid",
        }
    elif event is TrackingEvent.BOUNCED:
        data.update({"log-level": "error", "severity": "permanent", "reason": "bounce"})
        data["delivery-status"] = {
            "code": 550,
            "message": BOUNCE_TEXT,
            "description": "",
            "attempt-no": 1,
            "tls": True,
            "mx-host": "sandbox.invalid",
        }
    else:
        data["log-level"] = "warn"
    return data


def _form_fields(request: HttpRequest) -> dict[str, list[str]]:
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
        raise ProviderAnswer(HttpResponse.json(400, {"message": "Bad Request"}), "unreadable form") from None
    return fields


def _first(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values else None


def _first_address(values: list[str]) -> str | None:
    addresses = [email for _, email in getaddresses(values) if email]
    return addresses[0] if addresses else None


def _basic_auth_password(request: HttpRequest) -> str | None:
    """The KEY of `Authorization: Basic base64(api:KEY)`; None when absent or another user."""
    scheme, _, encoded = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return password if user == "api" else None
