"""Provider tracking webhooks: Anymail's own views (its authentication and its parsing), mounted
under /anymail/, feeding one normalized event log. docs/webhooks.md describes the behaviour.

- **Only where configured.** Every tracking endpoint Anymail has is routed, but each decides per
  request (so that `override_settings` or a reload applies at once) whether its ESP is in use:
  a provider of FIRST_WORKING_EMAIL_BACKENDS (by its backend's ESP, whatever the entry's NAME)
  or one listed in MAILSERVICE_WEBHOOK_PROVIDERS. Any other answers 404.
- **Errors the ESP can act on.** Anymail's work on the ESP's data (authentication, parsing) is
  kept apart from ours (recording): bad credentials or a body that is not the ESP's at all are
  a 400 and store nothing; one event that cannot be parsed or stored (`tracking_event_checked`)
  is logged and skipped, the others recorded; a failure on our side is a 5xx with nothing
  half-stored, so the ESP retries (deduplication makes that safe). Every answer is JSON.
- **One batch.** The events of one post are collected, each checked once, while Anymail parses
  it, and recorded together (SendGrid posts up to 1,000 at once).
- **Replays.** Signed timestamps older than MAILSERVICE_WEBHOOK_MAX_AGE are refused.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from anymail import urls as anymail_urls
from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.signals import AnymailTrackingEvent, tracking
from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, re_path
from django.utils.module_loading import import_string
from django.views.decorators.csrf import csrf_exempt

from failover.providers import load_providers, normalize_name
from mailservice import conf
from mailservice.services.tracking import (
    CheckedEvent,
    EventNotStorable,
    tracking_event_checked,
    tracking_events_record,
)
from mailservice.tracking_rules import rules_for

logger = logging.getLogger(__name__)

CREDENTIALS_IN_URL = re.compile(r"(\w+://)[^/@\s]+@")
MAX_REASON = 200
ALLOWED_METHODS = "POST, HEAD, OPTIONS"


@dataclass
class _Post:
    """What one webhook post has produced so far (one per request, in a context variable)."""

    events: list[tuple[str, AnymailTrackingEvent | CheckedEvent]] = field(default_factory=list)
    # Each event checked while parsing, by the identity of the object Anymail's signal will carry.
    checked: dict[int, CheckedEvent] = field(default_factory=dict)
    parsed: int = 0  # events Anymail parsed, tracking or not
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"index", "reason"}


_post: ContextVar[_Post | None] = ContextVar("mailservice_webhook_post", default=None)


class _MalformedPost(Exception):
    """The body is not what the ESP sends (Anymail could not read it as a whole)."""


@dataclass(frozen=True)
class _Unreadable:
    """Stands in, in Anymail's list of parsed events, for one event it could not parse."""

    reason: str


@receiver(tracking, dispatch_uid="mailservice.record_tracking_event")
def record_tracking_event(sender, event: AnymailTrackingEvent, esp_name: str, **kwargs) -> None:
    post = _post.get()
    if post is None:  # sent from outside a webhook view (a test, another integration)
        tracking_events_record(provider=esp_name, events=[event])
    else:
        post.events.append((esp_name, post.checked.get(id(event), event)))


def error_response(status: int, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"errors": [{"field": None, "message": message}], **extra}, status=status)


# Which ESPs have endpoints -------------------------------------------------------------------


def enabled_providers() -> frozenset[str]:
    """The ESPs (as `normalize_name` spells them) whose tracking endpoints answer: each chain entry's backend's
    ESP (a "mailgun-eu" entry with the mailgun backend enables mailgun), plus
    MAILSERVICE_WEBHOOK_PROVIDERS. Raises FailoverConfigurationError for a broken chain."""
    chain = [_backend_esp_name(provider.backend_path) for provider in load_providers()]
    return frozenset(normalize_name(name) for name in [*conf.webhook_providers(), *chain] if name)


