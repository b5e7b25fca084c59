"""Provider tracking webhooks: Anymail's own views (its authentication and its parsing), mounted
under /anymail/ (webhook_urls.py), feeding one normalized event log. docs/webhooks.md describes
the behaviour; Anymail's internals are reached only through anymail_adapter.py.

- **Only where configured.** Every tracking endpoint Anymail has is routed, but each decides per
  request whether its ESP is in use (webhook_providers.py). Any other answers 404.
- **Errors the ESP can act on.** Anymail's work on the ESP's data (authentication, parsing) is
  kept apart from ours (recording): bad credentials or a body that is not the ESP's at all are
  a 400 and store nothing; one event that cannot be parsed or stored (`storable_event`) is
  logged and skipped, the others recorded; a failure on our side is a 5xx with nothing
  half-stored, so the ESP retries (deduplication makes that safe). Every answer is JSON.
- **One batch.** The events of one post are collected, each checked once, while Anymail parses
  it, and recorded together (SendGrid posts up to 1,000 at once).
- **Replays.** Signed timestamps older than MAILSERVICE_WEBHOOK_MAX_AGE are refused.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.signals import AnymailTrackingEvent
from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from mailservice import anymail_adapter, conf
from mailservice.anymail_adapter import MalformedPost, Post, error_reason
from mailservice.api.errors import message_response
from mailservice.services.storable import CheckedEvent, storable_event
from mailservice.services.tracking import tracking_events_record
from mailservice.tracking_rules import rules_for
from mailservice.webhook_providers import enabled_providers

logger = logging.getLogger(__name__)

ALLOWED_METHODS = "POST, HEAD, OPTIONS"


@csrf_exempt
def not_found(request: HttpRequest, *args, **kwargs) -> JsonResponse:
    return message_response(404, "No such webhook endpoint.")


def tracking_view(callback: Callable) -> Callable:
    """The view of one Anymail tracking endpoint (`callback` is Anymail's own as_view())."""
    esp_name = anymail_adapter.view_esp_name(callback)
    anymail_view = anymail_adapter.checked_view(callback)

    @functools.wraps(callback)  # keeps Anymail's csrf_exempt and login_not_required marks
    def view(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            enabled = esp_name in enabled_providers()
        except Exception as err:  # a broken FIRST_WORKING_EMAIL_BACKENDS: ours to fix
            logger.error("webhook not available provider=%s reason=%s", esp_name, error_reason(err))
            return message_response(503, "The service's provider configuration is broken; retry later.")
        if not enabled:
            message = f"No tracking webhook for {esp_name} here: it is not a configured provider."
            return message_response(404, message)
        if request.method == "HEAD":  # some ESPs check the URL with HEAD when it is configured
            return JsonResponse({})
        if request.method == "POST":
            return _handle_post(request, anymail_view, esp_name, args, kwargs)
        if request.method == "OPTIONS":
            response = JsonResponse({"allow": ALLOWED_METHODS.split(", ")})
        else:
            message = f"Method {request.method} is not allowed; the provider POSTs events."
            response = message_response(405, message)
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
        return message_response(400, "The signed timestamp is older than the allowed webhook age.")
    with anymail_adapter.collecting(screen=storable_event) as post:
        refusal = _parse(request, anymail_view, esp_name, args, kwargs)
    for skipped in post.skipped:
        index, reason = skipped["index"], skipped["reason"]
        logger.warning(
            "webhook event skipped provider=%s index=%s reason=%s",
            esp_name,
            index,
            reason,
            extra={"provider": esp_name, "reason": reason},
        )
    if refusal is not None:
        return refusal
    if post.skipped and not post.parsed:
        _refused(esp_name, f"no readable event ({len(post.skipped)} skipped)")
        message = f"No event of this {esp_name} webhook could be read."
        return message_response(400, message, skipped=post.skipped)
    return _record(post, esp_name)


def _parse(request: HttpRequest, anymail_view: Callable, esp_name: str, args, kwargs) -> HttpResponse | None:
    """Anymail: authentication and parsing of the ESP's data, its signal handing us the events
    (into the Post being collected). The answer when the post is refused, else None."""
    try:
        response = anymail_view(request, *args, **kwargs)
    except AnymailWebhookValidationFailure as err:
        _refused(esp_name, error_reason(err))
        return message_response(400, "Webhook authentication failed.")
    except RequestDataTooBig:
        return _too_large(esp_name)
    except MalformedPost as err:
        _refused(esp_name, f"malformed body ({err})")
        return message_response(400, f"Malformed {esp_name} webhook body: it is not what {esp_name} sends.")
    except ImproperlyConfigured as err:
        message = "webhook not usable provider=%s reason=%s (see the system checks: manage.py check)"
        logger.error(message, esp_name, error_reason(err), extra={"provider": esp_name})
        message = f"The {esp_name} webhook is not configured correctly on this service; retry later."
        return message_response(500, message)
    except Exception:
        logger.exception("webhook failed provider=%s", esp_name, extra={"provider": esp_name})
        return message_response(500, "The events could not be recorded; retry later.")
    if response.status_code >= 300:  # Anymail's own answer (Amazon SNS's 401 challenge)
        return _as_json(response)
    return None


def _record(post: Post, esp_name: str) -> HttpResponse:
    """Ours: recording. A failure here is never the ESP's fault: 5xx, so it retries."""
    by_provider: dict[str, list[AnymailTrackingEvent | CheckedEvent]] = {}
    for provider, event in post.events:
        by_provider.setdefault(provider, []).append(event)
    try:
        results = [tracking_events_record(provider=name, events=batch) for name, batch in by_provider.items()]
    except (OperationalError, InterfaceError):
        logger.exception("webhook not recorded provider=%s reason=database unavailable", esp_name)
        message = "The events could not be recorded now (database unavailable); retry later."
        response = message_response(503, message)
        response["Retry-After"] = "60"
        return response
    except Exception:
        logger.exception("webhook not recorded provider=%s", esp_name, extra={"provider": esp_name})
        return message_response(500, "The events could not be recorded; retry later.")
    counts = {"stored": sum(r.stored for r in results), "duplicates": sum(r.duplicates for r in results)}
    return JsonResponse({"received": post.parsed + len(post.skipped), **counts, "skipped": post.skipped})


def _too_large(esp_name: str) -> JsonResponse:
    _refused(esp_name, "body too large")
    return message_response(413, "The webhook body is larger than this service accepts.")


def _refused(esp_name: str, reason: str) -> None:
    logger.warning("webhook refused provider=%s reason=%s", esp_name, reason, extra={"provider": esp_name})


def _as_json(response: HttpResponse) -> HttpResponse:
    """An error answer of Anymail's own (an empty body) in the JSON error format, its headers
    (WWW-Authenticate, Allow) kept."""
    if response.get("Content-Type", "").startswith("application/json"):
        return response
    replacement = message_response(response.status_code, f"{response.reason_phrase}.")
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
