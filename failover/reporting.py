"""What the backend tells the application: one log line per attempt and per state change, and
the signals of `signals.py` (docs/failover.md, "Logging" and "Signals"). The backend decides;
this module words it. No line carries a message body, a subject or a configured secret."""

from __future__ import annotations

import logging
from typing import Any

from django.core.mail import EmailMessage

from failover import errors, signals
from failover.attempts import Attempt, Outcome
from failover.exceptions import UnknownProvider

# The logger's name is documented (docs/failover.md, "Logging") and configured by deployments:
# it names the backend, whichever of its modules writes the line.
logger = logging.getLogger("failover.backends")


def attempted(sender: type, attempt: Attempt, message: EmailMessage, *, first: bool, probe: bool) -> None:
    """One line per attempt: WARNING when it failed, INFO when a message was sent after a
    failover or by a probe, DEBUG for the everyday case of the first provider sending (the
    gateway logs each message anyway, and a line per healthy send costs more than the rest
    of the backend; docs/benchmarks.md). Then `provider_attempted`."""
    if attempt.outcome is not Outcome.SENT:
        level = logging.WARNING
    else:
        level = logging.DEBUG if first and not probe else logging.INFO
    if logger.isEnabledFor(level):
        logger.log(
            level,
            "failover %s provider=%s outcome=%s duration_ms=%.1f%s",
            "probe" if probe else "attempt",
            attempt.provider,
            attempt.outcome,
            attempt.duration * 1000,
            f" error_class={attempt.error_class} error={attempt.error}" if attempt.error_class else "",
            extra={**attempt.as_dict(), "probe": probe, "message_id": message_id(message)},
        )
    signals.provider_attempted.send(sender, provider=attempt.provider, message=message, attempt=attempt)


def probing(name: str) -> None:
    logger.info("failover probe provider=%s", name, extra={"provider": name})


def moved(sender: type, message: EmailMessage, first_choice: str, to: str, reason: str) -> None:
    """A message left the provider it would have gone to first: from where, to where, why."""
    signals.failover.send(sender, message=message, from_provider=first_choice, to_provider=to, reason=reason)


def refused(message: EmailMessage, error: UnknownProvider) -> None:
    """The message names providers the chain lacks, and fail_silently leaves it unsent."""
    logger.error(
        "failover message refused: %s",
        error,
        extra={"providers": error.names, "message_id": message_id(message)},
    )


def all_failed(message: EmailMessage, attempts: list[Attempt], skipped: dict[str, str]) -> None:
    logger.error(
        "failover all providers failed providers=%s skipped=%s",
        ",".join(a.provider for a in attempts) or "-",
        ",".join(f"{name}:{why}" for name, why in skipped.items()) or "-",
        extra={
            "providers": [a.provider for a in attempts],
            "skipped": skipped,
            "message_id": message_id(message),
        },
    )


def recovered(sender: type, name: str) -> None:
    logger.info("failover provider recovered provider=%s", name, extra={"provider": name})
    signals.provider_recovered.send(sender, provider=name)


def starts_at(name: str, seconds: float, until: Any) -> None:
    """Sends now begin at another provider than the chain's first, for `seconds`."""
    logger.info(
        "failover sends now start at provider=%s for %ss",
        name,
        int(seconds),
        extra={"provider": name, "until": until},
    )


def asked_to_wait(name: str, seconds: float) -> None:
    logger.warning(
        "failover provider asked to wait provider=%s seconds=%s", name, int(seconds), extra={"provider": name}
    )


def probe_failed(name: str, attempt: Attempt, next_probe_in: float) -> None:
    logger.warning(
        "failover probe failed provider=%s next_probe_in=%ss",
        name,
        int(next_probe_in),
        extra={"provider": name, "error_class": attempt.error_class},
    )


def failing(sender: type, attempt: Attempt, error: BaseException) -> None:
    """A provider not known to be failing just failed."""
    name = attempt.provider
    logger.warning(
        "failover provider failing provider=%s error_class=%s",
        name,
        attempt.error_class,
        extra={"provider": name, "error_class": attempt.error_class},
    )
    signals.provider_failed.send(sender, provider=name, error=error, attempt=attempt)


def close_failed(name: str, error: BaseException, secrets: frozenset[str]) -> None:
    logger.warning(
        "failover close failed provider=%s error=%s",
        name,
        errors.describe(error, secrets),
        extra={"provider": name},
    )


def memory_cleared(names: list[str]) -> None:
    logger.info("failover memory cleared", extra={"providers": names})


def message_id(message: EmailMessage) -> str | None:
    """How log lines name a message: its Message-ID header, or the caller's `failover_ref`."""
    headers = getattr(message, "extra_headers", None) or {}
    return headers.get("Message-ID") or getattr(message, "failover_ref", None)
