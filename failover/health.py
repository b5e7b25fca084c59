"""The chain's memory, kept in Django's cache so every process sharing the cache shares it.

One entry per chain holds which provider sends start at (and until when) and each provider's
last failure. A batch reads it once and writes it only when something changes, so a healthy
primary costs one cache read per batch and no write.
"""
from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import caches

# Keep failure records visible (failover_status, the API) for at least a day, whatever the
# memory window; the window itself is decided by the timestamps stored inside the entry.
MIN_ENTRY_SECONDS = 86400
KEY_PREFIX = "failover:v1:"


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
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_cache_value(self) -> dict[str, Any]:
        return {"active": self.active, "until": self.until, "failures": self.failures}

    @classmethod
    def from_cache_value(cls, value: Any) -> ChainState:
        if not isinstance(value, dict):
            return cls()
        return cls(
            active=value.get("active"),
            until=float(value.get("until") or 0.0),
            failures=dict(value.get("failures") or {}),
        )


class HealthStore:
    def __init__(self, names: list[str], *, cache_alias: str, timeout: float):
        self.names = names
        self.cache_alias = cache_alias
        self.timeout = timeout
        self.key = chain_key(tuple(names))

    @property
    def cache(self):
        # Django hands each thread its own cache connection: look it up at use, not at init.
        return caches[self.cache_alias]

    def load(self) -> ChainState:
        return ChainState.from_cache_value(self.cache.get(self.key))

    def save(self, state: ChainState) -> None:
        self.cache.set(self.key, state.as_cache_value(), max(self.timeout, MIN_ENTRY_SECONDS))

    def forget(self) -> None:
        self.cache.delete(self.key)

    def order(self, state: ChainState) -> list[str]:
        """Providers to try: from the remembered one on, wrapping round, else priority order."""
        if state.active in self.names and now() < state.until:
            start = self.names.index(state.active)
            return self.names[start:] + self.names[:start]
        return list(self.names)

    def is_failing(self, state: ChainState, name: str) -> bool:
        record = state.failures.get(name)
        return bool(record) and now() - float(record.get("at", 0)) < self.timeout

    def record_failure(self, state: ChainState, name: str, *, error: str, error_class: str) -> bool:
        """Note a failure; True when this is news (the provider was not already failing)."""
        was_failing = self.is_failing(state, name)
        state.failures[name] = {"at": now(), "error": error, "error_class": error_class}
        return not was_failing

    def record_success(self, state: ChainState, name: str) -> tuple[bool, bool]:
        """Note a success. Returns (state changed, provider recovered from a failure)."""
        recovered = name in state.failures
        if recovered:
            del state.failures[name]
        changed = recovered
        if name == self.names[0]:
            # The preferred provider works: forget any detour.
            if state.active is not None:
                state.active, state.until = None, 0.0
                changed = True
        elif state.active != name or now() >= state.until:
            state.active, state.until = name, now() + self.timeout
            changed = True
        return changed, recovered

    def describe(self, state: ChainState) -> list[dict[str, Any]]:
        """Each provider with its state, for failover_status and the gateway's API."""
        first = self.order(state)[0]
        rows = []
        for name in self.names:
            record = state.failures.get(name) or {}
            if self.is_failing(state, name):
                status = "failing"
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
                }
            )
        return rows
