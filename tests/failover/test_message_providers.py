"""A message kept to some providers with `failover_providers`, each with its own ESP template id
(docs/failover.md, "Choosing providers per message")."""

from urllib.parse import parse_qs

from anymail.message import AnymailMessage

from failover.attempts import Outcome
from failover.backends import FirstWorkingEmailBackend
from failover.exceptions import AllProvidersFailed, UnknownProvider
from failover.signals import failover as failover_signal
from tests.failover.base import FailoverTestCase


def mailgun_form(request) -> dict[str, str]:
    """The form fields Anymail posted to Mailgun (url-encoded: these messages have no attachment)."""
    content_type = request.headers["Content-Type"]
    assert content_type == "application/x-www-form-urlencoded", content_type
    return {name: values[-1] for name, values in parse_qs(request.body).items()}


class RestrictionTests(FailoverTestCase):
    def test_a_message_kept_to_mailgun_goes_to_mailgun_while_sendgrid_is_healthy(self):
        """Only the providers listed are asked, even when an earlier one in the chain works."""
        message = self.message()
        message.failover_providers = ["mailgun"]
        self.assertEqual(self.send(message), 1)
        self.assertEqual((self.esp.calls("sendgrid"), self.esp.calls("mailgun")), (0, 1))
        self.assertEqual(message.failover_provider, "mailgun")
        self.assertEqual([attempt.provider for attempt in message.failover_attempts], ["mailgun"])

    def test_the_providers_listed_are_tried_in_the_chains_order(self):
        """["mandrill", "mailgun"] tries mailgun first (the chain's order), then mandrill."""
        self.esp.down("mailgun")
        message = self.message()
        message.failover_providers = ["mandrill", "mailgun"]
        self.assertEqual(self.send(message), 1)
        self.assertEqual([attempt.provider for attempt in message.failover_attempts], ["mailgun", "mandrill"])
        self.assertEqual(self.esp.calls("sendgrid"), 0)

    def test_a_single_name_may_be_given_as_a_string(self):
        """failover_providers = "mailgun" is the one provider mailgun."""
        message = self.message()
        message.failover_providers = "mailgun"
        self.send(message)
        self.assertEqual(message.failover_provider, "mailgun")

    def test_all_listed_providers_down_is_all_providers_failed(self):
        """When every listed provider fails, AllProvidersFailed names them; the others are not asked."""
        self.esp.down("sendgrid")
        self.esp.down("mailgun")
        message = self.message()
        message.failover_providers = ["sendgrid", "mailgun"]
        with self.assertRaises(AllProvidersFailed) as caught:
            self.send(message)
        self.assertEqual(list(caught.exception.errors), ["sendgrid", "mailgun"])
        self.assertEqual(caught.exception.skipped, {})
        self.assertEqual(self.esp.calls("mandrill"), 0)

    def test_providers_left_out_are_not_failures(self):
        """A provider a message leaves out is not failed, not remembered, and takes the next message."""
        moves = []
        failover_signal.connect(lambda sender, **kw: moves.append(kw), weak=False, dispatch_uid="moves")
        self.addCleanup(failover_signal.disconnect, dispatch_uid="moves")
        message = self.message()
        message.failover_providers = ["mailgun"]
        self.send(message)
        states = {row["name"]: row["state"] for row in FirstWorkingEmailBackend().provider_states()}
        self.assertEqual(states, {"sendgrid": "active", "mailgun": "standby", "mandrill": "standby"})
        self.assertEqual(moves, [])  # it went where it was meant to go: no failover happened
        follower = self.message()
        self.send(follower)
        self.assertEqual(follower.failover_provider, "sendgrid")

    def test_a_probe_is_not_spent_on_a_message_that_leaves_the_provider_out(self):
        """While sendgrid is failing, a message kept to mailgun does not take sendgrid's probe."""
        self.esp.down("sendgrid")
        self.send(self.message())  # sendgrid fails, mailgun takes it: sends start at mailgun
        self.esp.ok("sendgrid")
        self.clock.advance(61)  # a probe of sendgrid is due
        kept = self.message()
        kept.failover_providers = ["mailgun"]
        self.send(kept)
        self.assertEqual(self.esp.calls("sendgrid"), 1)
        probed = self.message()
        self.send(probed)
        self.assertEqual((probed.failover_provider, self.esp.calls("sendgrid")), ("sendgrid", 2))


