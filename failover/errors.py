"""Classifying a provider's exception: move on to the next provider, or stop.

The line is drawn by one question: could another provider take this message? Provider-side
trouble (unreachable, overloaded, misconfigured, lacking a feature) says yes; a refusal of the
message itself (bad address, every recipient refused, invalid payload) says no, and re-sending
it elsewhere would only spread the refusal. A request that went out and got no answer may have
been sent: that is ambiguous.
"""

import email.errors
import json
import smtplib
import socket
import time
from email.utils import parsedate_to_datetime

import django
import requests
from anymail.exceptions import (
    AnymailAPIError,
    AnymailConfigurationError,
    AnymailInvalidAddress,
    AnymailRecipientsRefused,
    AnymailSerializationError,
    AnymailUnsupportedFeature,
)
from django.core.exceptions import ImproperlyConfigured
from urllib3.exceptions import HTTPError, ProtocolError

from failover.attempts import Outcome
from failover.exceptions import ProviderBuildError

# HTTP answers that judge the message, not the provider. Everything else in 4xx (401/403 bad
# key, 404 wrong URL/domain, 402 unpaid, 429 throttled...) and every 5xx is the provider's.
MESSAGE_STATUS_CODES = frozenset({400, 413, 422})
# A header with a newline is the message's fault: Django < 6.1 raises BadHeaderError; 6.1
# (which deprecates that name) lets the email package raise a plain ValueError, recognised by
# its text (HEADER_NEWLINE_TEXT), so it is not mistaken for a provider failing.
HEADER_ERRORS: tuple[type[BaseException], ...] = ()
if django.VERSION < (6, 1):
    from django.core.mail import BadHeaderError

    HEADER_ERRORS = (BadHeaderError,)
HEADER_NEWLINE_TEXT = "may not contain linefeed or carriage return"
MAX_ERROR_LENGTH = 300
MAX_BODY_LENGTH = 160


# Message errors that refuse the recipients (rather than the content): the gateway records
# those recipients as rejected, not failed.
RECIPIENT_REFUSALS = (AnymailRecipientsRefused, AnymailInvalidAddress, smtplib.SMTPRecipientsRefused)


def refuses_recipients(error: BaseException) -> bool:
    """True for a message error that refuses the address(es) rather than the message's content."""
    return isinstance(error, RECIPIENT_REFUSALS)


# Errors of one message's content (building, encoding or serializing it): they say nothing
# about the provider unless network code raised them (a non-Latin-1 API key fails in http.client).
CONTENT_ERRORS: tuple[type[BaseException], ...] = (
    AnymailSerializationError,
    email.errors.MessageError,
    UnicodeError,
    RecursionError,
)
# Code that talks to the provider: an error raised inside it is about the connection or the
# provider's answer, whatever its class.
NETWORK_MODULES = frozenset({"socket", "ssl", "http.client", "smtplib"})
NETWORK_PACKAGES = ("urllib3.", "requests.")


def classify(error: BaseException, *, reached_network: bool | None = None) -> Outcome:
    """Return PROVIDER_ERROR, MESSAGE_ERROR, AMBIGUOUS or LOCAL_ERROR for an exception raised
    by a backend. `reached_network` (failover/network.py) says whether the attempt opened a
    connection or sent a byte; None when unknown. An error raised before the network is the
    message's (LOCAL_ERROR): only the provider's answers, or their absence, judge a provider."""
    # Order matters: Anymail's request errors are also requests exceptions, and
    # AnymailUnsupportedFeature is also a ValueError.
    if isinstance(error, RECIPIENT_REFUSALS):
        return Outcome.MESSAGE_ERROR
    if isinstance(error, AnymailUnsupportedFeature):
        return Outcome.LOCAL_ERROR  # this message needs what this ESP lacks; other messages are fine
    if isinstance(error, (AnymailConfigurationError, ImproperlyConfigured)):
        return Outcome.PROVIDER_ERROR
    if isinstance(error, ProviderBuildError):
        return Outcome.PROVIDER_ERROR
    if isinstance(error, requests.RequestException):
        return _classify_requests_error(error)
    if isinstance(error, AnymailAPIError):
        return _classify_answer(status_code_of(error), getattr(error, "response", None))
    if isinstance(error, smtplib.SMTPException):
        return _classify_smtp_error(error)
    if isinstance(error, HEADER_ERRORS) or (
        isinstance(error, ValueError) and HEADER_NEWLINE_TEXT in str(error)
    ):
        return Outcome.MESSAGE_ERROR
    if isinstance(error, socket.timeout):
        return Outcome.AMBIGUOUS
    if _in_network_code(_innermost_module(error)) or _about_the_connection(error):
        return Outcome.PROVIDER_ERROR  # the connection or the provider's answer failed
    if _raised_building_the_message(error):
        return Outcome.LOCAL_ERROR
    if reached_network is True and isinstance(error, CONTENT_ERRORS):
        # Raised after the request went out, outside message building (reading the answer):
        # the provider may have taken it.
        return Outcome.AMBIGUOUS
    if reached_network is False or isinstance(error, CONTENT_ERRORS):
        return Outcome.LOCAL_ERROR
    # Anything else after the request went out (a backend failing to read the answer) or where
    # we cannot tell: let another provider try rather than drop the message.
    return Outcome.PROVIDER_ERROR


