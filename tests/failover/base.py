"""Shared set-up for the failover tests: a fresh per-test cache, the ESP mock, a clock."""

from __future__ import annotations

import itertools
from unittest import mock

import django
from django.core.cache import caches
from django.core.mail import EmailMessage, get_connection
from django.test import SimpleTestCase, override_settings

from failover.backends import FirstWorkingEmailBackend
from tests.esp import CHAIN, ESPMock

_cache_ids = itertools.count()
FAILOVER_BACKEND = "failover.backends.FirstWorkingEmailBackend"


def sending_through(backend: str) -> dict:
    """Settings that make `backend` the project's mail backend (MAILERS on Django 6.1+).

    Django's test runner swaps in the locmem mail backend, so tests of the real chain say so.
    """
    if django.VERSION >= (6, 1):
        return {"MAILERS": {"default": {"BACKEND": backend}}}
    return {"EMAIL_BACKEND": backend}


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FailoverTestCase(SimpleTestCase):
    """Each test gets its own cache, the three providers answering, and a clock it can move."""

    chain = CHAIN

    def setUp(self) -> None:
        super().setUp()
        settings_override = override_settings(
            **sending_through(FAILOVER_BACKEND),
            FIRST_WORKING_EMAIL_BACKENDS=self.chain,
            FIRST_WORKING_EMAIL_CACHE_TIMEOUT=600,
            CACHES={
                "default": {
                    "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                    "LOCATION": f"failover-test-{next(_cache_ids)}",
                }
            },
        )
        settings_override.enable()
        self.addCleanup(settings_override.disable)
        self.addCleanup(caches["default"].clear)
        self.esp = ESPMock()
        self.esp.start()
        self.addCleanup(self.esp.stop)
        self.clock = FakeClock()
        patcher = mock.patch("failover.memory.now", self.clock)
        patcher.start()
        self.addCleanup(patcher.stop)

    def message(self, subject: str = "Hello", to: list[str] | None = None, **kwargs) -> EmailMessage:
        return EmailMessage(
            subject=subject,
            body="Body text",
            from_email="app@example.com",
            to=to or ["user@example.net"],
            **kwargs,
        )

    def connection(self, **kwargs):
        """The project's configured connection, as an application gets it on this Django."""
        if django.VERSION >= (6, 1):
            from django.core.mail import mailers

            return mailers.default if not kwargs else FirstWorkingEmailBackend(**kwargs)
        return get_connection(**kwargs)

    def send(self, *messages: EmailMessage, **kwargs) -> int:
        return self.connection(**kwargs).send_messages(list(messages) or [self.message()])