@functools.lru_cache(maxsize=64)
def _backend_esp_name(backend_path: str) -> str | None:
    """Anymail's esp_name of a backend; the module of an Anymail backend that cannot be imported
    (`anymail.backends.amazon_ses`); None for other backends (SMTP, console, locmem)."""
    try:
        esp_name = getattr(import_string(backend_path), "esp_name", None)
    except ImportError:
        esp_name = None
    if isinstance(esp_name, str) and esp_name:
        return esp_name
    parts = backend_path.split(".")
    if len(parts) == 4 and parts[:2] == ["anymail", "backends"]:
        return parts[2]
    return None


# The views -----------------------------------------------------------------------------------


def _reason(err: BaseException) -> str:
    """An exception as a one-line reason for a log (type and first line, credentials masked)."""
    text = str(err).splitlines()[0] if str(err) else ""
    reason = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return _without_credentials(reason)[:MAX_REASON]


def _without_credentials(text: str) -> str:
    """Anymail's Mandrill error quotes the signed URL, basic-auth secret included: mask it."""
    return CREDENTIALS_IN_URL.sub(r"\1***@", text)


def checked_view_class(view_class: type) -> type:
    """Anymail's view class, with its parsing separated from our recording: an exception while
    validating or parsing (Anymail reading the ESP's data) becomes `_MalformedPost`, one event
    that cannot be parsed or stored becomes a skipped event, and configuration errors
    (ImproperlyConfigured: a missing package or setting) pass through unchanged."""

    def run_validators(self, request):
        try:
            view_class.run_validators(self, request)
        except (AnymailWebhookValidationFailure, ImproperlyConfigured, RequestDataTooBig):
            raise
        except Exception as err:  # Anymail choking on the body while checking it
            raise _MalformedPost(_reason(err)) from err

    def parse_events(self, request):
        try:
            parsed = list(view_class.parse_events(self, request))
        except (ImproperlyConfigured, RequestDataTooBig):
            raise
        except Exception as err:
            raise _MalformedPost(_reason(err)) from err
        post = _post.get() or _Post()
        good = []
        for index, event in enumerate(parsed):
            reason = _problem(event, post)
            if reason:
                post.skipped.append({"index": index, "reason": reason})
                provider = normalize_name(self.esp_name)
                logger.warning(
                    "webhook event skipped provider=%s index=%s reason=%s",
                    provider,
                    index,
                    reason,
                    extra={"provider": provider, "reason": reason},
                )
            else:
                good.append(event)
        post.parsed += len(good)
        return good

    attributes: dict[str, Any] = {"run_validators": run_validators, "parse_events": parse_events}
    if hasattr(view_class, "esp_to_anymail_event"):
        # One event of a batch at a time (most ESPs): a bad one is skipped, not the batch.
        def esp_to_anymail_event(self, *args, **kwargs):
            try:
                return view_class.esp_to_anymail_event(self, *args, **kwargs)
            except ImproperlyConfigured:
                raise
            except Exception as err:
                return _Unreadable(_reason(err))

        attributes["esp_to_anymail_event"] = esp_to_anymail_event
    return type(f"Checked{view_class.__name__}", (view_class,), attributes)


def _problem(event: Any, post: _Post) -> str | None:
    """Why Anymail's parsed `event` cannot be recorded, or None; a tracking event that can is
    kept checked in `post`, for the recording (one check and one serialization per event)."""
    if isinstance(event, _Unreadable):
        return event.reason
    if isinstance(event, AnymailTrackingEvent):
        try:
            post.checked[id(event)] = tracking_event_checked(event)
        except EventNotStorable as err:
            return str(err)
    return None  # checked and kept, or an inbound event of Mandrill's combined endpoint (passed on)