def _about_the_connection(error: BaseException) -> bool:
    """An OSError (refused, unreachable, DNS), or a requests/urllib3 error, anywhere in what
    `error` was raised from or while handling: a backend that wraps its transport's errors in
    its own class (an ESP's SDK) still reports a provider it could not reach."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, (OSError, requests.RequestException, HTTPError)) and not isinstance(
            link, UnicodeError
        ):
            return True
        link = link.__cause__ or link.__context__
    return False


def is_content_error(error: BaseException) -> bool:
    """True for an error about the message's content itself (it will not get better by waiting);
    False for other errors raised before the network (a bug in a backend), which may."""
    return isinstance(error, CONTENT_ERRORS + HEADER_ERRORS + (AnymailUnsupportedFeature,)) or (
        _raised_building_the_message(error)
    )


def _classify_requests_error(error: requests.RequestException) -> Outcome:
    status = getattr(error, "status_code", None)
    if status is None and getattr(error, "response", None) is not None:
        status = error.response.status_code
    if status is not None:
        return _classify_answer(status, getattr(error, "response", None))
    if isinstance(error, requests.ConnectTimeout):
        return Outcome.PROVIDER_ERROR  # nothing was sent
    if isinstance(error, requests.ReadTimeout):
        return Outcome.AMBIGUOUS
    if isinstance(error, requests.ConnectionError) and _aborted_mid_request(error):
        return Outcome.AMBIGUOUS
    return Outcome.PROVIDER_ERROR


def _not_the_esps_api(response: requests.Response | None) -> bool:
    text = (getattr(response, "text", "") or "").strip() if response is not None else ""
    if not text or text[0] in "{[":
        return False  # nothing, or the start of JSON: the cautious reading (ambiguous)
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


# Code that builds a message: an exception raised from here is about this one message's content
# (a header the email package cannot encode), not about the provider.
MESSAGE_BUILDING_MODULES = ("email.", "django.core.mail.message", "django.core.mail.utils")


def _innermost_module(error: BaseException) -> str:
    """The module of the frame that raised `error` ("" when it carries no traceback)."""
    traceback = error.__traceback__
    module = ""
    while traceback is not None:
        module = traceback.tb_frame.f_globals.get("__name__", "")
        traceback = traceback.tb_next
    return module


def _in_network_code(module: str) -> bool:
    return module in NETWORK_MODULES or module.startswith(NETWORK_PACKAGES)


def _raised_building_the_message(error: BaseException) -> bool:
    """True for an error (an encoding error included) raised inside the email package or
    Django's message building, before any request left; the same error raised elsewhere (a
    non-Latin-1 character in an API key, failing in http.client) is the provider's."""
    return isinstance(error, (ValueError, TypeError, LookupError)) and _innermost_module(error).startswith(
        MESSAGE_BUILDING_MODULES
    )


