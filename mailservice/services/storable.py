"""Whether a provider's tracking event can be stored as it is, and its raw event as the JSON text
to store, serialized once (docs/webhooks.md, "Errors and retries").

An event whose data cannot be stored (a recipient that is not a string, a NaN, a NUL character)
is refused with EventNotStorable, which names the field at fault and never its content. The
webhook view asks this of every event of a post, to name a bad one by its position; recording
asks it only of events that reach it another way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from anymail.signals import AnymailTrackingEvent

# The longest description or MTA response stored, and the raw event's fallback text.
MAX_TEXT = 2000
# The raw event as stored: strict JSON (no NaN), compact, non-ASCII kept as it is.
RAW_JSON = json.JSONEncoder(allow_nan=False, default=str, ensure_ascii=False, separators=(",", ":"))


class EventNotStorable(ValueError):
    """The event's data cannot be stored as it is; the message says why (no event content)."""


@dataclass(frozen=True)
class CheckedEvent:
    """An event that can be stored, with its raw provider event as the JSON text to store. The
    webhook view checks every event of a post and passes these on, so that recording neither
    checks nor serializes an event a second time."""

    event: AnymailTrackingEvent
    raw_json: str


def storable_event(event: AnymailTrackingEvent) -> CheckedEvent:
    """The event ready to store, or EventNotStorable naming the field at fault (never its content)."""
    if event.recipient is not None:
        if not isinstance(event.recipient, str):
            raise EventNotStorable(f"the recipient is a {type(event.recipient).__name__}, not a string")
        _check_text("recipient", event.recipient)
    for name in ("message_id", "event_id", "event_type"):
        value = getattr(event, name, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise EventNotStorable(f"the {name} is a {type(value).__name__}, not a string")
        _check_text(name, str(value))
    if event.timestamp is not None and not isinstance(event.timestamp, datetime):
        raise EventNotStorable("the timestamp is not a date")
    for name in ("description", "mta_response"):
        value = getattr(event, name, None)
        if value is not None:
            _check_text(name, str(value))
    return CheckedEvent(event, _raw_json(event.esp_event))


def _check_text(name: str, value: str) -> None:
    # NUL and lone surrogates are refused by PostgreSQL's text and jsonb (and by UTF-8); an
    # ASCII string (known without reading it) has no surrogate.
    if "\x00" in value:
        raise EventNotStorable(f"the {name} contains a NUL character")
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise EventNotStorable(f"the {name} is not valid Unicode") from None


def _raw_json(value: Any) -> str:
    """The raw provider event as strict JSON text that every database stores, serialized once:
    EventNotStorable for NaN or Infinity (not JSON: SQLite's JSON check refuses them,
    PostgreSQL's jsonb too), NUL characters and lone surrogates (PostgreSQL refuses both).
    Mailgun's legacy form posts are QueryDicts; objects JSON has no form for become strings."""
    if hasattr(value, "lists"):
        value = {key: values if len(values) > 1 else values[0] for key, values in value.lists()}
    try:
        text = RAW_JSON.encode(value)
    except ValueError:
        if _json_with_nan(value):
            message = "the event contains a number that is not finite (NaN or Infinity)"
            raise EventNotStorable(message) from None
        text = RAW_JSON.encode({"repr": repr(value)[:MAX_TEXT]})
    except (TypeError, RecursionError):
        text = RAW_JSON.encode({"repr": repr(value)[:MAX_TEXT]})
    if "\\u0000" in text:  # how JSON writes NUL, or a backslash before "u0000": look closer
        for string in _strings(json.loads(text)):
            _check_text("event", string)
    _check_text("event", text)  # a lone surrogate is written out as it is
    return text


def _json_with_nan(value: Any) -> bool:
    """Whether `value` is JSON but for NaN or Infinity (strict JSON refused it for one of them,
    not for a circular reference)."""
    try:
        json.dumps(value, default=str)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _strings(data) -> Iterable[str]:
    """Every string of decoded JSON, keys included."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
