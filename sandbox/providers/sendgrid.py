"""SendGrid v3: `POST /v3/mail/send` (JSON, Bearer key, 202 with an empty body) and the Event
Webhook (a JSON list of events, echoing each personalization's custom_args, so Anymail's
`anymail_id` comes back and its tracking view sets message_id from it)."""
from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from sandbox.conf import API_PREFIXES
from sandbox.conventions import TrackingEvent
from sandbox.providers.base import (
    HttpRequest,
    HttpResponse,
    Provider,
    ProviderAnswer,
    WebhookPost,
    WebhookSecrets,
    retry_after_headers,
)
from sandbox.store import ReceivedMessage, ReceivedRecipient

HELP_URL = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
ERROR_MESSAGES = {
    400: "Bad Request",
    401: "The provided authorization grant is invalid, expired, or revoked",
    403: "access forbidden",
    404: "not found",
    413: "request entity too large",
    429: "too many requests",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}
EVENT_NAMES = {
    TrackingEvent.DELIVERED: "delivered",
    TrackingEvent.BOUNCED: "bounce",
    TrackingEvent.COMPLAINED: "spamreport",
}


def _errors(message: str, field: str | None = None, help_anchor: str | None = None) -> dict[str, Any]:
    help_url = f"{HELP_URL}#{help_anchor}" if help_anchor else None
    return {"errors": [{"message": message, "field": field, "help": help_url}]}


