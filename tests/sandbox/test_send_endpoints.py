"""The unmodified Anymail backends send to the sandbox over real sockets and read its answers
as they read the real APIs'."""

import requests
from anymail.exceptions import AnymailRecipientsRefused, AnymailRequestsAPIError

from sandbox.store import ReplyKind
from tests.sandbox.base import CHAIN, MAILGUN_DOMAIN, SandboxTestCase


class HealthySendTests(SandboxTestCase):
    def test_each_provider_accepts_a_message_from_its_anymail_backend(self):
        """SendGrid, Mailgun and Mandrill each take a message and report it queued or sent."""
        expected = {"sendgrid": {"queued"}, "mailgun": {"queued"}, "mandrill": {"sent"}}
        for name in CHAIN:
            with self.subTest(provider=name):
                message = self.message()
                self.assertEqual(self.backend(name).send_messages([message]), 1)
                self.assertEqual(message.anymail_status.status, expected[name])
                self.assertEqual(len(self.received(name)), 1)

    def test_sendgrid_records_anymail_id_as_the_message_id(self):
        """SendGrid's message id is the anymail_id Anymail put in custom_args, echoed by the sandbox."""
        message = self.message(to=["a@example.net"], cc=["c@example.net"])
        self.backend("sendgrid").send_messages([message])
        record = self.received("sendgrid")[0]
        self.assertEqual({r["message_id"] for r in record["recipients"]}, {message.anymail_status.message_id})
        self.assertEqual(record["to"], ["a@example.net"])
        self.assertEqual(record["cc"], ["c@example.net"])
        self.assertRegex(record["provider_message_id"], r"^[\w-]{22}$")

    def test_mailgun_answers_a_message_id_at_its_sender_domain(self):
        """Mailgun's 200 answer carries one <...@domain> id for every recipient."""
        message = self.message(to=["a@example.net", "b@example.net"])
        self.backend("mailgun").send_messages([message])
        message_id = message.anymail_status.message_id
        self.assertRegex(message_id, rf"^<\d{{14}}\.[0-9a-f]+@{MAILGUN_DOMAIN}>$")
        self.assertEqual(self.received("mailgun")[0]["provider_message_id"], message_id)

    def test_mandrill_answers_one_result_per_recipient(self):
        """Each Mandrill recipient gets its own _id, which Anymail reports per recipient."""
        message = self.message(to=["a@example.net", "b@example.net"])
        self.backend("mandrill").send_messages([message])
        ids = {addr: status.message_id for addr, status in message.anymail_status.recipients.items()}
        self.assertEqual(len(set(ids.values())), 2)
        stored = {r["email"]: r["message_id"] for r in self.received("mandrill")[0]["recipients"]}
        self.assertEqual(stored, ids)

    def test_mandrill_template_send_uses_the_send_template_endpoint(self):
        """A message with template_id reaches messages/send-template.json and is accepted."""
        message = self.message()
        message.template_id = "welcome"
        self.backend("mandrill").send_messages([message])
        record = self.received("mandrill")[0]
        summary = (record["endpoint"], record["template"], record["outcome"])
        self.assertEqual(summary, ("send-template", "welcome", "accepted"))

    def test_tags_metadata_subject_and_sender_are_recorded_for_every_provider(self):
        """What tests need to know about a message is kept, per provider."""
        for name in CHAIN:
            with self.subTest(provider=name):
                message = self.message(subject=f"Report {name}")
                message.tags = ["weekly"]
                message.metadata = {"customer": "42"}
                self.backend(name).send_messages([message])
                record = self.received(name)[-1]
                self.assertEqual(record["subject"], f"Report {name}")
                self.assertEqual(record["from"], "app@example.com")
                self.assertEqual(record["tags"], ["weekly"])
                self.assertEqual(record["metadata"], {"customer": "42"})

    def test_mailgun_multipart_request_with_an_attachment_is_understood(self):
        """With an attachment Anymail posts multipart/form-data; recipients and subject still parse."""
        message = self.message(to=["Ann Example <ann@example.net>"], subject="Ünïcode subject")
        message.attach("report.txt", b"contents", "text/plain")
        self.backend("mailgun").send_messages([message])
        record = self.received("mailgun")[0]
        self.assertEqual((record["to"], record["subject"]), (["ann@example.net"], "Ünïcode subject"))

    def test_bodies_and_keys_are_not_recorded(self):
        """Records never hold message bodies or API keys."""
        self.backend("mandrill").send_messages([self.message()])
        text = str(self.received("mandrill"))
        self.assertNotIn("Body text", text)
        self.assertNotIn(self.sandbox.settings.api_keys["mandrill"], text)


