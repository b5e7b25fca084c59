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
from failover.exceptions import AllProvidersFailed, AmbiguousSendError, ProviderBuildError
from failover.memory import ChainMemory, ChainState
from failover.network import NetworkWatch, pin_environment
from failover.providers import BackendPool, ProviderConfig, load_providers

logger = logging.getLogger(__name__)


class FirstWorkingEmailBackend(BaseEmailBackend):
    """Tries FIRST_WORKING_EMAIL_BACKENDS in order, starting at the one that worked last.

    After a send, each message carries `failover_provider` (the name of the provider that took
    it, or None) and `failover_attempts` (a list of `Attempt`); `anymail_status` is the sending
    provider's own status.

    OPTIONS (or get_connection kwargs) may override the settings: `backends`, `cache_timeout`,
    `cache_alias`, `connect_timeout`, `read_timeout`, `failover_on_ambiguous`, `probe_interval`.

    A message that carries this backend as its `connection` may be deep-copied (Django's locmem
    backend does): the copy shares this backend, as it would share a connection.
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
        probe_interval: float | None = None,
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
        self.memory = ChainMemory(
            [provider.name for provider in self.providers],
            cache_alias=cache_alias or conf.cache_alias(),
            timeout=conf.cache_timeout() if cache_timeout is None else float(cache_timeout),
            probe_interval=conf.probe_interval()
            if probe_interval is None
            else max(1.0, float(probe_interval)),
        )
        self._pool = BackendPool()

    def __deepcopy__(self, memo: dict) -> FirstWorkingEmailBackend:
        return self

    # Connections -------------------------------------------------------------------------

    def open(self) -> bool:
        """Start a session in this thread, as Django's backends do: True when this call started
        it (the caller then closes it), False when one is already open. Inner backends open
        lazily, once, when a message first needs them."""
        if self._pool.active:
            return False
        self._pool.active = True
        return True

    def close(self) -> None:
        """End the session: close every inner backend it opened, those set aside after a
        provider error included."""
        pool = self._pool
        pool.active = False
        retired, pool.retired = pool.retired, []
        for name, backend in retired:
            self._close_inner(name, backend)
        for name in list(pool.instances):
            backend = pool.instances.pop(name)
            if pool.opened.pop(name, False):
                self._close_inner(name, backend)

    def _retire(self, name: str) -> None:
        """Stop using one inner backend after a provider error: the next use builds and opens a
        fresh one, and this one stays open until the session ends (a caller that opened the
        connection decides when its sessions close, even after a send raised)."""
        pool = self._pool
        backend = pool.instances.pop(name, None)
        if backend is not None and pool.opened.pop(name, False):
            # One set aside per provider: an older one is closed now, so a provider failing
            # message after message does not pile up open connections.
            for earlier in [entry for entry in pool.retired if entry[0] == name]:
                pool.retired.remove(earlier)
                self._close_inner(*earlier)
            pool.retired.append((name, backend))
        pool.opened.pop(name, None)

    def _close_inner(self, name: str, backend: BaseEmailBackend) -> None:
        try:
            backend.close()
        except Exception as err:  # a failing close must not hide the send result
            logger.warning(
                "failover close failed provider=%s error=%s",
                name,
                errors.describe(err, self._by_name[name].secrets()),
                extra={"provider": name},
            )

    def _connection(self, name: str) -> BaseEmailBackend:
        pool = self._pool
        if name not in pool.instances:
            backend = self._by_name[name].build(self.timeouts)
            pool.instances[name] = backend
        if name not in pool.opened:
            pool.opened[name] = bool(pool.instances[name].open())
            pin_environment(pool.instances[name])
        return pool.instances[name]

    # Sending -----------------------------------------------------------------------------

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        if not email_messages:
            return 0
        # Inside `with connection:` (or after open()) the caller's session is used and its end
        # closes the inner backends; otherwise this batch is a session of its own.
        created = self.open()
        try:
            state = self.memory.load()  # the one cache read of this batch
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
        order, probe = self._plan(state)
        first_choice, left_first = order[0], None
        errors_by_provider: dict[str, BaseException] = {}
        skipped: dict[str, str] = {}
        for name in order:
            reason = self._skip_reason(state, name)
            if reason:
                skipped[name] = reason
                left_first = left_first or reason
                continue
            attempt, error = self._attempt(name, message)
            attempts.append(attempt)
            self._log_attempt(attempt, message, first=len(attempts) == 1, probe=name == probe)
            signals.provider_attempted.send(type(self), provider=name, message=message, attempt=attempt)
            if attempt.outcome is Outcome.SENT:
                message.failover_provider = name
                self._note_success(state, name)
                if name != first_choice:
                    self._moved(message, first_choice, name, left_first or "provider_error")
                return True
            if attempt.outcome is Outcome.MESSAGE_ERROR:
                # The provider is fine; the message is not. Never offer it to another provider.
                if self.fail_silently or isinstance(error, _NothingSent):
                    return False
                raise error
            errors_by_provider[name] = error
            left_first = left_first or str(attempt.outcome)
            if attempt.outcome is not Outcome.LOCAL_ERROR:  # one message's fault: the provider is fine
                self._note_failure(state, attempt, error, probe=name == probe)
                # A failed connection is not reused (an SMTP backend keeps a dead socket): the
                # next message, or probe, to this provider starts afresh.
                self._retire(name)
            if attempt.outcome is Outcome.AMBIGUOUS and not self.failover_on_ambiguous:
                if self.fail_silently:
                    return False
                raise AmbiguousSendError(attempts, error) from error
        return self._all_failed(message, attempts, errors_by_provider, skipped)

    def _plan(self, state: ChainState) -> tuple[list[str], str | None]:
        """The providers to try for one message, and the one probed first if a probe is due."""
        order = self.memory.order(state)
        probe = self.memory.probe_due(state)
        if probe is None or not self.memory.claim_probe(state, probe):
            return order, None
        logger.info("failover probe provider=%s", probe, extra={"provider": probe})
        return [probe, *(name for name in order if name != probe)], probe

    def _skip_reason(self, state: ChainState, name: str) -> str | None:
        """Why the provider is passed over for this message without being asked, if it is."""
        if self.memory.waiting(state, name):
            return "retry_after"
        limit = self._by_name[name].rate_limit
        if limit is not None and not self.memory.take_send(name, limit.sends, limit.period):
            return "rate_limited"
        return None

    def _all_failed(
        self,
        message: EmailMessage,
        attempts: list[Attempt],
        errors_by_provider: dict[str, BaseException],
        skipped: dict[str, str],
    ) -> bool:
        if attempts and not skipped and all(attempt.outcome is Outcome.LOCAL_ERROR for attempt in attempts):
            # Every provider was asked, none could encode it, and none is down: the message's
            # fault. (With a provider skipped, that one may take it later: AllProvidersFailed.)
            if self.fail_silently:
                return False
            raise errors_by_provider[attempts[-1].provider]
        failure = AllProvidersFailed(attempts, errors_by_provider, skipped=skipped)
        unbuildable = _first_build_error(attempts, errors_by_provider) if not skipped else None
        logger.error(
            "failover all providers failed providers=%s skipped=%s",
            ",".join(a.provider for a in attempts) or "-",
            ",".join(f"{name}:{why}" for name, why in skipped.items()) or "-",
            extra={
                "providers": [a.provider for a in attempts],
                "skipped": skipped,
                "message_id": _message_id(message),
            },
        )
        if self.fail_silently:
            return False
        if unbuildable is not None:
            # No provider could even be built: a one-provider chain misconfigured reads exactly
            # as that provider would (AnymailConfigurationError, ImproperlyConfigured…).
            unbuildable.failover_attempts = attempts
            raise unbuildable
        last_error = errors_by_provider[attempts[-1].provider] if attempts else None
        raise failure from last_error

    def _moved(self, message: EmailMessage, first_choice: str, sender: str, reason: str) -> None:
        """A message left the provider it would have gone to first: say from where, to where, why."""
        signals.failover.send(
            type(self), message=message, from_provider=first_choice, to_provider=sender, reason=reason
        )

    def _attempt(self, name: str, message: EmailMessage) -> tuple[Attempt, BaseException | None]:
        started = time.perf_counter()
        watch = NetworkWatch()
        try:
            backend = self._connection(name)  # opening it (an SMTP connection) sends nothing of this message
            with watch:
                sent = backend.send_messages([message])
        except Exception as error:
            duration = time.perf_counter() - started
            outcome = errors.classify(error, reached_network=watch.reached)
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

    def _log_attempt(self, attempt: Attempt, message: EmailMessage, *, first: bool, probe: bool) -> None:
        """One line per attempt: WARNING when it failed, INFO when a message was sent after a
        failover or by a probe, DEBUG for the everyday case of the first provider sending (the
        gateway logs each message anyway, and a line per healthy send costs more than the rest
        of the backend; docs/benchmarks.md)."""
        if attempt.outcome is not Outcome.SENT:
            level = logging.WARNING
        else:
            level = logging.DEBUG if first and not probe else logging.INFO
        if not logger.isEnabledFor(level):
            return
        logger.log(
            level,
            "failover %s provider=%s outcome=%s duration_ms=%.1f%s",
            "probe" if probe else "attempt",
            attempt.provider,
            attempt.outcome,
            attempt.duration * 1000,
            f" error_class={attempt.error_class} error={attempt.error}" if attempt.error_class else "",
            extra={**attempt.as_dict(), "probe": probe, "message_id": _message_id(message)},
        )

    # Memory ------------------------------------------------------------------------------

    def _note_success(self, state: ChainState, name: str) -> None:
        changed, recovered = self.memory.record_success(state, name)
        if changed:
            self.memory.save(state)
        if recovered:
            logger.info("failover provider recovered provider=%s", name, extra={"provider": name})
            signals.provider_recovered.send(type(self), provider=name)
        if changed and state.active == name:
            logger.info(
                "failover sends now start at provider=%s for %ss",
                name,
                int(self.memory.timeout),
                extra={"provider": name, "until": state.until},
            )

    def _note_failure(
        self, state: ChainState, attempt: Attempt, error: BaseException, *, probe: bool
    ) -> None:
        """A provider error: a request to slow down (429, 503 with Retry-After) makes the provider
        wait that long; anything else marks it failing (and, after a probe, backs the probes off)."""
        name = attempt.provider
        seconds = errors.retry_after(error, default=self.memory.probe_interval, now=self.memory.now())
        if seconds is not None:
            wait = self.memory.record_wait(state, name, seconds)
            self.memory.save(state)
            logger.warning(
                "failover provider asked to wait provider=%s seconds=%s",
                name,
                int(wait),
                extra={"provider": name},
            )
            return
        news = self.memory.record_failure(
            state, name, error=attempt.error or "", error_class=attempt.error_class or "", probe=probe
        )
        self.memory.save(state)
        if probe:
            logger.warning(
                "failover probe failed provider=%s next_probe_in=%ss",
                name,
                int(self.memory.interval(state.failures[name])),
                extra={"provider": name, "error_class": attempt.error_class},
            )
        if news:
            logger.warning(
                "failover provider failing provider=%s error_class=%s",
                name,
                attempt.error_class,
                extra={"provider": name, "error_class": attempt.error_class},
            )
            signals.provider_failed.send(type(self), provider=name, error=error, attempt=attempt)

    def forget(self) -> None:
        """Drop the chain's memory (detour and failure records), as if no provider had failed."""
        self.memory.forget()
        logger.info("failover memory cleared", extra={"providers": [p.name for p in self.providers]})

    def provider_states(self) -> list[dict[str, Any]]:
        """Each provider with its remembered state (active / standby / failing) and last error."""
        return self.memory.describe(self.memory.load(strict=True))


def _first_build_error(
    attempts: list[Attempt], errors_by_provider: dict[str, BaseException]
) -> Exception | None:
    """The first provider's own construction error, when every provider failed to be built."""
    found = [errors_by_provider.get(attempt.provider) for attempt in attempts]
    if not found or not all(isinstance(error, ProviderBuildError) for error in found):
        return None
    original = found[0].__cause__
    return original if isinstance(original, Exception) else None


class _NothingSent(Exception):
    def __init__(self, provider: str):
        super().__init__(f"Provider {provider!r} sent nothing and raised no error")


def _message_id(message: EmailMessage) -> str | None:
    headers = getattr(message, "extra_headers", None) or {}
    return headers.get("Message-ID") or getattr(message, "failover_ref", None)
