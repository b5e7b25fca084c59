"""Where the gateway leans on Anymail's internals, all in one place: read this module again before
upgrading django-anymail. tests/webhooks/test_anymail_adapter.py names the version it was written
against and fails, naming the part, when one of these changes:

- the tracking URL patterns of `anymail.urls`, found by their names (`<esp>_tracking_webhook`,
  and Mandrill's combined `mandrill_webhook`), each callback with its `view_class`, whose
  `esp_name` says the ESP;
- the steps of Anymail's view, overridden in a subclass so that its reading of the ESP's data is
  kept apart from our recording: `run_validators` (authentication), `parse_events` (the whole
  body) and, where the ESP has one, `esp_to_anymail_event` (one event of a batch);
- the view sending its `tracking` signal once per parsed event, synchronously, in the request's
  context, with the very objects `parse_events` returned: a ContextVar holds the post being
  parsed, and each event is matched by its identity to what `screen` made of it;
- a sending backend's `esp_name`, or the module of an Anymail backend that cannot be imported.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from anymail import urls as anymail_urls
from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.signals import AnymailTrackingEvent, tracking
from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig
from django.dispatch import receiver
from django.urls import URLPattern
from django.utils.module_loading import import_string

from failover.providers import normalize_name
from mailservice.services.storable import EventNotStorable
from mailservice.services.tracking import tracking_events_record

CREDENTIALS_IN_URL = re.compile(r"(\w+://)[^/@\s]+@")
MAX_REASON = 200


class MalformedPost(Exception):
    """The body is not what the ESP sends (Anymail could not read it as a whole)."""


@dataclass(frozen=True)
class _Unreadable:
    """Stands in, in Anymail's list of parsed events, for one event it could not parse."""

    reason: str


@dataclass
class Post:
    """What Anymail made of one webhook post, collected while its view runs."""

    # What to record for each parsed tracking event (EventNotStorable refuses it); None: the event.
    screen: Callable[[AnymailTrackingEvent], Any] | None = None
    # (esp_name, what `screen` made of the event), in the order Anymail's signal sent them.
    events: list[tuple[str, Any]] = field(default_factory=list)
    parsed: int = 0  # events Anymail parsed and passed on, tracking or not
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"index", "reason"}
    # What `screen` made of each event, by the identity of the object Anymail's signal will carry.
    screened: dict[int, Any] = field(default_factory=dict)


_post: ContextVar[Post | None] = ContextVar("mailservice_webhook_post", default=None)


@contextmanager
def collecting(*, screen: Callable[[AnymailTrackingEvent], Any]) -> Iterator[Post]:
    """The events Anymail's view parses in this context, each passed through `screen` once,
    collected into the Post yielded instead of being recorded one by one."""
    post = Post(screen=screen)
    token = _post.set(post)
    try:
        yield post
    finally:
        _post.reset(token)


@receiver(tracking, dispatch_uid="mailservice.record_tracking_event")
def record_tracking_event(sender, event: AnymailTrackingEvent, esp_name: str, **kwargs) -> None:
    post = _post.get()
    if post is None:  # sent from outside a webhook view (a test, another integration)
        tracking_events_record(provider=esp_name, events=[event])
    else:
        post.events.append((esp_name, post.screened.get(id(event), event)))


def error_reason(err: BaseException) -> str:
    """An exception as a one-line reason for a log (type and first line, credentials masked)."""
    text = str(err).splitlines()[0] if str(err) else ""
    reason = f"{type(err).__name__}: {text}" if text else type(err).__name__
    # Anymail's Mandrill error quotes the signed URL, basic-auth secret included.
    return CREDENTIALS_IN_URL.sub(r"\1***@", reason)[:MAX_REASON]


# Anymail's URLs and view classes -----------------------------------------------------------


def _is_tracking(pattern: URLPattern) -> bool:
    # Mandrill posts tracking and inbound events to one combined endpoint.
    name = pattern.name or ""
    return name.endswith("_tracking_webhook") or name == "mandrill_webhook"


def tracking_patterns() -> list[URLPattern]:
    """Anymail's tracking patterns (inbound mail is not ours)."""
    return [pattern for pattern in anymail_urls.urlpatterns if _is_tracking(pattern)]


def view_esp_name(callback: Callable) -> str:
    """The ESP of one of Anymail's views (its as_view()), as `normalize_name` spells it."""
    return normalize_name(callback.view_class.esp_name)


def tracking_views() -> dict[str, Callable]:
    """Each ESP with a tracking endpoint (as `normalize_name` spells it) and Anymail's view."""
    return {view_esp_name(pattern.callback): pattern.callback for pattern in tracking_patterns()}


def view_setup_error(callback: Callable) -> Exception | None:
    """Why Anymail's view cannot start (a missing package or setting), or None: the view's class
    is created as Anymail creates it for each request."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            callback.view_class()
    except Exception as err:
        return err
    return None


@functools.lru_cache(maxsize=64)
def backend_esp_name(backend_path: str) -> str | None:
    """Anymail's esp_name of a sending backend; the module of an Anymail backend that cannot be
    imported (`anymail.backends.amazon_ses`); None for other backends (SMTP, console, locmem)."""
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


def checked_view(callback: Callable) -> Callable:
    """Anymail's view of one tracking endpoint (`callback`, its as_view()), with its parsing kept
    apart from our recording: an exception while validating or parsing (Anymail reading the
    ESP's data) becomes MalformedPost, one event that cannot be parsed or that `screen` refuses
    is listed in the Post's `skipped`, and configuration errors (ImproperlyConfigured: a missing
    package or setting) and bad credentials pass through unchanged."""
    return _checked_view_class(callback.view_class).as_view()


def _checked_view_class(view_class: type) -> type:
    def run_validators(self, request):
        try:
            view_class.run_validators(self, request)
        except (AnymailWebhookValidationFailure, ImproperlyConfigured, RequestDataTooBig):
            raise
        except Exception as err:  # Anymail choking on the body while checking it
            raise MalformedPost(error_reason(err)) from err

    def parse_events(self, request):
        try:
            parsed = list(view_class.parse_events(self, request))
        except (ImproperlyConfigured, RequestDataTooBig):
            raise
        except Exception as err:
            raise MalformedPost(error_reason(err)) from err
        post = _post.get() or Post()
        good = []
        for index, event in enumerate(parsed):
            reason = _problem(event, post)
            if reason:
                post.skipped.append({"index": index, "reason": reason})
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
                return _Unreadable(error_reason(err))

        attributes["esp_to_anymail_event"] = esp_to_anymail_event
    return type(f"Checked{view_class.__name__}", (view_class,), attributes)


def _problem(event: Any, post: Post) -> str | None:
    """Why Anymail's parsed `event` cannot be recorded, or None; what `screen` made of a
    tracking event is kept in `post`, for the signal's receiver."""
    if isinstance(event, _Unreadable):
        return event.reason
    if isinstance(event, AnymailTrackingEvent) and post.screen is not None:
        try:
            post.screened[id(event)] = post.screen(event)
        except EventNotStorable as err:
            return str(err)
    return None  # screened and kept, or an inbound event of Mandrill's combined endpoint (passed on)
