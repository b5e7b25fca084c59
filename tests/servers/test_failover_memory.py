"""Two processes share the failover memory through a real Redis (CACHE_URL=redis://…;
docs/failover.md, "Memory"): a provider one process saw fail is skipped by the other."""

from __future__ import annotations

from tests.servers.base import RealServersTestCase

SENDGRID_THEN_MAILGUN = [["sendgrid", "provider_error"], ["mailgun", "sent"]]


class FailoverMemoryThroughRedisTests(RealServersTestCase):
    needs = ("redis",)
    databases = set()
    provider_per_test = True

    def setUp(self):
        super().setUp()
        self.redis.command("FLUSHALL")

    def sender_environment(self, cache_url: str) -> dict[str, str]:
        return self.child_environment(
            CACHE_URL=cache_url,
            FIRST_WORKING_EMAIL_BACKENDS="sendgrid,mailgun",
            **self.provider.anymail_environment(),
        )

    def test_a_failure_seen_by_one_process_is_skipped_by_the_other(self):
        self.provider.failing["sendgrid"] = 503
        redis = self.redis.url_for(0)
        first = self.child("send", "1", "--prefix", "first-", env=self.sender_environment(redis))
        self.assertEqual(first["tried"], [SENDGRID_THEN_MAILGUN])
        self.assertEqual(self.provider.count("sendgrid"), 1)
        self.assertNotEqual(self.redis.command("DBSIZE"), ":0")  # the memory is in Redis

        second = self.child("send", "3", "--prefix", "second-", env=self.sender_environment(redis))
        self.assertEqual(second["tried"], [[["mailgun", "sent"]]] * 3)
        self.assertEqual(self.provider.count("sendgrid"), 1)  # never asked again
        self.assertEqual(self.provider.count("mailgun"), 4)

        # Control: a process with a memory of its own (a private file cache) still tries SendGrid.
        alone = self.child(
            "send",
            "1",
            "--prefix",
            "alone-",
            env=self.sender_environment(f"filecache://{self.workdir / 'alone'}"),
        )
        self.assertEqual(alone["tried"], [SENDGRID_THEN_MAILGUN])
