"""The contract every simulated provider fulfils, and the table entry that describes one.

A provider class knows its wire formats only: how its send request looks, how it answers
(success, errors, refused recipients), and how its tracking webhooks look and are signed.
Faults, storage and scheduling live elsewhere (`sandbox.receiving`, `sandbox.webhooks`). What the
rest of the sandbox needs to know about a provider (its name, API prefix, default key, the
Anymail settings that point at it) is its `ProviderSpec`, one entry of
`sandbox.providers.PROVIDERS`: adding a provider is one entry there plus one class here.
"""

from __future__ import annotations

import base64
import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sandbox.conventions import SimulatedEvent
from sandbox.exceptions import SandboxError
from sandbox.store import ReceivedMessage, ReceivedRecipient
from sandbox.wire import ApiRequest, ApiResponse

Events = list[tuple[ReceivedRecipient, SimulatedEvent]]


@dataclass(frozen=True)
class WebhookKey:
    """The key that signs a provider's webhooks beyond basic auth, as Anymail's settings name it."""

    setting: str  # Anymail's setting; SANDBOX_<setting> sets the sandbox's key
    default: str  # a published development value (docs/sandbox.md), not a secret
    api_key_fallback: bool = False  # Anymail checks with the API key when the setting is absent

    @property
    def variable(self) -> str:
        return f"SANDBOX_{self.setting}"


@dataclass(frozen=True)
class ProviderSpec:
    """One provider of the sandbox. Its upper-case name prefixes Anymail's API URL setting
    (`<NAME>_API_URL`) and the sandbox's variables (`SANDBOX_<NAME>_PORT`...); the lower-case
    name is its CLI flags' (`--<name>-port`), fault and control API name. Anymail names each
    ESP's credential its own way (`SENDGRID_API_KEY`, `POSTMARK_SERVER_TOKEN`), so the spec
    states it."""

    name: str
    provider_class: type[Provider]
    api_prefix: str  # the path its API lives under on its own port; Anymail's API URL ends with it
    default_api_key: str  # a published development value (docs/sandbox.md), not a secret
    tracking_path: str  # Anymail's tracking webhook path on the service
    api_key_setting: str  # Anymail's credential setting, without the ANYMAIL_ prefix
    webhook_key: WebhookKey | None = None  # None: only basic auth protects its webhooks
    # Anymail's sender-domain setting, for an API whose URL names the sending domain: then the
    # sandbox can be told which domains exist (--<name>-domain, SANDBOX_<NAME>_DOMAINS).
    sender_domain_setting: str = ""
    # Anymail settings under which the service would refuse the webhooks the sandbox posts (it
    # does not produce what they check), so a service pointed at the sandbox must not have them.
    conflicting_settings: tuple[str, ...] = ()
    # Anymail settings, with their fixed development values, that let the service check the
    # sandbox's signatures of this provider's webhooks (SendGrid's public verification key).
    webhook_verification: tuple[tuple[str, str], ...] = ()

    @property
    def api_url_setting(self) -> str:
        return f"{self.name.upper()}_API_URL"

    def variable(self, suffix: str) -> str:
        """The SANDBOX_<NAME>_<SUFFIX> environment variable of one of this provider's settings."""
        return f"SANDBOX_{self.name.upper()}_{suffix}"

    def build(self, *, api_key: str, webhook_key: str = "", sender_domains: Iterable[str] = ()) -> Provider:
        return self.provider_class(
            self, api_key=api_key, webhook_key=webhook_key, sender_domains=sender_domains
        )


class ProviderAnswer(SandboxError):
    """Raised while reading a request to answer it at once with the provider's own error."""

    def __init__(self, response: ApiResponse, reason: str):
        self.response = response
        super().__init__(reason)


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


@dataclass(frozen=True)
class WebhookBody:
    """The part of a webhook POST each provider formats its own way: body and signature header."""

    data: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any) -> WebhookBody:
        return cls(json.dumps(payload).encode("utf-8"))


def name_events(*, delivered: str, bounced: str, complained: str) -> dict[SimulatedEvent, str]:
    """A provider's own name of each simulated event (keyword-only, so none is forgotten)."""
    return {
        SimulatedEvent.DELIVERED: delivered,
        SimulatedEvent.BOUNCED: bounced,
        SimulatedEvent.COMPLAINED: complained,
    }


def url_token(nbytes: int = 16) -> str:
    """Random URL-safe base64 without padding: the shape of the providers' own event ids."""
    return base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).decode("ascii").rstrip("=")


