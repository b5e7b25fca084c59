"""Shared set-up for the sandbox tests: an in-process sandbox on free loopback ports, the real
Anymail backends pointed at it, and the failover backend over them. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import itertools
from typing import Any

from django.core.cache import caches
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.test import SimpleTestCase, override_settings
from django.utils.module_loading import import_string

from failover.backends import FirstWorkingEmailBackend
from sandbox.app import Sandbox
from sandbox.conf import SandboxSettings
from sandbox.faults import Fault
from sandbox.providers import provider_spec

BACKENDS = {
    "sendgrid": "anymail.backends.sendgrid.EmailBackend",
    "mailgun": "anymail.backends.mailgun.EmailBackend",
    "mandrill": "anymail.backends.mandrill.EmailBackend",
}
MAILGUN_DOMAIN = "mg.example.com"
CHAIN = ("sendgrid", "mailgun", "mandrill")
# The read timeout the timeout tests use: short, so they stay fast. Every other send gets a
# generous one, so a loaded machine cannot turn a healthy answer into an ambiguous attempt.
READ_TIMEOUT = 0.5
DEFAULT_READ_TIMEOUT = 10.0
CONNECT_TIMEOUT = 2.0

_cache_ids = itertools.count()


def backend_entry(sandbox: Sandbox, name: str, **options: Any) -> dict[str, Any]:
    """A FIRST_WORKING_EMAIL_BACKENDS entry that sends to `sandbox` with its keys."""
    values: dict[str, Any] = {"api_key": sandbox.settings.api_keys[name], "api_url": sandbox.api_url(name)}
    if provider_spec(name).sender_domain_setting:  # the API names the domain: use one that exists
        values["sender_domain"] = MAILGUN_DOMAIN
    values.update(options)
    return {"NAME": name, "BACKEND": BACKENDS[name], "OPTIONS": values}


def anymail_backend(sandbox: Sandbox, name: str, **options: Any) -> BaseEmailBackend:
    """The unmodified Anymail backend of `name`, pointed at `sandbox`."""
    entry = backend_entry(sandbox, name, **options)
    return import_string(entry["BACKEND"])(**entry["OPTIONS"])


def private_cache() -> dict[str, str]:
    """A cache no other test shares: the failover backend's memory of which provider works."""
    location = f"sandbox-test-{next(_cache_ids)}"
    return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": location}


class SandboxMixin:
    """One sandbox per class (webhooks off unless a class says otherwise); each test starts
    with healthy providers, no records, and its own failover memory."""

    sandbox_options: dict[str, Any] = {}
    sandbox: Sandbox

    @classmethod
    def extra_sandbox_options(cls) -> dict[str, Any]:
        """Options known only once the class is set up (a live server's URL)."""
        return {}

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        options: dict[str, Any] = {
            "port": 0,
            "webhook_url": "",
            "webhook_delay": 0,
            "sender_domains": {"mailgun": (MAILGUN_DOMAIN,)},
        }
        options.update(cls.sandbox_options)
        options.update(cls.extra_sandbox_options())
        cls.sandbox = Sandbox(SandboxSettings(**options)).start()
        cls.addClassCleanup(cls.sandbox.stop)

    def setUp(self) -> None:
        super().setUp()
        self.sandbox.reset()
        own_cache = override_settings(CACHES={"default": private_cache()})
        own_cache.enable()
        self.addCleanup(own_cache.disable)
        self.addCleanup(caches["default"].clear)

    # Building things ----------------------------------------------------------------------

    def message(self, to: list[str] | None = None, subject: str = "Hello", **kwargs: Any) -> EmailMessage:
        to = to or ["user@example.net"]
        return EmailMessage(subject=subject, body="Body text", from_email="app@example.com", to=to, **kwargs)

    def backend(self, name: str, **options: Any) -> BaseEmailBackend:
        return anymail_backend(self.sandbox, name, **options)

    def failover(self, *names: str, **kwargs: Any) -> FirstWorkingEmailBackend:
        """The failover backend over `names` (default: the whole chain) on this sandbox."""
        kwargs.setdefault("read_timeout", DEFAULT_READ_TIMEOUT)
        kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT)
        return FirstWorkingEmailBackend(
            backends=[backend_entry(self.sandbox, name) for name in names or CHAIN], **kwargs
        )

    def fault(self, provider: str, **fields: Any) -> None:
        self.sandbox.set_fault(provider, Fault(**fields))

    def received(self, provider: str, **filters: Any) -> list[dict[str, Any]]:
        return [record.as_json() for record in self.sandbox.store.list(provider=provider, **filters)]


class SandboxTestCase(SandboxMixin, SimpleTestCase):
    """Sandbox tests that need no Django server."""
