"""What a tenant is told about a failed attempt, recipient or message: a one-line reason built
from what the gateway recorded (the attempt's outcome, HTTP status and error class), never the
provider's own words. A provider's answer can name the account, echo a key or a part of the
message, and is the operator's business: its full text stays in the database, the admin and the
logs (docs/api.md, "GET /api/messages/{id}").
"""

from __future__ import annotations

from collections.abc import Iterable

from failover.attempts import Outcome
from mailservice.models import DeliveryAttempt, Message

# HTTP statuses a provider answers about itself (any other 4xx: "refused the request"; 5xx:
# "unavailable").
PROVIDER_STATUS_REASONS = {
    401: "provider refused the API key",
    403: "provider refused access to the account",
    404: "provider endpoint not found",
    429: "provider rate limit reached",
}
# Error classes (the end of the dotted name) whose reason says more than the outcome alone.
CLASS_REASONS = {
    "AnymailRecipientsRefused": "every recipient refused by provider",
    "AnymailInvalidAddress": "address not accepted by this provider",
    "SMTPRecipientsRefused": "every recipient refused by provider",
    "AnymailUnsupportedFeature": "uses a feature this provider does not support",
    "AnymailSerializationError": "could not be encoded for this provider",
    "AnymailConfigurationError": "provider not configured correctly on this service",
    "ImproperlyConfigured": "provider not configured correctly on this service",
    "ProviderBuildError": "provider not configured correctly on this service",
    "ConnectTimeout": "timed out connecting to provider",
    "ReadTimeout": "timed out waiting for provider's answer; it may have sent the message",
    "timeout": "timed out waiting for provider's answer; it may have sent the message",
    "TimeoutError": "timed out waiting for provider's answer; it may have sent the message",
    "ConnectionError": "could not connect to provider",
    "SSLError": "secure connection to provider failed",
}
OUTCOME_REASONS = {
    Outcome.PROVIDER_ERROR: "provider error",
    Outcome.MESSAGE_ERROR: "message refused by provider",
    Outcome.AMBIGUOUS: "no answer from provider; it may have sent the message",
    Outcome.LOCAL_ERROR: "could not be encoded for this provider",
}
# An ambiguous attempt without a provider: recovery's record of a round whose worker died.
INTERRUPTED = "delivery interrupted; a provider may have sent the message"


def attempt_reason(
    *, outcome: str, status_code: int | None, error_class: str = "", provider: str = ""
) -> str:
    """One line for one attempt: "" when it was sent, else e.g. "provider unavailable (HTTP 503)"."""
    if outcome == Outcome.SENT:
        return ""
    if status_code is not None:
        return f"{_status_reason(outcome, status_code)} (HTTP {status_code})"
    if outcome == Outcome.AMBIGUOUS and not provider:
        return INTERRUPTED
    by_class = CLASS_REASONS.get(error_class.rpartition(".")[2])
    if by_class and (outcome == Outcome.AMBIGUOUS) == ("may have sent" in by_class):
        return by_class
    return OUTCOME_REASONS.get(outcome, "delivery error")


def _status_reason(outcome: str, status: int) -> str:
    if 200 <= status < 300:
        if outcome == Outcome.AMBIGUOUS:
            return "provider's answer could not be read; it may have sent the message"
        return "provider answered with something other than its API"
    if outcome == Outcome.MESSAGE_ERROR:
        return "message refused by provider"
    if status >= 500:
        return "provider unavailable"
    return PROVIDER_STATUS_REASONS.get(status, "provider refused the request")


def delivery_attempt_reason(attempt: DeliveryAttempt) -> str:
    return attempt_reason(
        outcome=attempt.outcome,
        status_code=attempt.status_code,
        error_class=attempt.error_class,
        provider=attempt.provider,
    )


def delivery_error_reason(text: str, message: Message) -> str:
    """The tenant's version of a message's `last_error` or a recipient's `error`.

    Such a text is either the gateway's own sentence (cancelled, suppressed, the worker stopped,
    the message could not be built, no provider within the maximum age…), shown as it is, or it
    quotes what providers answered (each attempt's recorded error): then the reasons of the
    message's latest failed attempts stand in for it, "<provider>: <reason>" each."""
    if not text:
        return ""
    attempts = list(message.attempts.all())  # prefetched by selectors.message_get
    if not any(attempt.error and attempt.error in text for attempt in attempts):
        return text
    return summary(attempts) or OUTCOME_REASONS[Outcome.PROVIDER_ERROR]


def summary(attempts: Iterable[DeliveryAttempt]) -> str:
    """The failed attempts of the latest round that has any, one "<provider>: <reason>" each."""
    failed = [attempt for attempt in attempts if attempt.outcome != Outcome.SENT]
    if not failed:
        return ""
    latest = max(attempt.round for attempt in failed)
    parts = []
    for attempt in failed:
        if attempt.round == latest:
            reason = delivery_attempt_reason(attempt)
            parts.append(f"{attempt.provider}: {reason}" if attempt.provider else reason)
    return "; ".join(parts)