class SendGrid(Provider):
    name = "sendgrid"
    prefix = API_PREFIXES["sendgrid"]
    tracking_path = "/anymail/sendgrid/tracking/"

    def endpoint(self, request: HttpRequest) -> str | None:
        return "send" if request.path.rstrip("/") == self.prefix + "mail/send" else None

    def parse(self, request: HttpRequest, endpoint: str) -> ReceivedMessage:
        authorization = request.headers.get("Authorization") or ""
        scheme, _, key = authorization.partition(" ")
        try:
            data = request.json()
        except (ValueError, UnicodeDecodeError):
            raise ProviderAnswer(HttpResponse.json(400, _errors("Bad Request")), "body is not JSON") from None
        if not isinstance(data, dict):
            raise ProviderAnswer(HttpResponse.json(400, _errors("Bad Request")), "body is not an object")
        message = ReceivedMessage(
            provider=self.name,
            endpoint=endpoint,
            sender=(data.get("from") or {}).get("email") if isinstance(data.get("from"), dict) else None,
            subject=data.get("subject"),
            tags=_as_list(data.get("categories")),
            metadata=dict(data.get("custom_args") or {}),
            template=data.get("template_id"),
            api_key=key if scheme.lower() == "bearer" else None,
        )
        message_args = data.get("custom_args") or {}
        personalizations = data.get("personalizations")
        if not isinstance(personalizations, list):
            personalizations = []
        message.details["personalizations"] = len(personalizations)
        for p_index, personalization in enumerate(personalizations):
            if not isinstance(personalization, dict):
                continue
            args = {**message_args, **(personalization.get("custom_args") or {})}
            if message.subject is None and personalization.get("subject"):
                message.subject = personalization["subject"]
            for kind in ("to", "cc", "bcc"):
                for r_index, address in enumerate(personalization.get(kind) or []):
                    email = address.get("email") if isinstance(address, dict) else None
                    message.recipients.append(
                        ReceivedRecipient(
                            email=str(email or ""),
                            kind=kind,
                            metadata=dict(args),
                            where=f"personalizations.{p_index}.{kind}.{r_index}.email",
                        )
                    )
        return message

    def authenticate(self, request: HttpRequest, message: ReceivedMessage) -> HttpResponse | None:
        if not message.api_key:
            return HttpResponse.json(401, _errors("authorization required"))
        if not secrets.compare_digest(message.api_key, self.api_key):
            return self.unauthorized()
        return None

    def validate(self, request: HttpRequest, message: ReceivedMessage) -> HttpResponse | None:
        if not message.details.get("personalizations"):
            return HttpResponse.json(
                400,
                _errors(
                    "The personalizations field is required and must have at least one personalization.",
                    "personalizations",
                    "message.personalizations",
                ),
            )
        if not any(r.kind == "to" for r in message.recipients):
            return HttpResponse.json(
                400,
                _errors(
                    "The to array is required for all personalization objects, and must have at least "
                    "one email object with a valid email address.",
                    "personalizations.0.to",
                    "message.personalizations.to",
                ),
            )
        if not message.sender:
            return HttpResponse.json(
                400,
                _errors(
                    "The from object must be provided for every email send. It is an object that requires "
                    "the email parameter, but may also contain a name parameter.",
                    "from",
                    "message.from",
                ),
            )
        return None

    def refuse_recipients(
        self, message: ReceivedMessage, refused: list[ReceivedRecipient]
    ) -> HttpResponse | None:
        first = refused[0]
        return HttpResponse.json(
            400, _errors("Does not contain a valid address.", first.where, "message.personalizations.to")
        )

    def accept(self, message: ReceivedMessage) -> HttpResponse:
        x_message_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode("ascii").rstrip("=")[:22]
        message.provider_message_id = x_message_id
        for recipient in message.recipients:
            recipient.status = "queued"
            # SendGrid reports no per-recipient id; Anymail's own anymail_id is the message id.
            recipient.message_id = recipient.metadata.get("anymail_id")
        return HttpResponse(202, b"", "", {"X-Message-Id": x_message_id})

    def error(self, status: int, retry_after: int | None = None) -> HttpResponse:
        return HttpResponse.json(
            status, _errors(ERROR_MESSAGES.get(status, "error")), retry_after_headers(retry_after)
        )

    def unauthorized(self) -> HttpResponse:
        return HttpResponse.json(401, _errors(ERROR_MESSAGES[401]))

    def not_found(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(404, _errors("not found"))

    def webhook_posts(
        self,
        message: ReceivedMessage,
        events: list[tuple[ReceivedRecipient, TrackingEvent]],
        *,
        base_url: str,
        secrets: WebhookSecrets,
        now: float,
    ) -> list[WebhookPost]:
        payload = [
            self._event(message, index, recipient, event, now)
            for index, (recipient, event) in enumerate(events)
        ]
        return [
            WebhookPost(
                provider=self.name,
                url=self.tracking_url(base_url),
                body=json.dumps(payload).encode("utf-8"),
                content_type="application/json",
                headers={"User-Agent": "SendGrid Event API"},
                events=[item["event"] for item in payload],
                recipients=[item["email"] for item in payload],
                message_ids=[str(item.get("anymail_id") or item["smtp-id"]) for item in payload],
            )
        ]

    def _event(
        self,
        message: ReceivedMessage,
        index: int,
        recipient: ReceivedRecipient,
        event: TrackingEvent,
        now: float,
    ) -> dict[str, Any]:
        x_message_id = message.provider_message_id or "sandbox"
        item: dict[str, Any] = {
            # custom_args first: SendGrid merges them into the event, its own keys win.
            **{key: value for key, value in recipient.metadata.items()},
            "email": recipient.email,
            "timestamp": int(now),
            "event": EVENT_NAMES[event],
            "smtp-id": f"<{x_message_id}@sandbox.sendgrid.net>",
            "sg_event_id": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode("ascii").rstrip("="),
            "sg_message_id": f"{x_message_id}.sandbox.{index}.0",
        }
        if message.tags:
            item["category"] = list(message.tags)
        if event is TrackingEvent.DELIVERED:
            item.update({"response": "250 2.0.0 OK (sandbox)", "ip": "127.0.0.1", "tls": 1})
        elif event is TrackingEvent.BOUNCED:
            item.update(
                {
                    "type": "bounce",
                    "status": "5.1.1",
                    "reason": "550 5.1.1 The email account that you tried to reach does not exist (sandbox)",
                    "ip": "127.0.0.1",
                    "tls": 1,
                }
            )
        return item


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]
