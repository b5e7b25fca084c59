"""Errors of the gateway. Each carries what its handler needs to answer or act on it."""

from __future__ import annotations

from dataclasses import dataclass


class MailserviceError(Exception):
    """Base class of every error of this app."""


@dataclass(frozen=True)
class FieldError:
    """One problem with a request: `field` is the path of the offending value from the body's
    root (`to[0]`, `attachments[1].content`, `headers.X-Campaign`), None for the whole request."""

    field: str | None
    message: str

    def as_dict(self) -> dict:
        return {"field": self.field, "message": self.message}


class RequestRejected(MailserviceError):
    """A request the gateway refuses; answered with `status` and the field errors, storing nothing."""

    status = 422
    # Headers the answer carries besides the JSON body (Retry-After of a 429).
    headers: dict[str, str] = {}

    def __init__(self, errors: list[FieldError], status: int | None = None):
        self.errors = errors
        if status is not None:
            self.status = status
        super().__init__("; ".join(f"{e.field or 'request'}: {e.message}" for e in errors))


class InvalidRequest(RequestRejected):
    """Valid JSON of the wrong shape, or invalid values: 422."""

    status = 422


class MalformedRequest(RequestRejected):
    """A body that cannot be parsed at all: 400."""

    status = 400


class PayloadTooLarge(RequestRejected):
    """The request body or the decoded attachments are over the documented limits: 413."""

    status = 413


class IdempotencyConflict(RequestRejected):
    """The Idempotency-Key was used before with a different body: 409."""

    status = 409

    def __init__(self, key: str):
        super().__init__(
            [FieldError(None, "This Idempotency-Key was already used with a different request body.")]
        )


class AuthenticationFailed(RequestRejected):
    """No valid API key in the Authorization header: 401."""

    status = 401


class Forbidden(RequestRejected):
    """A valid API key whose scopes do not cover the call: 403 naming the scope it needs."""

    status = 403

    def __init__(self, scopes: tuple[str, ...]):
        self.scopes = scopes
        needed = " or ".join(f"'{scope}'" for scope in scopes)
        super().__init__([FieldError(None, f"This API key lacks the {needed} scope this call needs.")])


class RateLimited(RequestRejected):
    """The API key made more requests than MAILSERVICE_API_RATE_LIMIT allows: 429 with
    Retry-After (whole seconds until the key's current period ends)."""

    status = 429

    def __init__(self, *, limit: str, retry_after: int):
        self.retry_after = max(1, int(retry_after))
        self.headers = {"Retry-After": str(self.retry_after)}
        super().__init__(
            [
                FieldError(
                    None,
                    f"This API key is over its rate limit of {limit}; retry in {self.retry_after} s.",
                )
            ]
        )


class NotFound(RequestRejected):
    status = 404


class ServiceUnavailable(RequestRejected):
    """A dependency (`database`, `cache`) is out of reach for a moment: 503 with Retry-After.

    Unlike a 500, it tells the client to send the same request again after `retry_after` seconds;
    with the same Idempotency-Key that never stores a message twice (docs/api.md, "When the
    gateway is unavailable")."""

    status = 503

    def __init__(self, *, dependency: str, retry_after: int):
        self.dependency = dependency
        self.retry_after = max(1, int(retry_after))
        self.headers = {"Retry-After": str(self.retry_after)}
        super().__init__(
            [
                FieldError(
                    None,
                    f"The gateway's {dependency} is unavailable for the moment; "
                    f"retry in {self.retry_after} s.",
                )
            ]
        )


class ApiKeyError(MailserviceError):
    """An API key management command cannot do what it was asked (name taken, unknown key)."""


class MessageStateError(MailserviceError):
    """An action does not apply to the message's current status (retry a sent one, cancel one a
    worker is sending); `status` is that status, as the refusing statement found it."""

    def __init__(self, message: str, *, status: str = ""):
        self.status = status
        super().__init__(message)
