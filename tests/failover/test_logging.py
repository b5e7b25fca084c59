"""One structured log line per attempt and per state change, without secrets or bodies."""

from tests.esp import SENDGRID_KEY
from tests.failover.base import FailoverTestCase


class LoggingTests(FailoverTestCase):
    def test_each_attempt_logs_one_line_with_structured_fields(self):
        """The sending attempt is logged with provider, outcome and duration as `extra` fields."""
        with self.assertLogs("failover.backends", "DEBUG") as logs:
            self.send(self.message())
        (record,) = logs.records
        self.assertEqual(record.provider, "sendgrid")
        self.assertEqual(record.outcome, "sent")
        self.assertGreaterEqual(record.duration, 0)

    def test_a_healthy_first_send_logs_at_debug_only(self):
        """The everyday case (first provider sends) stays below INFO; nothing is logged at INFO."""
        with self.assertLogs("failover.backends", "DEBUG") as logs:
            self.send(self.message())
        self.assertEqual([r.levelname for r in logs.records], ["DEBUG"])

    def test_a_send_after_failover_logs_at_info(self):
        """The provider that took a message after another failed is logged at INFO."""
        self.esp.down("sendgrid")
        with self.assertLogs("failover.backends", "DEBUG") as logs:
            self.send(self.message())
        levels = {
            r.getMessage().split(" duration")[0]: r.levelname
            for r in logs.records
            if "attempt" in r.getMessage()
        }
        self.assertEqual(levels["failover attempt provider=sendgrid outcome=provider_error"], "WARNING")
        self.assertEqual(levels["failover attempt provider=mailgun outcome=sent"], "INFO")

    def test_failover_logs_the_failure_and_the_state_change(self):
        """A failing primary logs its attempt and that it is now failing, at WARNING."""
        self.esp.fail("sendgrid", 503)
        with self.assertLogs("failover.backends", "INFO") as logs:
            self.send(self.message())
        messages = [r.getMessage() for r in logs.records]
        self.assertTrue(any("outcome=provider_error" in m and "HTTP 503" in m for m in messages))
        self.assertTrue(any("provider failing provider=sendgrid" in m for m in messages))
        self.assertTrue(any("sends now start at provider=mailgun" in m for m in messages))

    def test_logs_carry_no_secret_and_no_body(self):
        """Neither the API key in an error answer nor the message body appears in any log line."""
        self.esp.fail("sendgrid", 401, {"errors": [{"message": f"key {SENDGRID_KEY} revoked"}]})
        message = self.message(subject="Secret subject")
        message.body = "Top secret body"
        with self.assertLogs("failover", "DEBUG") as logs:
            self.send(message)
        text = "\n".join(logs.output) + repr([r.__dict__ for r in logs.records])
        self.assertNotIn(SENDGRID_KEY, text)
        self.assertNotIn("Top secret body", text)
