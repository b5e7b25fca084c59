"""Faults per provider: what each provider does wrong, and the decision taken for each request.

A fault is plain data (`Fault`, JSON over the control API). The board holds one per provider
and turns it into a `Decision` per request; error rates draw from a per-provider
`random.Random` seeded when the fault is set, so the same seed gives the same sequence of
failures for the same sequence of requests.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from sandbox.conf import DEFAULT_HOLD_SECONDS
from sandbox.exceptions import FaultSpecError, UnknownProviderError
from sandbox.providers import PROVIDER_NAMES, provider_spec

DEFAULT_RETRY_AFTER = 1
DEFAULT_ERROR_STATUS = 503


@dataclass(frozen=True)
class Fault:
    """What one provider does wrong; the default value is a healthy provider.

    Precedence when several are set: `down`, then `timeout`, then `status`, `auth`, and the
    `error_rate` draw; `delay_ms` slows every answer; `reject` adds refused addresses.
    """

    down: bool = False  # connection refused: the provider's listening socket is closed
    status: int | None = None  # answer every send with this HTTP status, in the provider's error format
    retry_after: int | None = None  # Retry-After seconds sent with 429 (default 1) or any status
    auth: bool = False  # answer as the provider does to a revoked API key
    delay_ms: int = 0  # slow: wait this long before answering
    timeout: bool = False  # accept the message, then hold the answer back (read timeout)
    hold_ms: int | None = None  # how long `timeout` holds (default DEFAULT_HOLD_SECONDS)
    error_rate: float = 0.0  # share of sends (0-1) answered with error_status
    error_status: int = DEFAULT_ERROR_STATUS
    seed: int | None = None  # seed of the error_rate draws (default: the sandbox's --seed)
    reject: tuple[str, ...] = field(default_factory=tuple)  # address globs refused like reject+...@

    def __post_init__(self) -> None:
        for name in ("status", "error_status"):
            value = getattr(self, name)
            if value is not None and not 400 <= value <= 599:
                raise FaultSpecError(f"{name} must be an HTTP error status (400-599), not {value}.")
        if not 0.0 <= self.error_rate <= 1.0:
            raise FaultSpecError(f"error_rate must be between 0 and 1, not {self.error_rate}.")
        for name in ("delay_ms", "hold_ms", "retry_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise FaultSpecError(f"{name} must not be negative.")

    @property
    def healthy(self) -> bool:
        return self == Fault()

    def describe(self) -> str:
        """A short label for logs and the message store ('down', 'status=503', 'slow=200ms'...)."""
        parts = []
        if self.down:
            parts.append("down")
        if self.timeout:
            parts.append("timeout")
        if self.status:
            parts.append(f"status={self.status}")
        if self.auth:
            parts.append("auth")
        if self.error_rate:
            parts.append(f"error_rate={self.error_rate}")
        if self.delay_ms:
            parts.append(f"slow={self.delay_ms}ms")
        if self.reject:
            parts.append(f"reject={','.join(self.reject)}")
        return " ".join(parts) or "none"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["reject"] = list(self.reject)
        return data

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        """Build from a control-API body; unknown keys and wrong types are refused by name."""
        if not isinstance(data, Mapping):
            raise FaultSpecError('A fault is a JSON object, e.g. {"status": 503}.')
        types = {f.name: f.type for f in fields(cls)}
        unknown = set(data) - set(types)
        if unknown:
            raise FaultSpecError(
                f"Unknown fault field(s): {', '.join(sorted(unknown))}; known: {', '.join(types)}."
            )
        values: dict[str, Any] = {}
        for name, value in data.items():
            values[name] = _coerce(name, value)
        return cls(**values)


def _coerce(name: str, value: Any) -> Any:
    try:
        if name in ("down", "auth", "timeout"):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if name in ("status", "retry_after", "hold_ms", "seed"):
            if value is None:
                return None
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if name in ("delay_ms", "error_status"):
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if name == "error_rate":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if name == "reject":
            if isinstance(value, str):
                value = [value]
            if not all(isinstance(item, str) for item in value):
                raise TypeError
            return tuple(value)
    except (TypeError, ValueError):
        raise FaultSpecError(f"Fault field {name!r} has an invalid value {value!r}.") from None
    raise FaultSpecError(f"Unknown fault field {name!r}.")


class Action(StrEnum):
    ANSWER = "answer"  # behave as the healthy provider
    ERROR = "error"  # answer with an HTTP error status
    AUTH = "auth"  # answer as to a revoked key
    TIMEOUT = "timeout"  # accept, then hold the answer back
    REFUSE_CONNECTION = "refuse_connection"  # down: close without answering (the listener is closed too)


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: float = 0.0  # seconds to wait before answering
    status: int | None = None
    retry_after: int | None = None
    hold: float = 0.0  # seconds, for TIMEOUT
    reject: tuple[str, ...] = ()
    label: str | None = None  # which fault caused a non-ANSWER action


class FaultBoard:
    """The current fault of each provider; thread-safe; notifies on every change."""

    def __init__(self, providers: Iterable[str] = PROVIDER_NAMES, *, default_seed: int | None = None):
        self.providers = tuple(providers)
        self.default_seed = default_seed
        self._lock = threading.Lock()
        self._changing = threading.Lock()
        self._faults: dict[str, Fault] = {name: Fault() for name in self.providers}
        self._random = {name: random.Random(default_seed) for name in self.providers}
        self._listeners: list[Callable[[str, Fault], None]] = []

    def subscribe(self, listener: Callable[[str, Fault], None]) -> None:
        """`listener(provider, fault)` runs after each change (the server opens/closes listeners)."""
        self._listeners.append(listener)

    def get(self, provider: str) -> Fault:
        self._check(provider)
        with self._lock:
            return self._faults[provider]

    def all(self) -> dict[str, Fault]:
        with self._lock:
            return dict(self._faults)

    def set(self, provider: str, fault: Fault) -> Fault:
        """Replace a provider's fault; restarts its error-rate sequence from the seed."""
        self._check(provider)
        # One change at a time from board to listeners: two racing calls (down, then clear)
        # must not leave the board saying one thing and the provider's port doing the other.
        with self._changing:
            with self._lock:
                self._faults[provider] = fault
                seed = fault.seed if fault.seed is not None else self.default_seed
                self._random[provider] = random.Random(seed)
            for listener in self._listeners:
                listener(provider, fault)
        return fault

    def clear(self, provider: str | None = None) -> None:
        for name in [provider] if provider else self.providers:
            self.set(name, Fault())

    def decide(self, provider: str) -> Decision:
        """The action for one request now; draws the error-rate dice once per request."""
        with self._lock:
            fault = self._faults[provider]
            failed_draw = fault.error_rate > 0 and self._random[provider].random() < fault.error_rate
        delay = fault.delay_ms / 1000.0
        common = {"delay": delay, "reject": fault.reject}
        if fault.down:
            return Decision(Action.REFUSE_CONNECTION, label="down", **common)
        if fault.timeout:
            hold = DEFAULT_HOLD_SECONDS if fault.hold_ms is None else fault.hold_ms / 1000.0
            return Decision(Action.TIMEOUT, hold=hold, label="timeout", **common)
        if fault.status is not None:
            return Decision(
                Action.ERROR,
                status=fault.status,
                retry_after=_retry_after(fault, fault.status),
                label=f"status={fault.status}",
                **common,
            )
        if fault.auth:
            return Decision(Action.AUTH, label="auth", **common)
        if failed_draw:
            return Decision(
                Action.ERROR,
                status=fault.error_status,
                retry_after=_retry_after(fault, fault.error_status),
                label=f"error_rate={fault.error_rate}",
                **common,
            )
        return Decision(Action.ANSWER, **common)

    def _check(self, provider: str) -> None:
        if provider not in self.providers:
            raise UnknownProviderError(provider, self.providers)


