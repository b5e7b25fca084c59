"""SendGrid v3: `POST /v3/mail/send` (JSON, Bearer key, 202 with an empty body) and the signed
Event Webhook (a JSON list of events, echoing each personalization's custom_args, so Anymail's
`anymail_id` comes back and its tracking view sets message_id from it).

SendGrid signs each webhook post with ECDSA (P-256, SHA-256) over the timestamp header followed
by the body, and the receiver checks it with the public key SendGrid shows (Anymail's
ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY). The sandbox signs the same way with a
fixed DEVELOPMENT key pair, derived below from a published phrase: anyone can sign with it, so
it proves nothing outside development. `make run` gives the service its public key
(`DEV_VERIFICATION_KEY`). Signing uses `cryptography`, the package Anymail verifies with.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sandbox.conventions import SimulatedEvent
from sandbox.providers.base import Events, Provider, ProviderAnswer, WebhookBody, name_events, url_token
from sandbox.store import ReceivedMessage, ReceivedRecipient
from sandbox.wire import ApiRequest, ApiResponse

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


def _errors(message: str, field: str | None = None, help_anchor: str | None = None) -> dict[str, Any]:
    help_url = f"{HELP_URL}#{help_anchor}" if help_anchor else None
    return {"errors": [{"message": message, "field": field, "help": help_url}]}


class SendGrid(Provider):
    user_agent = "SendGrid Event API"
    event_names = name_events(delivered="delivered", bounced="bounce", complained="spamreport")

    def endpoint(self, request: ApiRequest) -> str | None:
        return "send" if request.path.rstrip("/") == self.prefix + "mail/send" else None

    def parse(self, request: ApiRequest, endpoint: str) -> ReceivedMessage:
        authorization = request.headers.get("Authorization") or ""
        scheme, _, key = authorization.partition(" ")
        try:
            data = request.json()
        except (ValueError, UnicodeDecodeError):
            raise ProviderAnswer(ApiResponse.json(400, _errors("Bad Request")), "body is not JSON") from None
        if not isinstance(data, dict):
            raise ProviderAnswer(ApiResponse.json(400, _errors("Bad Request")), "body is not an object")
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

    def authenticate(self, request: ApiRequest, message: ReceivedMessage) -> ApiResponse | None:
        if not message.api_key:
            return ApiResponse.json(401, _errors("authorization required"))
        return super().authenticate(request, message)

    def validate(self, request: ApiRequest, message: ReceivedMessage) -> ApiResponse | None:
        if not message.details.get("personalizations"):
            return ApiResponse.json(
                400,
                _errors(
                    "The personalizations field is required and must have at least one personalization.",
                    "personalizations",
                    "message.personalizations",
                ),
            )
        if not any(r.kind == "to" for r in message.recipients):
            return ApiResponse.json(
                400,
                _errors(
                    "The to array is required for all personalization objects, and must have at least "
                    "one email object with a valid email address.",
                    "personalizations.0.to",
                    "message.personalizations.to",
                ),
            )
        if not message.sender:
            return ApiResponse.json(
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
    ) -> ApiResponse | None:
        first = refused[0]
        return ApiResponse.json(
            400, _errors("Does not contain a valid address.", first.where, "message.personalizations.to")
        )

    def accept(self, message: ReceivedMessage) -> ApiResponse:
        x_message_id = url_token()[:22]
        message.provider_message_id = x_message_id
        for recipient in message.recipients:
            recipient.status = "queued"
            # SendGrid reports no per-recipient id; Anymail's own anymail_id is the message id.
            recipient.message_id = recipient.metadata.get("anymail_id")
        return ApiResponse(202, b"", "", {"X-Message-Id": x_message_id})

    def error_answer(self, status: int) -> ApiResponse:
        return ApiResponse.json(status, _errors(ERROR_MESSAGES.get(status, "error")))

    def unauthorized(self) -> ApiResponse:
        return ApiResponse.json(401, _errors(ERROR_MESSAGES[401]))

    def not_found(self, request: ApiRequest) -> ApiResponse:
        return ApiResponse.json(404, _errors("not found"))

    def webhook_body(
        self, message: ReceivedMessage, batch: Events, *, url: str, basic_auth: str, now: float
    ) -> WebhookBody:
        """A JSON list of every event of the message, signed as SendGrid's signed Event Webhook."""
        body = WebhookBody.json(
            [self._event(message, index, pair[0], pair[1], now) for index, pair in enumerate(batch)]
        )
        timestamp = str(int(now))
        return WebhookBody(body.data, body.content_type, signature_headers(body.data, timestamp))

    def webhook_message_id(self, message: ReceivedMessage, recipient: ReceivedRecipient) -> str:
        return recipient.message_id or _smtp_id(message)

    def _event(
        self,
        message: ReceivedMessage,
        index: int,
        recipient: ReceivedRecipient,
        event: SimulatedEvent,
        now: float,
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            # custom_args first: SendGrid merges them into the event, its own keys win.
            **dict(recipient.metadata.items()),
            "email": recipient.email,
            "timestamp": int(now),
            "event": self.event_names[event],
            "smtp-id": _smtp_id(message),
            "sg_event_id": url_token(),
            "sg_message_id": f"{message.provider_message_id or 'sandbox'}.sandbox.{index}.0",
        }
        if message.tags:
            item["category"] = list(message.tags)
        if event is SimulatedEvent.DELIVERED:
            item.update({"response": "250 2.0.0 OK (sandbox)", "ip": "127.0.0.1", "tls": 1})
        elif event is SimulatedEvent.BOUNCED:
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


def _smtp_id(message: ReceivedMessage) -> str:
    return f"<{message.provider_message_id or 'sandbox'}@sandbox.sendgrid.net>"


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


# SendGrid's signed Event Webhook ---------------------------------------------------------------

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

# DEVELOPMENT ONLY: the private key is derived from this published phrase, so it is no secret.
DEV_KEY_PHRASE = b"smtest sandbox: SendGrid event webhook signing key (development only, not a secret)"
# The order of the P-256 group: a private key is a number below it.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
DEV_PRIVATE_NUMBER = int.from_bytes(hashlib.sha256(DEV_KEY_PHRASE).digest(), "big") % (P256_ORDER - 1) + 1


@functools.cache
def _private_key(number: int) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(number, ec.SECP256R1())


def public_key(private_number: int = DEV_PRIVATE_NUMBER) -> str:
    """The public key as SendGrid shows it (base64 DER, the body of a PEM "PUBLIC KEY"): the
    value of ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY."""
    der = (
        _private_key(private_number)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode("ascii")


def sign(data: bytes, private_number: int = DEV_PRIVATE_NUMBER) -> str:
    """ECDSA-SHA256 signature of `data`, base64 DER: SendGrid's signature header."""
    signature = _private_key(private_number).sign(data, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode("ascii")


def signature_headers(
    body: bytes, timestamp: str, private_number: int = DEV_PRIVATE_NUMBER
) -> dict[str, str]:
    """The two headers of a signed post: the signature covers the timestamp, then the body."""
    return {
        SIGNATURE_HEADER: sign(timestamp.encode("ascii") + body, private_number),
        TIMESTAMP_HEADER: timestamp,
    }


DEV_VERIFICATION_KEY = public_key()
