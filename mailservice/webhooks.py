"""Provider tracking webhooks: Anymail's own views (and their authentication), mounted under
/anymail/, feeding one normalized event log.

Anymail validates a post, parses it into events and sends its `tracking` signal once per event.
Each tracking view is wrapped so that the events of one post are collected and recorded
together (SendGrid posts up to 1,000 at once), a malformed post is answered 400 with nothing
stored, and signed events older than MAILSERVICE_WEBHOOK_MAX_AGE can be refused.
"""
from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable
from contextvars import ContextVar

from anymail import urls as anymail_urls
from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.signals import AnymailTrackingEvent, tracking
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern

from failover.providers import normalize_name

from mailservice import conf
from mailservice.services.tracking import tracking_events_record
from mailservice.tracking_rules import rules_for

logger = logging.getLogger(__name__)

# Events of the post being handled in this context; None outside a wrapped webhook view.
_pending: ContextVar[list[tuple[str, AnymailTrackingEvent]] | None] = ContextVar("mailservice_events", default=None)

# Anymail raises these (or lets them escape) when a body is not what the provider sends.
MALFORMED = (ValueError, KeyError, TypeError, AttributeError, IndexError)
CREDENTIALS_IN_URL = re.compile(r"(\w+://)[^/@\s]+@")


@receiver(tracking, dispatch_uid="mailservice.record_tracking_event")
def record_tracking_event(sender, event: AnymailTrackingEvent, esp_name: str, **kwargs) -> None:
    pending = _pending.get()
    if pending is None:  # sent from outside a webhook view (a test, another integration)
        tracking_events_record(provider=esp_name, events=[event])
    else:
        pending.append((esp_name, event))


def error_response(status: int, message: str) -> JsonResponse:
    return JsonResponse({"errors": [{"field": None, "message": message}]}, status=status)


def collect_events(view: Callable, esp_name: str) -> Callable:
    """Wrap one Anymail tracking view: record its post's events in one go, after it succeeds."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        too_old = _stale_signature(request, esp_name)
        if too_old:
            logger.warning(
                "webhook refused provider=%s reason=stale signed timestamp age=%ss",
                esp_name,
                too_old,
                extra={"provider": esp_name, "age": too_old},
            )
            return error_response(400, "The signed timestamp is older than the allowed webhook age.")
        token = _pending.set([])
        try:
            response = view(request, *args, **kwargs)
            events = _pending.get() or []
        except AnymailWebhookValidationFailure as err:
            logger.warning(
                "webhook refused provider=%s reason=%s",
                esp_name,
                _without_credentials(str(err).splitlines()[0]),
                extra={"provider": esp_name},
            )
            return error_response(400, "Webhook authentication failed.")
        except MALFORMED as err:
            logger.warning(
                "webhook refused provider=%s reason=malformed body (%s)",
                esp_name,
                type(err).__name__,
                extra={"provider": esp_name},
            )
            return error_response(400, f"Malformed {esp_name} webhook body.")
        finally:
            _pending.reset(token)
        if response.status_code < 300:
            by_provider: dict[str, list[AnymailTrackingEvent]] = {}
            for provider, event in events:
                by_provider.setdefault(provider, []).append(event)
            for provider, provider_events in by_provider.items():
                tracking_events_record(provider=provider, events=provider_events)
        return response

    return wrapped


def _without_credentials(text: str) -> str:
    """Anymail's Mandrill error quotes the signed URL, basic-auth secret included: mask it."""
    return CREDENTIALS_IN_URL.sub(r"\1***@", text)


def _stale_signature(request: HttpRequest, esp_name: str) -> int | None:
    """Age in seconds of a signed timestamp older than the limit, else None (also when the ESP
    signs no timestamp: then only deduplication protects against replays)."""
    max_age = conf.webhook_max_age()
    read_timestamp = rules_for(esp_name).signed_timestamp
    if not max_age or read_timestamp is None:
        return None
    signed = read_timestamp(request)
    try:
        age = int(time.time() - float(signed)) if signed is not None else None
    except (TypeError, ValueError):
        return None
    return age if age is not None and age > max_age else None


def _is_tracking(pattern: URLPattern) -> bool:
    # Mandrill posts tracking and inbound events to one combined endpoint.
    return bool(pattern.name) and (pattern.name.endswith("_tracking_webhook") or pattern.name == "mandrill_webhook")


def tracking_urlpatterns() -> list[URLPattern]:
    """Anymail's tracking endpoints for every ESP it supports (inbound mail is not ours)."""
    patterns = []
    for pattern in anymail_urls.urlpatterns:
        if not _is_tracking(pattern):
            continue
        esp_name = normalize_name(pattern.callback.view_class.esp_name)
        patterns.append(
            URLPattern(pattern.pattern, collect_events(pattern.callback, esp_name), pattern.default_args, pattern.name)
        )
    return patterns


urlpatterns = tracking_urlpatterns()
app_name = "anymail"