def tracking_view(callback: Callable) -> Callable:
    """The view of one Anymail tracking endpoint (`callback` is Anymail's own as_view())."""
    view_class = callback.view_class
    esp_name = normalize_name(view_class.esp_name)
    anymail_view = checked_view_class(view_class).as_view()

    @functools.wraps(callback)  # keeps Anymail's csrf_exempt and login_not_required marks
    def view(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            enabled = esp_name in enabled_providers()
        except Exception as err:  # a broken FIRST_WORKING_EMAIL_BACKENDS: ours to fix
            logger.error("webhook not available provider=%s reason=%s", esp_name, _reason(err))
            return error_response(503, "The service's provider configuration is broken; retry later.")
        if not enabled:
            return error_response(
                404, f"No tracking webhook for {esp_name} here: it is not a configured provider."
            )
        if request.method == "HEAD":  # some ESPs check the URL with HEAD when it is configured
            return JsonResponse({})
        if request.method == "POST":
            return _handle_post(request, anymail_view, esp_name, args, kwargs)
        if request.method == "OPTIONS":
            response = JsonResponse({"allow": ALLOWED_METHODS.split(", ")})
        else:
            response = error_response(
                405, f"Method {request.method} is not allowed; the provider POSTs events."
            )
        response["Allow"] = ALLOWED_METHODS
        return response

    return csrf_exempt(view)


def _handle_post(request: HttpRequest, anymail_view: Callable, esp_name: str, args, kwargs) -> HttpResponse:
    try:
        too_old = _stale_signature(request, esp_name)
    except RequestDataTooBig:
        return _too_large(esp_name)
    if too_old:
        message = "webhook refused provider=%s reason=stale signed timestamp age=%ss"
        logger.warning(message, esp_name, too_old, extra={"provider": esp_name, "age": too_old})
        return error_response(400, "The signed timestamp is older than the allowed webhook age.")
    post = _Post()
    token = _post.set(post)
    try:
        refusal = _parse(request, anymail_view, esp_name, args, kwargs)
    finally:
        _post.reset(token)
    if refusal is not None:
        return refusal
    if post.skipped and not post.parsed:
        _refused(esp_name, f"no readable event ({len(post.skipped)} skipped)")
        message = f"No event of this {esp_name} webhook could be read."
        return error_response(400, message, skipped=post.skipped)
    return _record(post, esp_name)


def _parse(request: HttpRequest, anymail_view: Callable, esp_name: str, args, kwargs) -> HttpResponse | None:
    """Anymail: authentication and parsing of the ESP's data, its signal handing us the events
    (into the `_post` of this request). The answer when the post is refused, else None."""
    try:
        response = anymail_view(request, *args, **kwargs)
    except AnymailWebhookValidationFailure as err:
        _refused(esp_name, _reason(err))
        return error_response(400, "Webhook authentication failed.")
    except RequestDataTooBig:
        return _too_large(esp_name)
    except _MalformedPost as err:
        _refused(esp_name, f"malformed body ({err})")
        return error_response(400, f"Malformed {esp_name} webhook body: it is not what {esp_name} sends.")
    except ImproperlyConfigured as err:
        message = "webhook not usable provider=%s reason=%s (see the system checks: manage.py check)"
        logger.error(message, esp_name, _reason(err), extra={"provider": esp_name})
        return error_response(
            500, f"The {esp_name} webhook is not configured correctly on this service; retry later."
        )
    except Exception:
        logger.exception("webhook failed provider=%s", esp_name, extra={"provider": esp_name})
        return error_response(500, "The events could not be recorded; retry later.")
    if response.status_code >= 300:  # Anymail's own answer (Amazon SNS's 401 challenge)
        return _as_json(response)
    return None


def _record(post: _Post, esp_name: str) -> HttpResponse:
    """Ours: recording. A failure here is never the ESP's fault: 5xx, so it retries."""
    by_provider: dict[str, list[AnymailTrackingEvent | CheckedEvent]] = {}
    for provider, event in post.events:
        by_provider.setdefault(provider, []).append(event)
    try:
        results = [tracking_events_record(provider=name, events=batch) for name, batch in by_provider.items()]
    except (OperationalError, InterfaceError):
        logger.exception("webhook not recorded provider=%s reason=database unavailable", esp_name)
        response = error_response(
            503, "The events could not be recorded now (database unavailable); retry later."
        )
        response["Retry-After"] = "60"
        return response
    except Exception:
        logger.exception("webhook not recorded provider=%s", esp_name, extra={"provider": esp_name})
        return error_response(500, "The events could not be recorded; retry later.")
    counts = {"stored": sum(r.stored for r in results), "duplicates": sum(r.duplicates for r in results)}
    return JsonResponse({"received": post.parsed + len(post.skipped), **counts, "skipped": post.skipped})


def _too_large(esp_name: str) -> JsonResponse:
    _refused(esp_name, "body too large")
    return error_response(413, "The webhook body is larger than this service accepts.")


def _refused(esp_name: str, reason: str) -> None:
    logger.warning("webhook refused provider=%s reason=%s", esp_name, reason, extra={"provider": esp_name})


def _as_json(response: HttpResponse) -> HttpResponse:
    """An error answer of Anymail's own (an empty body) in the JSON error format, its headers
    (WWW-Authenticate, Allow) kept."""
    if response.get("Content-Type", "").startswith("application/json"):
        return response
    replacement = error_response(response.status_code, f"{response.reason_phrase}.")
    for header in ("WWW-Authenticate", "Allow", "Retry-After"):
        if response.has_header(header):
            replacement[header] = response[header]
    return replacement


def _stale_signature(request: HttpRequest, esp_name: str) -> int | None:
    """Age in seconds of a signed timestamp older than the limit, else None (also when the ESP
    signs no timestamp: then only deduplication protects against replays)."""
    max_age = conf.webhook_max_age()
    age = rules_for(esp_name).signature_age(request) if max_age else None
    return age if age is not None and age > max_age else None


# URLs ----------------------------------------------------------------------------------------


def _is_tracking(pattern: URLPattern) -> bool:
    # Mandrill posts tracking and inbound events to one combined endpoint.
    return bool(pattern.name) and (
        pattern.name.endswith("_tracking_webhook") or pattern.name == "mandrill_webhook"
    )


def tracking_patterns() -> list[URLPattern]:
    """Anymail's tracking patterns (inbound mail is not ours)."""
    return [pattern for pattern in anymail_urls.urlpatterns if _is_tracking(pattern)]


@csrf_exempt
def not_found(request: HttpRequest, *args, **kwargs) -> JsonResponse:
    return error_response(404, "No such webhook endpoint.")


def tracking_urlpatterns() -> list[URLPattern]:
    """A view for every tracking endpoint Anymail has (each answers only while its ESP is in use;
    see `enabled_providers`), then a JSON 404 for any other path under /anymail/."""
    patterns = [
        URLPattern(pattern.pattern, tracking_view(pattern.callback), pattern.default_args, pattern.name)
        for pattern in tracking_patterns()
    ]
    patterns.append(re_path(r"", not_found, name="not_found"))
    return patterns


urlpatterns = tracking_urlpatterns()
app_name = "anymail"


# System checks -------------------------------------------------------------------------------


@register()
def check_webhook_providers(app_configs=None, **kwargs) -> list[Error]:
    """Each enabled tracking webhook can start (its packages and settings are there), and
    MAILSERVICE_WEBHOOK_PROVIDERS names only ESPs that have one."""
    try:
        enabled = enabled_providers()
    except Exception:  # the failover app's own checks report a broken chain
        return []
    views = {
        normalize_name(pattern.callback.view_class.esp_name): pattern.callback.view_class
        for pattern in tracking_patterns()
    }
    errors = [
        Error(
            f"MAILSERVICE_WEBHOOK_PROVIDERS names {name!r}, which has no Anymail tracking webhook.",
            hint=f"Use the ESP names of the URLs under /anymail/: {', '.join(sorted(views))}.",
            id="mailservice.E103",
        )
        for name in conf.webhook_providers()
        if normalize_name(name) not in views
    ]
    for key in sorted(enabled & set(views)):
        view_class = views[key]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                view_class()
        except Exception as err:
            errors.append(
                Error(
                    f"The {normalize_name(view_class.esp_name)} tracking webhook is enabled but cannot work: "
                    f"{_reason(err)}. Every post to it would be answered 500.",
                    hint="Install what it needs (amazon_ses: boto3, `pip install 'django-anymail[amazon-ses]'`) "
                    "and set its ANYMAIL_* webhook settings, or remove it from FIRST_WORKING_EMAIL_BACKENDS "
                    "and MAILSERVICE_WEBHOOK_PROVIDERS (docs/webhooks.md).",
                    id="mailservice.E102",
                )
            )
    return errors
