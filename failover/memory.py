"""The chain's memory, kept in Django's cache so every process sharing the cache shares it.

One entry per chain holds which provider sends start at (and until when), each provider's last
failure and when it is next probed, and the providers waiting out a Retry-After. A batch reads
it once and writes it only when something changes, so a healthy primary costs one cache read per
batch and no write. Probes and send-rate windows use their own small cache keys, touched only
when a probe is due or a provider has a rate limit (docs/failover.md, "Memory").
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import caches

# Keep failure records visible (failover_status, the API) for at least a day, whatever the
# memory window; the window itself is decided by the timestamps stored inside the entry.
MIN_ENTRY_SECONDS = 86400
KEY_PREFIX = "failover:v1:"
# While the cache is unreachable, one warning per this many seconds (per process).
CACHE_WARNING_EVERY = 10.0

logger = logging.getLogger(__name__)
_warned = {"at": -CACHE_WARNING_EVERY}
_warned_lock = threading.Lock()


def _cache_failed(action: str, error: Exception) -> None:
    """The memory is an optimisation: a cache that cannot be reached (Redis restarting) must
    not stop sends. Each process then sends in priority order, without probes or rate caps,
    until the cache answers again; it says so, once in a while."""
    moment = time.monotonic()
    with _warned_lock:
        if moment - _warned["at"] < CACHE_WARNING_EVERY:
            return
        _warned["at"] = moment
    logger.warning(
        "failover memory unavailable during %s (%s); sending in priority order until the cache answers",
        action,
        type(error).__name__,
        extra={"action": action, "error_class": type(error).__name__},
    )


@functools.lru_cache(maxsize=64)
def chain_key(names: tuple[str, ...]) -> str:
    """One cache entry per chain, so two differently configured chains never mix their memory."""
    return KEY_PREFIX + hashlib.sha256("\0".join(names).encode()).hexdigest()[:16]


def now() -> float:
    """The clock; tests replace it to cross the memory window without sleeping."""
    return time.time()


@dataclass
class ChainState:
    active: str | None = None  # the provider sends start at, while `until` is in the future
    until: float = 0.0
    # name -> {"at", "error", "error_class", "probes" (failed probes in a row), "next_probe"}
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    # name -> when its Retry-After ends: it is skipped until then
    waits: dict[str, float] = field(default_factory=dict)

    def as_cache_value(self) -> dict[str, Any]:
        return {"active": self.active, "until": self.until, "failures": self.failures, "waits": self.waits}

    @classmethod
    def from_cache_value(cls, value: Any) -> ChainState:
        if not isinstance(value, dict):
            return cls()
        return cls(
            active=value.get("active"),
            until=float(value.get("until") or 0.0),
            failures=dict(value.get("failures") or {}),
            waits=dict(value.get("waits") or {}),
        )


class ChainMemory:
    def __init__(self, names: list[str], *, cache_alias: str, timeout: float, probe_interval: float):
        self.names = names
        self.cache_alias = cache_alias
        self.timeout = timeout
        self.probe_interval = probe_interval
        self.key = chain_key(tuple(names))

    @staticmethod
    def now() -> float:
        return now()

    @property
    def cache(self):
        # Django hands each thread its own cache connection: look it up at use, not at init.
        return caches[self.cache_alias]

    def load(self, *, strict: bool = False) -> ChainState:
        """The memory; an empty one when the cache cannot be reached, unless `strict` (a report
        of the providers' states must not pass an unknown state off as a healthy one)."""
        try:
            return ChainState.from_cache_value(self.cache.get(self.key))
        except Exception as error:
            if strict:
                raise
            _cache_failed("load", error)
            return ChainState()

    def save(self, state: ChainState) -> None:
        try:
            self.cache.set(self.key, state.as_cache_value(), max(self.timeout, MIN_ENTRY_SECONDS))
        except Exception as error:
            _cache_failed("save", error)

    def forget(self) -> None:
        self.cache.delete(self.key)

    # Where sends start ---------------------------------------------------------------------

    def detour(self, state: ChainState) -> str | None:
        """The provider sends start at instead of the first, while the memory lasts."""
        if state.active is not None and state.active in self.names and now() < state.until:
            return state.active
        return None

    def order(self, state: ChainState) -> list[str]:
        """Providers to try: from the remembered one on, wrapping round, else priority order."""
        active = self.detour(state)
        if active is None:
            return list(self.names)
        start = self.names.index(active)
        return self.names[start:] + self.names[:start]

    def waiting(self, state: ChainState, name: str) -> bool:
        """True while the provider's Retry-After lasts: it is skipped, not tried."""
        return name in state.waits and state.waits[name] > now()

    def is_failing(self, state: ChainState, name: str) -> bool:
        record = state.failures.get(name)
        return bool(record) and now() - float(record.get("at", 0)) < self.timeout

    # Probes --------------------------------------------------------------------------------

    def probe_due(self, state: ChainState) -> str | None:
        """The highest-priority failing provider above the detour whose probe is due, if any.

        Read from the state the batch loaded anyway, so no cache call is spent while none is due.
        A provider waiting out a Retry-After is never probed: the wait wins.
        """
        if state.active is None:
            return None
        active = self.detour(state)
        if active is None:
            return None
        moment = now()
        for name in self.names[: self.names.index(active)]:
            record = state.failures.get(name)
            if record and not self.waiting(state, name) and moment >= float(record.get("next_probe", 0)):
                return name
        return None

    def claim_probe(self, state: ChainState, name: str) -> bool:
        """Win the one probe of this interval across every process sharing the cache.

        Processes that loaded the same memory see the same due time, so they race for one key
        named after it; the next interval's probe has a key of its own.
        """
        record = state.failures[name]
        due = int(float(record.get("next_probe", 0)))
        interval = self.interval(record)
        # Winner or not, this process now agrees the next probe is an interval away.
        record["next_probe"] = now() + interval
        try:
            return bool(
                self.cache.add(f"{self.key}:probe:{name}:{due}", 1, timeout=max(60, int(interval) * 2))
            )
        except Exception as error:
            _cache_failed("probe", error)
            return False

    def interval(self, record: dict[str, Any]) -> float:
        """Seconds to the next probe: the interval, doubled per failed probe, capped by the memory."""
        return min(self.probe_interval * (2 ** int(record.get("probes", 0))), self.timeout)

    # Outcomes ------------------------------------------------------------------------------

    def record_failure(
        self, state: ChainState, name: str, *, error: str, error_class: str, probe: bool
    ) -> bool:
        """Note a failure; True when this is news (the provider was not already failing)."""
        was_failing = self.is_failing(state, name)
        previous = state.failures.get(name) or {}
        probes = int(previous.get("probes", 0)) + 1 if probe else int(previous.get("probes", 0))
        record = {"at": now(), "error": error, "error_class": error_class, "probes": probes}
        record["next_probe"] = now() + self.interval(record)
        state.failures[name] = record
        return not was_failing

    def record_wait(self, state: ChainState, name: str, seconds: float) -> float:
        """Skip the provider for `seconds` (its Retry-After), capped by the memory; returns the wait."""
        wait = max(0.0, min(seconds, self.timeout))
        state.waits[name] = now() + wait
        return wait

    def record_success(self, state: ChainState, name: str) -> tuple[bool, bool]:
        """Note a success. Returns (state changed, provider recovered from a failure)."""
        if state.active is None and not state.failures and not state.waits and name == self.names[0]:
            return False, False  # the everyday case: nothing to remember
        recovered = name in state.failures
        changed = recovered or name in state.waits
        state.failures.pop(name, None)
        state.waits.pop(name, None)
        position = self.names.index(name)
        if position == 0 or not any(self.is_failing(state, other) for other in self.names[:position]):
            # The first provider works, or those before this one only asked to wait (a wait is
            # not an outage): no detour; they are tried again once their wait ends.
            if state.active is not None:
                state.active, state.until = None, 0.0
                changed = True
        elif state.active != name or now() >= state.until:
            state.active, state.until = name, now() + self.timeout
            changed = True
        return changed, recovered

    # Rate limits ---------------------------------------------------------------------------

    def take_send(self, name: str, limit: int, period: float) -> bool:
        """Count one send against the provider's rate limit in the current window, across every
        process sharing the cache; False when the window's sends are spent."""
        window = int(now() // period)
        key = f"{self.key}:rate:{name}:{window}"
        try:
            self.cache.add(key, 0, timeout=max(1, int(period * 2)))
            try:
                return self.cache.incr(key) <= limit
            except ValueError:  # the window's key expired between add and incr: a new window
                self.cache.add(key, 1, timeout=max(1, int(period * 2)))
                return True
        except Exception as error:
            _cache_failed("rate limit", error)
            return True

    # Reporting -----------------------------------------------------------------------------

    def describe(self, state: ChainState) -> list[dict[str, Any]]:
        """Each provider with its state, for failover_status and the gateway's API."""
        first = self.order(state)[0]
        rows = []
        for name in self.names:
            record = state.failures.get(name) or {}
            if self.is_failing(state, name):
                status = "failing"
            elif self.waiting(state, name):
                status = "waiting"
            elif name == first:
                status = "active"
            else:
                status = "standby"
            rows.append(
                {
                    "name": name,
                    "state": status,
                    "active_until": state.until if name == first and state.active == name else None,
                    "last_error": record.get("error"),
                    "last_error_class": record.get("error_class"),
                    "last_failure_at": record.get("at"),
                    "next_probe_at": record.get("next_probe") if status == "failing" else None,
                    "retry_after_until": state.waits.get(name) if self.waiting(state, name) else None,
                }
            )
        return rows