class ApiKeyTests(SandboxTestCase):
    def test_sendgrid_refuses_a_wrong_bearer_key_with_401(self):
        """SendGrid answers a wrong key with 401 and its errors list."""
        with self.assertRaises(AnymailRequestsAPIError) as caught:
            self.backend("sendgrid", api_key="SG.wrong").send_messages([self.message()])
        self.assertEqual(caught.exception.status_code, 401)
        error = caught.exception.response.json()["errors"][0]
        self.assertIn("authorization grant is invalid", error["message"])

    def test_mailgun_refuses_a_wrong_key_with_forbidden(self):
        """Mailgun answers a wrong basic-auth key with 401 'Forbidden'."""
        with self.assertRaises(AnymailRequestsAPIError) as caught:
            self.backend("mailgun", api_key="wrong").send_messages([self.message()])
        self.assertEqual((caught.exception.status_code, caught.exception.response.text), (401, "Forbidden"))

    def test_mandrill_refuses_a_wrong_key_with_invalid_key_and_500(self):
        """Mandrill answers a wrong key in the body with HTTP 500 Invalid_Key, as the real API does."""
        with self.assertRaises(AnymailRequestsAPIError) as caught:
            self.backend("mandrill", api_key="wrong").send_messages([self.message()])
        self.assertEqual(caught.exception.status_code, 500)
        self.assertEqual(
            caught.exception.response.json(),
            {"status": "error", "code": -1, "name": "Invalid_Key", "message": "Invalid API key"},
        )

    def test_a_refused_key_is_recorded_as_an_error(self):
        """The request is still visible in the store, with the status the sandbox answered."""
        with self.assertRaises(AnymailRequestsAPIError):
            self.backend("sendgrid", api_key="SG.wrong").send_messages([self.message()])
        record = self.received("sendgrid")[0]
        self.assertEqual((record["outcome"], record["status_code"]), (ReplyKind.ERROR, 401))


class MailgunDomainTests(SandboxTestCase):
    def test_unknown_sender_domain_is_404_domain_not_found(self):
        """A domain the sandbox does not know gets Mailgun's 404 'Domain not found: x'."""
        with self.assertRaises(AnymailRequestsAPIError) as caught:
            self.backend("mailgun", sender_domain="unknown.example.com").send_messages([self.message()])
        self.assertEqual(caught.exception.status_code, 404)
        answer = caught.exception.response.json()
        self.assertEqual(answer, {"message": "Domain not found: unknown.example.com"})
        self.assertIn("Unknown sender domain", str(caught.exception))  # Anymail recognised it


class RecipientConventionTests(SandboxTestCase):
    def test_sendgrid_refuses_a_reject_address_with_400(self):
        """reject+...@ makes SendGrid refuse the whole request with its invalid-address error."""
        with self.assertRaises(AnymailRequestsAPIError) as caught:
            message = self.message(to=["ok@example.net", "reject+x@example.net"])
            self.backend("sendgrid").send_messages([message])
        self.assertEqual(caught.exception.status_code, 400)
        error = caught.exception.response.json()["errors"][0]
        self.assertEqual(error["field"], "personalizations.0.to.1.email")

    def test_mailgun_refuses_a_reject_address_with_400(self):
        """reject+...@ makes Mailgun answer 400 'to parameter is not a valid address'."""
        with self.assertRaises(AnymailRequestsAPIError) as caught:
            self.backend("mailgun").send_messages([self.message(to=["reject+x@example.net"])])
        self.assertEqual(caught.exception.status_code, 400)
        self.assertIn("not a valid address", caught.exception.response.json()["message"])

    def test_mandrill_rejects_per_recipient_and_sends_to_the_others(self):
        """Mandrill answers 200 with 'rejected' for reject+ and 'invalid' for invalid+ addresses."""
        message = self.message(to=["ok@example.net", "reject+x@example.net", "invalid+y@example.net"])
        self.assertEqual(self.backend("mandrill").send_messages([message]), 1)
        statuses = {addr: status.status for addr, status in message.anymail_status.recipients.items()}
        expected = {
            "ok@example.net": "sent",
            "reject+x@example.net": "rejected",
            "invalid+y@example.net": "invalid",
        }
        self.assertEqual(statuses, expected)

    def test_mandrill_with_every_recipient_rejected_raises_recipients_refused(self):
        """Anymail turns an all-rejected Mandrill answer into AnymailRecipientsRefused."""
        with self.assertRaises(AnymailRecipientsRefused):
            self.backend("mandrill").send_messages([self.message(to=["REJECT+Shout@example.net"])])
        self.assertEqual(self.received("mandrill")[0]["outcome"], ReplyKind.REFUSED)

    def test_fault_reject_patterns_refuse_ordinary_addresses(self):
        """A reject fault refuses matching addresses as if they used the reject+ convention."""
        self.fault("sendgrid", reject=("*@blocked.example",))
        with self.assertRaises(AnymailRequestsAPIError) as caught:
            self.backend("sendgrid").send_messages([self.message(to=["someone@blocked.example"])])
        self.assertEqual(caught.exception.status_code, 400)


class MalformedRequestTests(SandboxTestCase):
    def test_sendgrid_without_recipients_is_400(self):
        """A SendGrid request whose personalization lacks `to` gets SendGrid's 400."""
        response = requests.post(
            self.sandbox.api_url("sendgrid") + "mail/send",
            json={"personalizations": [{}], "from": {"email": "a@example.com"}},
            headers={"Authorization": f"Bearer {self.sandbox.settings.api_keys['sendgrid']}"},
            timeout=5,
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["errors"][0]["field"], "personalizations.0.to")

    def test_unknown_path_on_a_provider_port_is_404(self):
        """A wrong API URL reaches no endpoint: 404, and nothing is recorded."""
        response = requests.post(self.sandbox.api_url("sendgrid") + "mail/sendx", data=b"{}", timeout=5)
        self.assertEqual(response.status_code, 404)
        self.assertEqual(self.received("sendgrid"), [])