class UnknownProviderTests(FailoverTestCase):
    def test_an_unknown_name_is_refused_before_anything_of_the_batch_is_sent(self):
        """A name not in the chain raises UnknownProvider before any message of the batch goes out."""
        good, bad = self.message(), self.message()
        bad.failover_providers = ["mailgun", "postmark"]
        with self.assertRaises(UnknownProvider) as caught:
            self.send(good, bad)
        self.assertEqual(caught.exception.names, ["postmark"])
        self.assertEqual(caught.exception.known, ["sendgrid", "mailgun", "mandrill"])
        self.assertIsInstance(caught.exception, ValueError)
        self.assertEqual(self.esp.total_calls(), 0)

    def test_an_empty_restriction_is_refused(self):
        """failover_providers = [] names no provider: refused, not "any provider"."""
        message = self.message()
        message.failover_providers = []
        with self.assertRaises(UnknownProvider):
            self.send(message)

    def test_with_fail_silently_only_that_message_is_left_unsent(self):
        """fail_silently leaves the message with an unknown name unsent and sends the others."""
        good, bad = self.message(), self.message()
        bad.failover_providers = {"postmark": "welcome"}
        with self.assertLogs("failover.backends", "ERROR"):
            self.assertEqual(self.send(good, bad, fail_silently=True), 1)
        self.assertEqual(good.failover_provider, "sendgrid")
        self.assertEqual((bad.failover_provider, bad.failover_attempts), (None, []))


class EspTemplateTests(FailoverTestCase):
    def test_each_provider_gets_its_own_template_id(self):
        """{sendgrid: "d-1", mailgun: "welcome"} with sendgrid down: sendgrid was asked with d-1,
        and mailgun received the template "welcome"."""
        self.esp.down("sendgrid")
        message = AnymailMessage(from_email="app@example.com", to=["user@example.net"])
        message.failover_providers = {"sendgrid": "d-1", "mailgun": "welcome"}
        self.assertEqual(self.send(message), 1)
        self.assertEqual(self.esp.json_bodies("sendgrid")[0]["template_id"], "d-1")
        form = mailgun_form(self.esp.received["mailgun"][0])
        self.assertEqual(form["template"], "welcome")
        self.assertEqual(message.failover_provider, "mailgun")
        outcomes = [attempt.outcome for attempt in message.failover_attempts]
        self.assertEqual(outcomes, [Outcome.PROVIDER_ERROR, Outcome.SENT])

    def test_the_messages_own_template_id_is_restored_after_each_attempt(self):
        """After the send, template_id is the message's own again (or absent, as it was)."""
        own = AnymailMessage(from_email="app@example.com", to=["user@example.net"], template_id="own")
        own.failover_providers = {"mailgun": "welcome"}
        self.send(own)
        self.assertEqual(own.template_id, "own")
        plain = self.message()
        plain.failover_providers = {"mailgun": "welcome"}
        self.send(plain)
        self.assertFalse(hasattr(plain, "template_id"))
        self.assertEqual(mailgun_form(self.esp.received["mailgun"][1])["template"], "welcome")

    def test_a_provider_mapped_to_none_gets_the_messages_own_template_id(self):
        """{mailgun: None} keeps the message to mailgun with the message's own template_id."""
        message = AnymailMessage(from_email="app@example.com", to=["user@example.net"], template_id="own")
        message.failover_providers = {"mailgun": None}
        self.send(message)
        self.assertEqual(mailgun_form(self.esp.received["mailgun"][0])["template"], "own")

    def test_no_template_id_leaks_to_the_next_provider(self):
        """A provider with no id in the map gets no template: not the one the previous provider got."""
        self.esp.down("sendgrid")
        message = self.message()
        message.failover_providers = {"sendgrid": "d-1", "mailgun": None}
        self.send(message)
        self.assertNotIn("template", mailgun_form(self.esp.received["mailgun"][0]))
