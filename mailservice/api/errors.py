"""Every error the API answers has one shape: {"errors": [{"field": ..., "message": ...}]}.

`field` is the path of the offending value from the body's root (`to[0]`,
`attachments[1].content`, `headers.X-Campaign`), or null for the request as a whole. At most
validation.MAX_ERRORS errors are listed, then one entry counting the rest.

An error that says the database or the cache is out of reach answers 503 with Retry-After, not
500: the client's retry will do (mailservice/availability.py decides which errors say so).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import Http404, HttpRequest, JsonResponse
from ninja.errors import AuthenticationError, HttpError, ValidationError

from mailservice import conf
from mailservice.availability import RETRY_AFTER_SECONDS, unavailable_dependency
from mailservice.exceptions import FieldError, RequestRejected, ServiceUnavailable
from mailservice.validation import capped

logger = logging.getLogger(__name__)

PARAM_SOURCES = {"body", "query", "path", "form", "header", "cookie", "file"}
UNAUTHORIZED = "A valid API key is required in the header: Authorization: Bearer <key>."


def error_response(status: int, errors: Iterable[FieldError], **extra: Any) -> JsonResponse:
    """The error format (docs/api.md, "Errors"); `extra` adds top-level keys beside `errors`."""
    body = {"errors": [error.as_dict() for error in capped(list(errors))], **extra}
    response = JsonResponse(body, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="smtest"'
    return response


def message_response(status: int, message: str, **extra: Any) -> JsonResponse:
    """The error format with one error that concerns no field."""
    return error_response(status, [FieldError(None, message)], **extra)


def rejected_response(error: RequestRejected) -> JsonResponse:
    """The error format, with the headers the error carries (a 429's Retry-After)."""
    response = error_response(error.status, error.errors)
    for name, value in error.headers.items():
        response[name] = value
    return response


def unavailable_response(request: HttpRequest, error: BaseException) -> JsonResponse | None:
    """503 with Retry-After when `error` says a dependency is out of reach, else None (the
    caller's other handling applies). One warning line per answer names the path and the error
    classes, never the request's body or the error's text (a connection error may quote a DSN)."""
    dependency = unavailable_dependency(error)
    if dependency is None:
        return None
    cause = error.__cause__
    logger.warning(
        "gateway unavailable: %s out of reach path=%s error=%s",
        dependency,
        request.path,
        class_name(cause if cause is not None else error),
        extra={
            "path": request.path,
            "dependency": dependency,
            "error_class": class_name(error),
            "cause_class": class_name(cause) if cause is not None else None,
        },
    )
    response = rejected_response(ServiceUnavailable(dependency=dependency, retry_after=RETRY_AFTER_SECONDS))
    # The warning above is the one line: Django's request logger would add an ERROR for the 503
    # (paging whoever watches errors for a restart the clients ride out); it skips logged answers.
    response._has_been_logged = True
    return response


def class_name(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__qualname__}"


def field_path(loc: Sequence[Any]) -> str | None:
    """`("to", 0)` -> `to[0]`; `("attachments", 1, "content")` -> `attachments[1].content`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or None


def pydantic_errors(errors: Iterable[dict], *, strip_param: bool = False) -> list[FieldError]:
    """Field errors from pydantic's (or ninja's) error list. Ninja prefixes each location with
    the source and, for a body, the parameter name: both are dropped."""
    converted = []
    for error in errors:
        loc = list(error.get("loc") or ())
        if strip_param and loc and loc[0] in PARAM_SOURCES:
            source = loc.pop(0)
            if source == "body" and loc:
                loc.pop(0)  # the view's parameter name
        message = str(error.get("msg") or "Invalid value.")
        message = message.removeprefix("Value error, ")
        converted.append(FieldError(field_path(loc), message))
    return capped(converted)


def _is_missing_body(error: dict) -> bool:
    loc = tuple(error.get("loc") or ())
    return error.get("type") == "missing" and len(loc) == 2 and loc[0] == "body"


def is_too_big(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, (RequestDataTooBig, TooManyFieldsSent)):
            return True
        error = error.__cause__ or error.__context__
    return False


def install(api) -> None:
    """Replace ninja's default handlers so every failure answers in our format, never HTML."""

    def on_rejected(request: HttpRequest, exc: RequestRejected):
        return rejected_response(exc)

    def on_validation(request: HttpRequest, exc: ValidationError):
        if all(_is_missing_body(error) for error in exc.errors):
            return error_response(400, [FieldError(None, "The request body is empty; send a JSON object.")])
        return error_response(422, pydantic_errors(exc.errors, strip_param=True))

    def on_auth(request: HttpRequest, exc: AuthenticationError):
        return error_response(401, [FieldError(None, UNAUTHORIZED)])

    def on_http(request: HttpRequest, exc: HttpError):
        if is_too_big(exc):
            return too_big_response()
        if isinstance(exc.__cause__, RequestRejected):  # the body parser's refusal (api/parsing.py)
            return rejected_response(exc.__cause__)
        message = "The request body is not valid JSON." if exc.status_code == 400 else str(exc)
        return error_response(exc.status_code, [FieldError(None, message)])

    def on_404(request: HttpRequest, exc: Http404):
        return error_response(404, [FieldError(None, "Not found.")])

    def on_too_big(request: HttpRequest, exc: Exception):
        return too_big_response()

    def on_error(request: HttpRequest, exc: Exception):
        # Raised anywhere in an operation, API-key authentication included (ninja hands the
        # authenticator's errors to these handlers too).
        unavailable = unavailable_response(request, exc)
        if unavailable is not None:
            return unavailable
        logger.exception("api internal error path=%s", request.path, extra={"path": request.path})
        return error_response(500, [FieldError(None, "Internal error; it has been logged.")])

    api.add_exception_handler(Exception, on_error)
    api.add_exception_handler(RequestRejected, on_rejected)
    api.add_exception_handler(ValidationError, on_validation)
    api.add_exception_handler(HttpError, on_http)
    api.add_exception_handler(AuthenticationError, on_auth)
    api.add_exception_handler(Http404, on_404)
    api.add_exception_handler(RequestDataTooBig, on_too_big)
    api.add_exception_handler(TooManyFieldsSent, on_too_big)


def too_big_response() -> JsonResponse:
    return error_response(
        413, [FieldError(None, f"The request body is over the limit of {conf.max_request_bytes()} bytes.")]
    )
