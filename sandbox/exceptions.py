"""Errors of the sandbox, each saying what to change."""

from __future__ import annotations


class SandboxError(Exception):
    """Base class: every error the sandbox raises on purpose."""


class SandboxConfigError(SandboxError, ValueError):
    """A setting (flag or SANDBOX_* variable) is invalid, e.g. a host that is not loopback."""


class FaultSpecError(SandboxError, ValueError):
    """A fault description (JSON body, CLI words or --fault flag) cannot be understood."""


class UnknownProviderError(FaultSpecError):
    """A provider name the sandbox does not serve."""

    def __init__(self, name: str, known: tuple[str, ...]):
        self.name = name
        super().__init__(f"Unknown provider {name!r}; the sandbox serves: {', '.join(known)}")


class ControlError(SandboxError):
    """A request to a running sandbox's control API failed (not running, or refused the request)."""

    def __init__(self, message: str, status: int | None = None, body: str = ""):
        self.status = status
        self.body = body
        super().__init__(message)