def _retry_after(fault: Fault, status: int) -> int | None:
    if fault.retry_after is not None:
        return fault.retry_after
    return DEFAULT_RETRY_AFTER if status == 429 else None


# Command-line shorthand ------------------------------------------------------------------

KINDS = ("down", "clear", "5xx", "status", "auth", "slow", "timeout", "error-rate", "reject")


def fault_from_words(kind: str, value: str | None = None, **options: Any) -> Fault:
    """`fault mailgun down`, `fault sendgrid 503`, `fault mandrill slow 2000`, ... as a Fault.

    `options` are the CLI's --retry-after, --seed, --status (error-rate's status) and
    --hold-ms; None values are ignored.
    """
    kind = kind.strip().lower()
    options = {key: val for key, val in options.items() if val is not None}
    try:
        if kind.isdigit():
            value, kind = kind, "status"
        if kind in ("clear", "ok", "up", "none"):
            return Fault()
        if kind == "down":
            return Fault(down=True)
        if kind == "5xx":
            return Fault(status=int(value or DEFAULT_ERROR_STATUS), retry_after=options.get("retry_after"))
        if kind == "status":
            if value is None:
                raise FaultSpecError("status needs an HTTP status, e.g. `status 503`.")
            return Fault(status=int(value), retry_after=options.get("retry_after"))
        if kind == "auth":
            return Fault(auth=True)
        if kind == "slow":
            if value is None:
                raise FaultSpecError("slow needs a delay in milliseconds, e.g. `slow 2000`.")
            return Fault(delay_ms=int(value))
        if kind == "timeout":
            hold = value if value is not None else options.get("hold_ms")
            return Fault(timeout=True, hold_ms=None if hold is None else int(hold))
        if kind in ("error-rate", "error_rate", "rate"):
            if value is None:
                raise FaultSpecError("error-rate needs a share between 0 and 1, e.g. `error-rate 0.3`.")
            return Fault(
                error_rate=float(value),
                error_status=int(options.get("status", DEFAULT_ERROR_STATUS)),
                seed=options.get("seed"),
                retry_after=options.get("retry_after"),
            )
        if kind == "reject":
            if not value:
                raise FaultSpecError("reject needs address patterns, e.g. `reject '*@blocked.example'`.")
            return Fault(reject=tuple(part.strip() for part in value.split(",") if part.strip()))
    except ValueError as err:
        if isinstance(err, FaultSpecError):
            raise
        raise FaultSpecError(f"Invalid value {value!r} for fault {kind!r}.") from err
    raise FaultSpecError(f"Unknown fault {kind!r}; use one of: {', '.join(KINDS)} or an HTTP status.")


def parse_fault_flag(flag: str, *, seed: int | None = None) -> tuple[str, Fault]:
    """`--fault PROVIDER:KIND[:VALUE]` at start, e.g. `mailgun:down`, `sendgrid:error-rate:0.3`."""
    provider, _, rest = flag.partition(":")
    kind, _, value = rest.partition(":")
    if not provider or not kind:
        raise FaultSpecError(f"--fault {flag!r}: use PROVIDER:KIND[:VALUE], e.g. mailgun:down, sendgrid:503.")
    provider = provider_spec(provider.strip().lower()).name
    fault = fault_from_words(kind, value or None)
    if fault.error_rate and fault.seed is None and seed is not None:
        fault = replace(fault, seed=seed)
    return provider, fault