def retry_after(error: BaseException, *, default: float, now: float | None = None) -> float | None:
    """Seconds the provider asked us to wait: a 429 (`default` without a Retry-After header), or
    a 503 with Retry-After. None when the error is no such request to slow down."""
    status = status_code_of(error)
    if status not in (429, 503):
        return None
    response = getattr(error, "response", None)
    header = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    seconds = _parse_retry_after(header, time.time() if now is None else now) if header else None
    if seconds is None:
        return default if status == 429 else None
    return seconds


def _parse_retry_after(value: str, now: float) -> float | None:
    """Retry-After is delay-seconds or an HTTP-date (RFC 9110, 10.2.3)."""
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _aborted_mid_request(error: requests.ConnectionError) -> bool:
    """A connection dropped after the request was sent ('Connection aborted') may have delivered."""
    reason = error.args[0] if error.args else None
    if isinstance(error.__cause__, requests.ConnectionError):  # Anymail's wrapper
        reason = error.__cause__.args[0] if error.__cause__.args else None
    return isinstance(reason, ProtocolError)


def _classify_answer(status: int | None, response: requests.Response | None) -> Outcome:
    if status is not None and 200 <= status < 300 and _not_the_esps_api(response):
        # A page, not the ESP's API (a wrong URL's page, e.g. Mailgun's "Mailgun Magnificent
        # API", a proxy's HTML): ESP send APIs answer JSON, so nothing was sent. A configuration
        # error. An empty or cut-off JSON answer stays ambiguous: the ESP may have taken it.
        return Outcome.PROVIDER_ERROR
    return _classify_status(status)


def _classify_status(status: int | None) -> Outcome:
    if status is None:
        return Outcome.PROVIDER_ERROR
    if 200 <= status < 300:
        # The provider said yes but its answer could not be read: it probably sent the message.
        return Outcome.AMBIGUOUS
    if status in MESSAGE_STATUS_CODES:
        return Outcome.MESSAGE_ERROR
    return Outcome.PROVIDER_ERROR


def _classify_smtp_error(error: smtplib.SMTPException) -> Outcome:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return Outcome.MESSAGE_ERROR
    if isinstance(error, smtplib.SMTPDataError) and 500 <= error.smtp_code < 600:
        return Outcome.MESSAGE_ERROR  # permanent refusal of this message's content
    return Outcome.PROVIDER_ERROR


def status_code_of(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    if status is None and getattr(error, "response", None) is not None:
        status = getattr(error.response, "status_code", None)
    return status if isinstance(status, int) else None


def describe(error: BaseException, secrets: frozenset[str] = frozenset()) -> str:
    """A one-line description fit for logs and API answers, with secrets masked.

    Anymail's own str() appends the provider's whole response, pretty-printed; here an HTTP
    error is "HTTP <status> <reason>: <the provider's answer, squeezed to one short line>".
    """
    status = status_code_of(error)
    if status is not None:
        response = getattr(error, "response", None)
        reason = getattr(response, "reason", "") or ""
        detail = " ".join(str(arg) for arg in getattr(error, "args", ()) if arg)
        # Masked before it is cut, so a secret the ESP echoes back cannot leave half of itself.
        body = mask(" ".join((getattr(response, "text", "") or "").split()), secrets)[:MAX_BODY_LENGTH]
        text = f"HTTP {status} {reason}".strip()
        text += "".join(f": {part}" for part in (detail, body) if part)
    else:
        lines = str(error).strip().splitlines()
        text = lines[0].rstrip(":") if lines else ""
        if isinstance(error, requests.RequestException) and error.__cause__ is not None:
            text = f"{text}: {type(error.__cause__).__name__}: {error.__cause__}".lstrip(": ")
    # One line, whatever the provider's answer or the exception's text held.
    return mask(" ".join((text or type(error).__name__).split()), secrets)[:MAX_ERROR_LENGTH]


def mask(text: str, secrets: frozenset[str]) -> str:
    """`text` with every configured secret replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def error_class_name(error: BaseException) -> str:
    cls = type(error)
    # Anymail builds a class on the fly that mixes AnymailRequestsAPIError into the requests
    # exception; name the requests class, which is what tells the story.
    if cls.__module__ == "anymail.backends.base_requests" and len(cls.__bases__) > 1:
        cls = cls.__bases__[1]
    return f"{cls.__module__}.{cls.__qualname__}"
