"""The remembered working provider: shared through the cache, forgotten after the timeout."""

from unittest import mock

from django.core.cache import caches
from django.test import override_settings

from failover import signals
from tests.failover.base import FailoverTestCase


class MemoryTests(FailoverTestCase):
    def fail_primary_once(self):
        self.esp.down("sendgrid")
        message = self.message()
        self.send(message)
        self.assertEqual(message.failover_provider, "mailgun")

    def provider_after(self, seconds: float) -> str:
        """The provider that takes a message sent `seconds` from now."""
        self.clock.advance(seconds)
        message = self.message()
        self.send(message)
        return message.failover_provider

    def test_later_sends_start_at_the_working_provider(self):
        """After a failover, the dead primary is not tried again: one HTTP call per message."""
        self.fail_primary_once()
        calls_before = self.esp.calls("sendgrid")
        message = self.message()
        self.send(message)
        self.assertEqual(self.esp.calls("sendgrid"), calls_before)
        self.assertEqual(message.failover_provider, "mailgun")
        self.assertEqual(len(message.failover_attempts), 1)

    def test_memory_is_shared_by_every_backend_on_the_cache(self):
        """A new connection (another process on the same cache) starts at the working provider."""
        self.fail_primary_once()
        other = self.connection()
        message = self.message()
        other.send_messages([message])
        self.assertEqual(message.failover_provider, "mailgun")
        self.assertEqual(self.esp.calls("sendgrid"), 1)

    @override_settings(FIRST_WORKING_EMAIL_PROBE_INTERVAL=3600)
    def test_preferred_order_returns_after_the_timeout(self):
        """Once FIRST_WORKING_EMAIL_CACHE_TIMEOUT has passed, the primary is tried first again
        (probes, here rarer than the memory lasts, come back sooner: tests/failover/test_probes.py)."""
        self.fail_primary_once()
        self.esp.ok("sendgrid")
        self.assertEqual(self.provider_after(599), "mailgun")
        self.assertEqual(self.provider_after(2), "sendgrid")

    def test_memory_renews_while_the_primary_stays_down(self):
        """A primary still dead after the timeout costs one more try, then the detour is remembered again."""
        self.fail_primary_once()
        self.clock.advance(601)
        self.send(self.message())
        self.assertEqual(self.esp.calls("sendgrid"), 2)
        self.send(self.message())
        self.assertEqual(self.esp.calls("sendgrid"), 2)

    def test_remembered_provider_failing_moves_on_and_wraps_round(self):
        """If the remembered provider fails too, the next ones are tried, then the earlier ones."""
        self.fail_primary_once()  # sends now start at mailgun
        self.esp.ok("sendgrid")
        self.esp.fail("mailgun", 503)
        self.esp.down("mandrill")
        message = self.message()
        self.send(message)
        self.assertEqual([a.provider for a in message.failover_attempts], ["mailgun", "mandrill", "sendgrid"])
        self.assertEqual(message.failover_provider, "sendgrid")

    def test_custom_cache_timeout_from_settings(self):
        """FIRST_WORKING_EMAIL_CACHE_TIMEOUT is read when the backend is built."""
        with self.settings(FIRST_WORKING_EMAIL_CACHE_TIMEOUT=10):
            self.fail_primary_once()
            self.esp.ok("sendgrid")
            self.assertEqual(self.provider_after(11), "sendgrid")

    def test_named_cache_alias_holds_the_memory(self):
        """FIRST_WORKING_EMAIL_CACHE picks the cache; the default cache stays untouched."""
        caches_setting = {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "d"},
            "failover": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "f"},
        }
        with self.settings(CACHES=caches_setting, FIRST_WORKING_EMAIL_CACHE="failover"):
            self.fail_primary_once()
            self.assertTrue(caches["failover"]._cache)
            self.assertFalse(caches["default"]._cache)
            caches["failover"].clear()

    def test_one_cache_read_per_batch_and_no_write_when_healthy(self):
        """A healthy batch of 5 reads the cache once and never writes it."""
        cache = caches["default"]
        with (
            mock.patch.object(type(cache), "get", wraps=cache.get) as get,
            mock.patch.object(type(cache), "set", wraps=cache.set) as set_,
        ):
            self.send(*[self.message(subject=f"m{i}") for i in range(5)])
        self.assertEqual(get.call_count, 1)
        self.assertEqual(set_.call_count, 0)
        self.assertEqual(self.esp.calls("sendgrid"), 5)


class StateSignalTests(FailoverTestCase):
    def listen(self, signal, pick) -> list:
        """What `pick(**signal arguments)` returns for each sending of `signal` during the test."""
        seen = []

        def handler(sender, **kwargs):
            seen.append(pick(**kwargs))

        signal.connect(handler)
        self.addCleanup(signal.disconnect, handler)
        return seen

    def test_provider_failed_fires_once_per_state_change(self):
        """provider_failed fires when a healthy provider fails, not again while it is known down."""
        seen = self.listen(signals.provider_failed, lambda provider, **kw: provider)
        self.esp.down("sendgrid")
        self.esp.down("mailgun")
        self.send(self.message())
        self.send(self.message())  # starts at mandrill now; sendgrid and mailgun not retried
        self.assertEqual(seen, ["sendgrid", "mailgun"])

    def test_provider_recovered_fires_when_a_failed_provider_works_again(self):
        """The primary taking mail after its failure window sends provider_recovered."""
        seen = self.listen(signals.provider_recovered, lambda provider, **kw: provider)
        self.esp.down("sendgrid")
        self.send(self.message())
        self.esp.ok("sendgrid")
        self.clock.advance(601)
        self.send(self.message())
        self.assertEqual(seen, ["sendgrid"])

    def test_provider_attempted_fires_for_every_try(self):
        """provider_attempted carries the provider, the message and the attempt."""
        seen = self.listen(
            signals.provider_attempted, lambda provider, attempt, **kw: (provider, attempt.outcome)
        )
        self.esp.fail("sendgrid", 503)
        self.send(self.message())
        self.assertEqual(seen, [("sendgrid", "provider_error"), ("mailgun", "sent")])


class UnreachableCacheTests(FailoverTestCase):
    """The memory is an optimisation: a cache that cannot be reached (Redis restarting) never stops sends."""

    def test_sends_go_on_in_priority_order_while_the_cache_is_down(self):
        """Every cache call fails: messages still go out, failing over as usual, with one warning."""
        from unittest import mock

        from django.core.cache import caches

        from failover import memory

        memory._warned["at"] = -memory.CACHE_WARNING_EVERY
        cache = caches["default"]
        down = ConnectionError("Error 111 connecting to redis")
        self.esp.fail("sendgrid", 503)
        with (
            mock.patch.object(cache, "get", side_effect=down),
            mock.patch.object(cache, "set", side_effect=down),
            mock.patch.object(cache, "add", side_effect=down),
            self.assertLogs("failover.memory", "WARNING") as logs,
        ):
            messages = [self.message() for _ in range(3)]
            self.assertEqual(self.send(*messages), 3)
        self.assertEqual([m.failover_provider for m in messages], ["mailgun"] * 3)
        self.assertEqual(len(logs.output), 1, logs.output)
        self.assertIn("priority order", logs.output[0])