class Provider(ABC):
    """One simulated ESP, built from its spec with the keys the sandbox was configured with.

    The base class does what every provider does alike (the key check, Retry-After on errors, the
    webhook POST around each provider's body), so a subclass holds only what differs."""

    user_agent: ClassVar[str]  # of its webhook POSTs
    event_names: ClassVar[Mapping[SimulatedEvent, str]]  # the provider's own name of each event
    post_per_event: ClassVar[bool] = False  # one webhook POST per event (else one per message)

    def __init__(
        self, spec: ProviderSpec, *, api_key: str, webhook_key: str = "", sender_domains: Iterable[str] = ()
    ):
        self.spec = spec
        self.api_key = api_key
        self.webhook_key = webhook_key
        # Sender domains that exist (empty: every domain does); only an API that names the
        # sending domain (Mailgun) checks them.
        self.sender_domains = frozenset(domain.lower() for domain in sender_domains)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def prefix(self) -> str:
        return self.spec.api_prefix

    # Reading a send request -------------------------------------------------------------

    @abstractmethod
    def endpoint(self, request: ApiRequest) -> str | None:
        """The send endpoint this path names ("send", "send-template"), or None (a 404)."""

    @abstractmethod
    def parse(self, request: ApiRequest, endpoint: str) -> ReceivedMessage:
        """Decode the request (raise ProviderAnswer for one the real API would refuse as malformed)."""

    def authenticate(self, request: ApiRequest, message: ReceivedMessage) -> ApiResponse | None:
        """None when the request carries the configured key, else the provider's answer to a bad key."""
        if message.api_key and secrets.compare_digest(message.api_key, self.api_key):
            return None
        return self.unauthorized()

    def validate(self, request: ApiRequest, message: ReceivedMessage) -> ApiResponse | None:
        """Provider-specific refusals after authentication (Mailgun's unknown domain)."""
        return None

    # Answering --------------------------------------------------------------------------

    @abstractmethod
    def refuse_recipients(
        self, message: ReceivedMessage, refused: list[ReceivedRecipient]
    ) -> ApiResponse | None:
        """The answer when some recipients are refused: an error response for APIs that refuse
        the whole request (SendGrid, Mailgun), None for those that report per recipient."""

    @abstractmethod
    def accept(self, message: ReceivedMessage) -> ApiResponse:
        """Assign provider message ids (and per-recipient statuses) and build the success answer."""

    def error(self, status: int, retry_after: int | None = None) -> ApiResponse:
        """An injected error answer, with the Retry-After a client's back-off reads."""
        response = self.error_answer(status)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    @abstractmethod
    def error_answer(self, status: int) -> ApiResponse:
        """The provider's own answer with this HTTP error status."""

    @abstractmethod
    def unauthorized(self) -> ApiResponse:
        """The provider's answer to a wrong or revoked API key."""

    @abstractmethod
    def not_found(self, request: ApiRequest) -> ApiResponse:
        """The provider's answer to a path it does not serve."""

    # Tracking webhooks ------------------------------------------------------------------

    def webhook_posts(
        self, message: ReceivedMessage, events: Events, *, base_url: str, basic_auth: str, now: float
    ) -> list[WebhookPost]:
        """The signed POSTs that report `events` to the service at `base_url`; `basic_auth` is
        the "user:password" the dispatcher adds (Mandrill signs the URL with it)."""
        url = base_url.rstrip("/") + self.spec.tracking_path
        batches = [[pair] for pair in events] if self.post_per_event else [events]
        posts = []
        for batch in batches:
            body = self.webhook_body(message, batch, url=url, basic_auth=basic_auth, now=now)
            posts.append(
                WebhookPost(
                    provider=self.name,
                    url=url,
                    body=body.data,
                    content_type=body.content_type,
                    headers={"User-Agent": self.user_agent, **body.headers},
                    events=[self.event_names[event] for _, event in batch],
                    recipients=[recipient.email for recipient, _ in batch],
                    message_ids=[self.webhook_message_id(message, recipient) for recipient, _ in batch],
                )
            )
        return posts

    @abstractmethod
    def webhook_body(
        self, message: ReceivedMessage, batch: Events, *, url: str, basic_auth: str, now: float
    ) -> WebhookBody:
        """One POST's body reporting `batch`, signed as the provider signs it for `url`."""

    def webhook_message_id(self, message: ReceivedMessage, recipient: ReceivedRecipient) -> str:
        """The message id an event about `recipient` carries (shown in the webhook history)."""
        return recipient.message_id or ""
