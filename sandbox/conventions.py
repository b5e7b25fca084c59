"""What happens to a recipient, read from its address: the sandbox's only "mailbox" logic.

The local part names the fate: `bounce+anything@...` bounces, `complain+anything@...` is
delivered and then reported as spam, `reject+anything@...` and `invalid+anything@...` are
refused by the send API itself. The bare forms (`bounce@...`) work too; matching ignores case.
Every other address is delivered.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from enum import StrEnum


class Fate(StrEnum):
    DELIVER = "deliver"
    BOUNCE = "bounce"
    COMPLAIN = "complain"
    REJECT = "reject"  # refused at send time (Mandrill: per-recipient "rejected")
    INVALID = "invalid"  # refused at send time (Mandrill: per-recipient "invalid")


class SimulatedEvent(StrEnum):
    """The tracking events the sandbox simulates, before each provider names them its own way
    (the gateway's stored `mailservice.models.TrackingEvent` is what Anymail makes of them)."""

    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


REFUSED = frozenset({Fate.REJECT, Fate.INVALID})
EVENTS_BY_FATE: dict[Fate, tuple[SimulatedEvent, ...]] = {
    Fate.DELIVER: (SimulatedEvent.DELIVERED,),
    Fate.BOUNCE: (SimulatedEvent.BOUNCED,),
    # A complaint comes after the message reached the inbox.
    Fate.COMPLAIN: (SimulatedEvent.DELIVERED, SimulatedEvent.COMPLAINED),
    Fate.REJECT: (),
    Fate.INVALID: (),
}
_PREFIXES = {fate.value: fate for fate in (Fate.BOUNCE, Fate.COMPLAIN, Fate.REJECT, Fate.INVALID)}


def fate_of(address: str, reject_patterns: Iterable[str] = ()) -> Fate:
    """The fate an address asks for; `reject_patterns` (a fault's globs) add refusals."""
    address = address.strip().lower()
    local = address.rsplit("@", 1)[0]
    tag = local.split("+", 1)[0]
    if tag in _PREFIXES:
        return _PREFIXES[tag]
    if any(fnmatch.fnmatchcase(address, pattern.strip().lower()) for pattern in reject_patterns):
        return Fate.REJECT
    return Fate.DELIVER
