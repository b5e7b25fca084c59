"""The contract every simulated provider fulfils, and the plain HTTP values they exchange.

A provider knows its wire formats only: how its send request looks, how it answers (success,
errors, refused recipients), and how its tracking webhooks look and are signed. Faults,
storage and scheduling live elsewhere (`sandbox.sending`, `sandbox.webhooks`).
"""
from __future__ import annotations

import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from sandbox.conventions import TrackingEvent
from sandbox.exceptions import SandboxError
from sandbox.store import ReceivedMessage, ReceivedRecipient


@dataclass
class HttpRequest:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: Mapping[str, str]  # case-insensitive (an email.message.Message)
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any, headers: dict[str, str] | None = None) -> HttpResponse:
        return cls(status, json.dumps(data).encode("utf-8"), "application/json", dict(headers or {}))

    @classmethod
    def text(cls, status: int, text: str, headers: dict[str, str] | None = None) -> HttpResponse:
        return cls(status, text.encode("utf-8"), "text/plain; charset=utf-8", dict(headers or {}))


class ProviderAnswer(SandboxError):
    """Raised while reading a request to answer it at once with the provider's own error."""

    def __init__(self, response: HttpResponse, reason: str):
        self.response = response
        super().__init__(reason)


@dataclass(frozen=True)
class WebhookSecrets:
    """The secrets the service's Anymail settings hold; the sandbox signs with the same."""

    basic_auth: str = ""  # Anymail WEBHOOK_SECRET, "user:password"; empty: no basic auth
    mailgun_signing_key: str = ""
    mandrill_webhook_key: str = ""


@dataclass
class WebhookPost:
    """One HTTP POST to the service, signed, ready to send."""

    provider: str
    url: str  # without credentials
    body: bytes
    content_type: str
    headers: dict[str, str]
    events: list[str]  # the provider's own event names, for the history
    recipients: list[str]
    message_ids: list[str]


def with_credentials(url: str, basic_auth: str) -> str:
    """`http://user:pass@host/path`: the URL as Anymail's get_request_uri rebuilds it."""
    if not basic_auth:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{basic_auth}@{parts.netloc}", parts.path, parts.query, parts.fragment))


def random_token(nbytes: int = 16) -> str:
    return secrets.token_hex(nbytes)


class Provider(ABC):
    """One simulated ESP. Subclasses set the class attributes and implement the wire formats."""

    name: ClassVar[str]
    prefix: ClassVar[str]  # the API's path prefix (Anymail's API URL ends with it)
    tracking_path: ClassVar[str]  # Anymail's tracking webhook path on the service

    def __init__(self, api_key: str, **options: Any):
        self.api_key = api_key
        self.options = options

    # Reading a send request -------------------------------------------------------------

    @abstractmethod
    def endpoint(self, request: HttpRequest) -> str | None:
        """The send endpoint this path names ("send", "send-template"), or None (a 404)."""

    @abstractmethod
    def parse(self, request: HttpRequest, endpoint: str) -> ReceivedMessage:
        """Decode the request (raise ProviderAnswer for one the real API would refuse as malformed)."""

    @abstractmethod
    def authenticate(self, request: HttpRequest, message: ReceivedMessage) -> HttpResponse | None:
        """None when the request carries the configured key, else the provider's answer to a bad key."""

    def validate(self, request: HttpRequest, message: ReceivedMessage) -> HttpResponse | None:
        """Provider-specific refusals after authentication (Mailgun's unknown domain)."""
        return None

    # Answering --------------------------------------------------------------------------

    @abstractmethod
    def refuse_recipients(
        self, message: ReceivedMessage, refused: list[ReceivedRecipient]
    ) -> HttpResponse | None:
        """The answer when some recipients are refused: an error response for APIs that refuse
        the whole request (SendGrid, Mailgun), None for those that report per recipient."""

    @abstractmethod
    def accept(self, message: ReceivedMessage) -> HttpResponse:
        """Assign provider message ids (and per-recipient statuses) and build the success answer."""

    @abstractmethod
    def error(self, status: int, retry_after: int | None = None) -> HttpResponse:
        """An injected error answer, in the provider's error format."""

    @abstractmethod
    def unauthorized(self) -> HttpResponse:
        """The provider's answer to a wrong or revoked API key."""

    @abstractmethod
    def not_found(self, request: HttpRequest) -> HttpResponse:
        """The provider's answer to a path it does not serve."""

    # Tracking webhooks ------------------------------------------------------------------

    @abstractmethod
    def webhook_posts(
        self,
        message: ReceivedMessage,
        events: list[tuple[ReceivedRecipient, TrackingEvent]],
        *,
        base_url: str,
        secrets: WebhookSecrets,
        now: float,
    ) -> list[WebhookPost]:
        """The signed POSTs that report `events` to the service at `base_url`."""

    def tracking_url(self, base_url: str) -> str:
        return base_url.rstrip("/") + self.tracking_path


def retry_after_headers(retry_after: int | None) -> dict[str, str]:
    return {"Retry-After": str(retry_after)} if retry_after is not None else {}
