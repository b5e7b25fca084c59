"""Each ESP's tracking quirks, in one table: adding tracking for an ESP is one entry here (plus
tests); the recording code (services/tracking.py) and the webhook views (webhooks.py) only ask
the table. docs/architecture.md ("Where to add…", "An ESP") walks through it.

Anymail already normalizes each ESP's events into `AnymailTrackingEvent`; what remains
ESP-specific is what its normalization cannot say: which bounces are permanent, which raw event
means "delivered", whether events carry ids, and where a signed timestamp is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from anymail.signals import AnymailTrackingEvent, EventType
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

from failover.providers import normalize_name


def _every_bounce(raw: Mapping[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class TrackingRules:
    name: str  # the provider name, as failover.providers.normalize_name gives it
    # Anymail reports some temporary failures as "bounced" too; only a permanent bounce may
    # suppress an address. Called with the raw ESP event.
    is_permanent_bounce: Callable[[Mapping[str, Any]], bool] = _every_bounce
    # Raw event names (the raw event's "event" field) that mean the receiving server accepted
    # the message, for an ESP that sends no "delivered" event of its own.
    delivered_events: frozenset[str] = frozenset()
    # False: the ESP gives events no id, so an event is keyed on a hash of its raw form and the
    # same event posted twice is still stored once.
    has_event_ids: bool = True
    # Reads the timestamp the ESP signs in a webhook post, for MAILSERVICE_WEBHOOK_MAX_AGE;
    # None: the ESP signs none, and only deduplication protects against replays.
    signed_timestamp: Callable[[HttpRequest], Any] | None = None

    def permanent_bounce(self, event: AnymailTrackingEvent) -> bool:
        return event.event_type == EventType.BOUNCED and self.is_permanent_bounce(_raw(event.esp_event))

    def status_event_type(self, event_type: str, raw: Any) -> str:
        """The event type that decides the recipient's status."""
        if self.delivered_events and _raw(raw).get("event") in self.delivered_events:
            return EventType.DELIVERED
        return event_type

    def signature_age(self, request: HttpRequest) -> int | None:
        """Seconds since the timestamp signed in this post; None when the ESP signs none or it
        cannot be read (a body that is not the ESP's: Anymail refuses it). A body too large to
        read raises RequestDataTooBig."""
        if self.signed_timestamp is None:
            return None
        try:
            signed = self.signed_timestamp(request)
        except RequestDataTooBig:
            raise
        except Exception:  # not JSON, or nested past the parser's depth
            return None
        try:
            return int(time.time() - float(signed))
        except (TypeError, ValueError, OverflowError):  # none signed, or not a number
            return None


def _sendgrid_signed_timestamp(request: HttpRequest) -> Any:
    return request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp")


def _mailgun_signed_timestamp(request: HttpRequest) -> Any:
    """Mailgun signs a timestamp in every post: in the JSON body, or as a form field (legacy)."""
    try:
        return json.loads(request.body)["signature"]["timestamp"]
    except (ValueError, KeyError, TypeError):
        return request.POST.get("timestamp") if request.content_type != "application/json" else None


RULES: dict[str, TrackingRules] = {
    rules.name: rules
    for rules in (
        # "bounce" is permanent; "blocked" (also reported as bounced) is temporary.
        TrackingRules(
            "sendgrid",
            is_permanent_bounce=lambda raw: raw.get("type", "bounce") == "bounce",
            signed_timestamp=_sendgrid_signed_timestamp,
        ),
        # Mailgun's temporary failures arrive as deferred, so every bounce is permanent.
        TrackingRules("mailgun", signed_timestamp=_mailgun_signed_timestamp),
        # Mandrill: soft_bounce is temporary; its "send" means the receiving server accepted
        # the message (it has no "delivered"); its events carry no id and nothing is signed
        # with a timestamp.
        TrackingRules(
            "mandrill",
            is_permanent_bounce=lambda raw: raw.get("event") == "hard_bounce",
            delivered_events=frozenset({"send"}),
            has_event_ids=False,
        ),
    )
}
# Every other ESP Anymail supports: its normalized events are taken as they are.
DEFAULT_RULES = TrackingRules("")


def rules_for(provider: str) -> TrackingRules:
    return RULES.get(normalize_name(provider), DEFAULT_RULES)


def _raw(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
