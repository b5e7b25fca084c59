"""Errors raised by the failover backend. Each carries what the caller needs to act on it."""

from __future__ import annotations

from anymail.exceptions import AnymailAPIError
from django.core.exceptions import ImproperlyConfigured

from failover.attempts import Attempt


class FailoverError(Exception):
    """Base class: every error of this app, so callers can catch them together."""


class FailoverConfigurationError(FailoverError, ImproperlyConfigured):
    """FIRST_WORKING_EMAIL_BACKENDS (or a MAILERS entry it names) is wrong."""


class ProviderBuildError(FailoverError):
    """A provider's backend could not be imported or constructed; the chain moves on."""

    def __init__(self, provider: str, backend_path: str, reason: str):
        self.provider = provider
        self.backend_path = backend_path
        self.reason = reason
        super().__init__(f"Cannot build provider {provider!r} ({backend_path}): {reason}")


class AllProvidersFailed(FailoverError, AnymailAPIError):
    """No provider took the message. `errors` maps each provider's name to its exception, and
    `skipped` each provider passed over without a request (retry_after, rate_limited).

    An AnymailAPIError, so code written for one Anymail backend (`except AnymailAPIError`) still
    catches it when that backend becomes a chain.
    """

    def __init__(
        self,
        attempts: list[Attempt],
        errors: dict[str, BaseException],
        *,
        skipped: dict[str, str] | None = None,
    ):
        self.attempts = attempts
        self.errors = errors
        self.skipped = dict(skipped or {})
        parts = [f"{a.provider}: {a.error}" for a in attempts]
        parts += [f"{name}: skipped ({reason})" for name, reason in self.skipped.items()]
        self.summary = f"All {len(attempts) + len(self.skipped)} providers failed: " + (
            "; ".join(parts) or "no provider configured"
        )
        super().__init__(self.summary)

    def __str__(self) -> str:
        return self.summary


class AmbiguousSendError(FailoverError, AnymailAPIError):
    """A provider may have sent the message (read timeout after the request went out), and
    FIRST_WORKING_EMAIL_FAILOVER_ON_AMBIGUOUS is off, so it was not offered to another one."""

    def __init__(self, attempts: list[Attempt], error: BaseException):
        self.attempts = attempts
        self.error = error
        last = attempts[-1]
        self.summary = (
            f"Provider {last.provider!r} may have sent the message ({last.error}); "
            "not failing over because FIRST_WORKING_EMAIL_FAILOVER_ON_AMBIGUOUS is off"
        )
        super().__init__(self.summary)

    def __str__(self) -> str:
        return self.summary
