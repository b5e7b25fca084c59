"""FirstWorkingEmailBackend: send each message through the first provider that takes it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from failover import conf, errors, reporting
from failover.attempts import Attempt, Outcome
from failover.exceptions import AllProvidersFailed, AmbiguousSendError, ProviderBuildError, UnknownProvider
from failover.memory import ChainMemory, ChainState
from failover.network import NetworkWatch
from failover.providers import ProviderConfig, load_providers
from failover.routing import Route, batch_routes, esp_template, restrict
from failover.sessions import BackendPool


class FirstWorkingEmailBackend(BaseEmailBackend):
    """Tries FIRST_WORKING_EMAIL_BACKENDS in order, starting at the one that worked last.

    After a send, each message carries `failover_provider` (the name of the provider that took
    it, or None) and `failover_attempts` (a list of `Attempt`); `anymail_status` is the sending
    provider's own status.

    A message's `failover_providers` keeps it to some providers, each with its own ESP template
    id (failover/routing.py; docs/failover.md, "Choosing providers per message").

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
        self._pool = BackendPool(self._by_name, self.timeouts)

    def __deepcopy__(self, memo: dict) -> FirstWorkingEmailBackend:
        return self

    # Connections -------------------------------------------------------------------------

    def open(self) -> bool:
        """Start a session in this thread, as Django's backends do: True when this call started
        it (the caller then closes it), False when one is already open (failover/sessions.py)."""
        return self._pool.start()

    def close(self) -> None:
        """End the session: close every inner backend it opened, those set aside after a
        provider error included."""
        self._pool.end()

    # Sending -----------------------------------------------------------------------------

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        if not email_messages:
            return 0
        routes = batch_routes(email_messages, self._by_name, fail_silently=self.fail_silently)
        # Inside `with connection:` (or after open()) the caller's session is used and its end
        # closes the inner backends; otherwise this batch is a session of its own.
        created = self.open()
        try:
            state = self.memory.load()  # the one cache read of this batch
            sent = 0
            for message, route in zip(email_messages, routes, strict=True):
                if self._send_one(message, state, route):
                    sent += 1
            return sent
        finally:
            if created:
                self.close()

    def _send_one(
        self, message: EmailMessage, state: ChainState, route: Route | None | UnknownProvider
    ) -> bool:
        message.failover_provider = None
        message.failover_attempts = attempts = []
        if isinstance(route, UnknownProvider):
            reporting.refused(message, route)
            return False
        if not message.recipients():
            return False
        order, probe = self._plan(state, route)
        first_choice, left_first = order[0], None
        errors_by_provider: dict[str, BaseException] = {}
        skipped: dict[str, str] = {}
        for name in order:
            reason = self._skip_reason(state, name)
            if reason:
                skipped[name] = reason
                left_first = left_first or reason
                continue
            attempt, error = self._attempt(name, message, route)
            attempts.append(attempt)
            reporting.attempted(type(self), attempt, message, first=len(attempts) == 1, probe=name == probe)
            if attempt.outcome is Outcome.SENT:
                message.failover_provider = name
                self._note_success(state, name)
                if name != first_choice:
                    reporting.moved(type(self), message, first_choice, name, left_first or "provider_error")
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
                self._pool.retire(name)
            if attempt.outcome is Outcome.AMBIGUOUS and not self.failover_on_ambiguous:
                if self.fail_silently:
                    return False
                raise AmbiguousSendError(attempts, error) from error
        return self._all_failed(message, attempts, errors_by_provider, skipped)

    def _plan(self, state: ChainState, route: Route | None) -> tuple[list[str], str | None]:
        """The providers to try for one message, and the one probed first if a probe is due."""
        order, probe = restrict(self.memory.order(state), self.memory.probe_due(state), route)
        if probe is None or not self.memory.claim_probe(state, probe):
            return order, None
        reporting.probing(probe)
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
        reporting.all_failed(message, attempts, skipped)
        if self.fail_silently:
            return False
        if unbuildable is not None:
            # No provider could even be built: a one-provider chain misconfigured reads exactly
            # as that provider would (AnymailConfigurationError, ImproperlyConfigured…).
            unbuildable.failover_attempts = attempts
            raise unbuildable
        last_error = errors_by_provider[attempts[-1].provider] if attempts else None
        raise failure from last_error

    def _attempt(
        self, name: str, message: EmailMessage, route: Route | None
    ) -> tuple[Attempt, BaseException | None]:
        started = time.perf_counter()
        watch = NetworkWatch()
        try:
            # Opening it (an SMTP connection) sends nothing of this message.
            backend = self._pool.connection(name)
            with watch, esp_template(message, route, name):
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

    # Memory ------------------------------------------------------------------------------

    def _note_success(self, state: ChainState, name: str) -> None:
        changed, recovered = self.memory.record_success(state, name)
        if changed:
            self.memory.save(state)
        if recovered:
            reporting.recovered(type(self), name)
        if changed and state.active == name:
            reporting.starts_at(name, self.memory.timeout, state.until)

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
            reporting.asked_to_wait(name, wait)
            return
        news = self.memory.record_failure(
            state, name, error=attempt.error or "", error_class=attempt.error_class or "", probe=probe
        )
        self.memory.save(state)
        if probe:
            reporting.probe_failed(name, attempt, self.memory.interval(state.failures[name]))
        if news:
            reporting.failing(type(self), attempt, error)

    def forget(self) -> None:
        """Drop the chain's memory (detour and failure records), as if no provider had failed."""
        self.memory.forget()
        reporting.memory_cleared([p.name for p in self.providers])

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
