"""Errors of the gateway. Each carries what its handler needs to answer or act on it."""

from __future__ import annotations

from collections.abc import Iterable
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


class TemplateError(InvalidRequest):
    """A template the gateway cannot use, or cannot render with the data given: 422 on `field`.

    `part` is the template's field at fault (`subject`, `text`, `html`) and `line` the line of
    that source where the problem is (None when no one line is), so an editor can point at it;
    `field` is where a request fixes it: the part itself, or `template_data.<path>` for a missing
    variable. The API answers the part's own route with `field` as it is and may re-root it for
    other bodies (mailservice/templating.py, docs/templates.md)."""

    def __init__(self, detail: str, *, part: str, line: int | None = None, field: str | None = None):
        self.detail = detail
        self.part = part
        self.field = field or part
        self.at_line(line)

    def at_line(self, line: int | None) -> TemplateError:
        """Say where in the part the problem is, once the renderer knows (itself, for chaining)."""
        self.line = line
        if line:
            where = f"Line {line} of `{self.part}`: "
        else:
            where = f"In `{self.part}`: " if self.field != self.part else ""
        super().__init__([FieldError(self.field, where + self.detail)])
        return self


class TemplateSourceError(TemplateError):
    """A source refused when it is saved: a syntax error, a tag templates cannot use (`{% load %}`,
    `{% include %}` …), or a source over MAILSERVICE_TEMPLATE_MAX_BYTES."""


class TemplateVariableMissing(TemplateError):
    """The template uses a variable that `template_data` lacks and no `|default` makes optional.
    `variable` is the expression as the template wrote it (`user.name`); `field` is its path in
    the data (`template_data.user.name`, `template_data.items[2].sku` inside a loop)."""

    def __init__(self, variable: str, *, part: str, field: str, line: int | None = None, local: bool = False):
        self.variable = variable
        if local:  # under a name a {% for %} or {% with %} binds, with no one place in the data
            detail = f"`{variable}` is missing here, and no `|default` makes it optional."
        else:
            detail = f"The template uses `{variable}`, which template_data lacks: add it, or a `|default`."
        super().__init__(detail, part=part, line=line, field=field)


class TemplateRenderError(TemplateError):
    """A template that compiled fails with this data: a filter or tag that raised, a rendered
    subject that is not one line."""


class TemplateLimitExceeded(TemplateRenderError):
    """Rendering went over a limit (MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES of output,
    MAILSERVICE_TEMPLATE_RENDER_SECONDS of time): `limit` names the setting."""

    def __init__(self, detail: str, *, part: str, limit: str, line: int | None = None):
        self.limit = limit
        super().__init__(detail, part=part, line=line)


class TemplateNotFound(MailserviceError):
    """No stored template has this name in the language asked for, its primary language or the
    default one. The API answers 404 on the template's own routes and 422 on `template` when a
    message names it."""

    def __init__(self, name: str, language: str = "", *, available: Iterable[str] = ()):
        self.name = name
        self.language = language
        in_language = f" in {language!r} or a fallback language" if language else " in the default language"
        languages = sorted(repr(tag) if tag else "the default" for tag in available)
        exists = f"; it exists in {', '.join(languages)}" if languages else ""
        super().__init__(f"No template named {name!r}{in_language}{exists}.")


class TemplateConflict(RequestRejected):
    """A template with this name and language exists already: 409."""

    status = 409

    def __init__(self, name: str, language: str = ""):
        self.name = name
        self.language = language
        which = f"{name!r} in language {language!r}" if language else f"{name!r} (default language)"
        super().__init__([FieldError("name", f"A template {which} exists; update it instead.")])
