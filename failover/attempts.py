"""What happened when one provider was tried with one message."""

from dataclasses import dataclass

from django.db.models import TextChoices


class Outcome(TextChoices):
    """Also the gateway's stored outcome of a delivery attempt (its model field's choices)."""

    SENT = "sent"
    # The provider cannot take mail now: the message goes on to the next provider.
    PROVIDER_ERROR = "provider_error"
    # The message itself was refused: final, never offered to another provider.
    MESSAGE_ERROR = "message_error"
    # The request went out and no answer came back: the provider may have sent it.
    AMBIGUOUS = "ambiguous"
    # This provider's backend could not encode this message (an error raised locally while
    # building it): the next provider may take it, and the provider is not marked failing.
    LOCAL_ERROR = "local_error"


@dataclass(frozen=True, slots=True)
class Attempt:
    provider: str
    outcome: Outcome
    duration: float  # seconds
    error_class: str | None = None  # dotted name of the exception class, if any
    error: str | None = None  # short description with secrets masked; never the body
    status_code: int | None = None  # HTTP status, when the provider answered

    @property
    def ambiguous(self) -> bool:
        return self.outcome is Outcome.AMBIGUOUS

    def as_dict(self) -> dict:
        return {
            "provider": self.provider,
            "outcome": str(self.outcome),
            "ambiguous": self.ambiguous,
            "error_class": self.error_class,
            "error": self.error,
            "status_code": self.status_code,
            "duration": round(self.duration, 6),
        }
