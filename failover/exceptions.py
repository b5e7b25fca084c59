"""Errors raised by the failover backend. Each carries what the caller needs to act on it."""
from __future__ import annotations

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
        super().__init__(f"Cannot build provider {provider!r} ({backend_path}): {reason}")


class AllProvidersFailed(FailoverError):
    """No provider took the message. `errors` maps each provider's name to its exception."""

    def __init__(self, attempts: list[Attempt], errors: dict[str, BaseException]):
        self.attempts = attempts
        self.errors = errors
        summary = "; ".join(f"{a.provider}: {a.error}" for a in attempts) or "no provider configured"
        super().__init__(f"All {len(attempts)} providers failed: {summary}")


class AmbiguousSendError(FailoverError):
    """A provider may have sent the message (read timeout after the request went out), and
    FIRST_WORKING_EMAIL_FAILOVER_ON_AMBIGUOUS is off, so it was not offered to another one."""

    def __init__(self, attempts: list[Attempt], error: BaseException):
        self.attempts = attempts
        self.error = error
        last = attempts[-1]
        super().__init__(
            f"Provider {last.provider!r} may have sent the message ({last.error}); "
            "not failing over because FIRST_WORKING_EMAIL_FAILOVER_ON_AMBIGUOUS is off"
        )
