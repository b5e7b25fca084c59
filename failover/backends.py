"""FirstWorkingEmailBackend: send each message through the first provider that takes it."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from failover import conf, errors, signals
from failover.attempts import Attempt, Outcome
from failover.exceptions import AllProvidersFailed, AmbiguousSendError
from failover.health import ChainState, HealthStore
from failover.providers import BackendPool, ProviderConfig, load_providers

logger = logging.getLogger(__name__)


class FirstWorkingEmailBackend(BaseEmailBackend):
    """Tries FIRST_WORKING_EMAIL_BACKENDS in order, starting at the one that worked last.

    After a send, each message carries `failover_provider` (the name of the provider that took
    it, or None) and `failover_attempts` (a list of `Attempt`); `anymail_status` is the sending
    provider's own status.

    OPTIONS (or get_connection kwargs) may override the settings: `backends`, `cache_timeout`,
    `cache_alias`, `connect_timeout`, `read_timeout`, `failover_on_ambiguous`.
    """

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        backends: list | None = None,
        cache_timeout: float | None = None,
        cache_alias: str | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        failover_on_ambiguous: bool | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)  # Django 6.1 checks `alias` and unknown options here
        self.fail_silently = fail_silently
        self.providers: list[ProviderConfig] = load_providers(backends)
        self._by_name = {provider.name: provider for provider in self.providers}
        default_connect, default_read = conf.timeouts()
        self.timeouts = (
            default_connect if connect_timeout is None else float(connect_timeout),
            default_read if read_timeout is None else float(read_timeout),
        )
        self.failover_on_ambiguous = (
            conf.failover_on_ambiguous() if failover_on_ambiguous is None else bool(failover_on_ambiguous)
        )
        self.health = HealthStore(
            [provider.name for provider in self.providers],
            cache_alias=cache_alias or conf.cache_alias(),
            timeout=conf.cache_timeout() if cache_timeout is None else float(cache_timeout),
        )
        self._pool = BackendPool()

    # Connections -------------------------------------------------------------------------

    def open(self) -> bool:
        """Start a session in this thread; inner backends open lazily, once, when first used."""
        self._pool.depth += 1
        return self._pool.depth == 1

    def close(self) -> None:
        pool = self._pool
        pool.depth = max(pool.depth - 1, 0)
        if pool.depth:
            return
        for name, must_close in list(pool.opened.items()):
            if must_close:
                try:
                    pool.instances[name].close()
                except Exception as err:  # a failing close must not hide the send result
                    logger.warning(
                        "failover close failed provider=%s error=%s",
                        name,
                        errors.describe(err, self._by_name[name].secrets()),
                        extra={"provider": name},
                    )
        pool.opened.clear()
        pool.instances.clear()

    def _connection(self, name: str) -> BaseEmailBackend:
        pool = self._pool
        if name not in pool.instances:
            backend = self._by_name[name].build(self.timeouts)
            pool.instances[name] = backend
        if name not in pool.opened:
            pool.opened[name] = bool(pool.instances[name].open())
        return pool.instances[name]

    # Sending -----------------------------------------------------------------------------

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        if not email_messages:
            return 0
        created = self.open()
        try:
            state = self.health.load()  # the one cache read of this batch
            sent = 0
            for message in email_messages:
                if self._send_one(message, state):
                    sent += 1
            return sent
        finally:
            if created:
                self.close()

    def _send_one(self, message: EmailMessage, state: ChainState) -> bool:
        message.failover_provider = None
        message.failover_attempts = attempts = []
        if not message.recipients():
            return False
        errors_by_provider: dict[str, BaseException] = {}
        for name in self.health.order(state):
            attempt, error = self._attempt(name, message)
            attempts.append(attempt)
            self._log_attempt(attempt, message, first=len(attempts) == 1)
            signals.provider_attempted.send(type(self), provider=name, message=message, attempt=attempt)
            if attempt.outcome is Outcome.SENT:
                message.failover_provider = name
                self._note_success(state, name)
                return True
            if attempt.outcome is Outcome.MESSAGE_ERROR:
                # The provider is fine; the message is not. Never offer it to another provider.
                if self.fail_silently or isinstance(error, _NothingSent):
                    return False
                raise error
            errors_by_provider[name] = error
            self._note_failure(state, attempt, error)
            if attempt.outcome is Outcome.AMBIGUOUS and not self.failover_on_ambiguous:
                if self.fail_silently:
                    return False
                raise AmbiguousSendError(attempts, error) from error
        failure = AllProvidersFailed(attempts, errors_by_provider)
        logger.error(
            "failover all providers failed providers=%s",
            ",".join(a.provider for a in attempts),
            extra={"providers": [a.provider for a in attempts], "message_id": _message_id(message)},
        )
        if self.fail_silently:
            return False
        raise failure from error

    def _attempt(self, name: str, message: EmailMessage) -> tuple[Attempt, BaseException | None]:
        started = time.perf_counter()
        try:
            backend = self._connection(name)
            sent = backend.send_messages([message])
        except Exception as error:
            duration = time.perf_counter() - started
            outcome = errors.classify(error)
            attempt = Attempt(
                provider=name,
                outcome=outcome,
                duration=duration,
                error_class=errors.error_class_name(error),
                error=errors.describe(error, self._by_name[name].secrets()),
                status_code=errors.status_code_of(error),
            )
            return attempt, error
        duration = time.perf_counter() - started
        if not sent:
            # The backend declined without an exception (an Anymail pre_send receiver cancelled
            # it): the application chose not to send, so no other provider should either.
            attempt = Attempt(name, Outcome.MESSAGE_ERROR, duration, error="backend sent nothing")
            return attempt, _NothingSent(name)
        return Attempt(provider=name, outcome=Outcome.SENT, duration=duration), None

    def _log_attempt(self, attempt: Attempt, message: EmailMessage, *, first: bool) -> None:
        """One line per attempt: WARNING when it failed, INFO when a message was sent after a
        failover, DEBUG for the everyday case of the first provider sending (the gateway logs
        each message anyway, and a line per healthy send costs more than the rest of the
        backend; docs/benchmarks.md)."""
        if attempt.outcome is not Outcome.SENT:
            level = logging.WARNING
        else:
            level = logging.DEBUG if first else logging.INFO
        if not logger.isEnabledFor(level):
            return
        logger.log(
            level,
            "failover attempt provider=%s outcome=%s duration_ms=%.1f%s",
            attempt.provider,
            attempt.outcome,
            attempt.duration * 1000,
            f" error_class={attempt.error_class} error={attempt.error}" if attempt.error_class else "",
            extra={**attempt.as_dict(), "message_id": _message_id(message)},
        )

    # Memory ------------------------------------------------------------------------------

    def _note_success(self, state: ChainState, name: str) -> None:
        changed, recovered = self.health.record_success(state, name)
        if changed:
            self.health.save(state)
        if recovered:
            logger.info("failover provider recovered provider=%s", name, extra={"provider": name})
            signals.provider_recovered.send(type(self), provider=name)
        if changed and state.active == name:
            logger.info(
                "failover sends now start at provider=%s for %ss",
                name,
                int(self.health.timeout),
                extra={"provider": name, "until": state.until},
            )

    def _note_failure(self, state: ChainState, attempt: Attempt, error: BaseException) -> None:
        news = self.health.record_failure(
            state, attempt.provider, error=attempt.error or "", error_class=attempt.error_class or ""
        )
        self.health.save(state)
        if news:
            logger.warning(
                "failover provider failing provider=%s error_class=%s",
                attempt.provider,
                attempt.error_class,
                extra={"provider": attempt.provider, "error_class": attempt.error_class},
            )
            signals.provider_failed.send(type(self), provider=attempt.provider, error=error, attempt=attempt)

    def forget(self) -> None:
        """Drop the chain's memory (detour and failure records), as if no provider had failed."""
        self.health.forget()
        logger.info("failover memory cleared", extra={"providers": [p.name for p in self.providers]})

    def provider_states(self) -> list[dict[str, Any]]:
        """Each provider with its remembered state (active / standby / failing) and last error."""
        return self.health.describe(self.health.load())


class _NothingSent(Exception):
    def __init__(self, provider: str):
        super().__init__(f"Provider {provider!r} sent nothing and raised no error")


def _message_id(message: EmailMessage) -> str | None:
    headers = getattr(message, "extra_headers", None) or {}
    return headers.get("Message-ID") or getattr(message, "failover_ref", None)
