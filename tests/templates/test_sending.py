"""Messages with templates (docs/templates.md): a stored template rendered when the message is
accepted, stored rendered and sent alike by every provider of a failover; an ESP's template
(`template_id`) as one id for a one-provider chain, or one id per provider."""

from __future__ import annotations

import json
from email import message_from_bytes
from urllib.parse import parse_qs

from anymail.utils import UNSET
from django.test import TestCase, override_settings

from mailservice.composing import build_email
from mailservice.models import Message
from mailservice.services.delivery import message_deliver
from mailservice.services.templates import template_create
from tests.esp import ESPMock
from tests.mailservice.helpers import GatewayMixin, esp_settings, gateway_settings

TO = "jane@example.com"
TEMPLATED = {"to": TO, "template": "welcome", "template_data": {"first_name": "Ana"}}
PLAIN = {"to": TO, "subject": "Hello", "text": "Hi Jane"}


def create_welcome(language: str = "", greeting: str = "Welcome") -> None:
    template_create(
        name="welcome",
        language=language,
        subject=greeting + ", {{ first_name }}",
        text="Hi {{ first_name }},\nthanks for joining.",
        html="<style>p { color: #333; }</style><p>Hi {{ first_name }}</p>",
    )


class SendingMixin(GatewayMixin):
    def accept(self, body):
        response = self.post_message(body)
        self.assertEqual(response.status_code, 202, response.content)
        return Message.objects.get(pk=response.json()["id"])

    def preview(self, data, language=None):
        body = {"data": data, **({"language": language} if language is not None else {})}
        response = self.client.post(
            "/api/templates/welcome/render", json.dumps(body), content_type="application/json", **self.auth
        )
        self.assertEqual(response.status_code, 200, response.content)
        return response.json()


@gateway_settings()
class TemplatedMessageTests(SendingMixin, TestCase):
    def setUp(self):
        super().setUp()
        create_welcome()

    def test_a_templated_message_is_stored_rendered(self):
        """The message is rendered at accept: its subject, text and HTML are the template's with the data."""
        message = self.accept(TEMPLATED)
        self.assertEqual(message.subject, "Welcome, Ana")
        self.assertEqual(message.text, "Hi Ana,\nthanks for joining.")
        self.assertIn('<p style="color: #333;">Hi Ana</p>', message.html)
        self.assertEqual(message.template, {"name": "welcome", "language": "", "version": 1})
        self.assertIsNone(message.template_id)

    def test_the_preview_is_what_a_send_stores(self):
        """POST /api/templates/{name}/render answers exactly the parts a message with that data stores."""
        data = {"first_name": "Ana <3"}
        preview = self.preview(data, language="en")
        message = self.accept({**TEMPLATED, "template_data": data, "language": "en"})
        self.assertEqual(
            (preview["subject"], preview["text"], preview["html"]),
            (message.subject, message.text, message.html),
        )
        self.assertEqual(
            {"name": "welcome", "language": preview["language"], "version": preview["version"]},
            message.template,
        )

    def test_get_message_shows_its_template(self):
        """GET /api/messages/{id} shows template {name, language, version}; a plain message shows null."""
        templated = self.accept({**TEMPLATED, "language": "pt-BR"})
        plain = self.accept(PLAIN)
        body = self.client.get(f"/api/messages/{templated.pk}", **self.auth).json()
        self.assertEqual(body["template"], {"name": "welcome", "language": "", "version": 1})
        self.assertEqual(body["subject"], "Welcome, Ana")
        body = self.client.get(f"/api/messages/{plain.pk}", **self.auth).json()
        self.assertEqual((body["template"], body["template_id"]), (None, None))

    def test_a_change_to_the_template_does_not_change_an_accepted_message(self):
        """A message keeps what it was rendered with; the next one gets the new version."""
        first = self.accept(TEMPLATED)
        self.client.put(
            "/api/templates/welcome",
            json.dumps({"subject": "Hello {{ first_name }}"}),
            content_type="application/json",
            **self.auth,
        )
        second = self.accept(TEMPLATED)
        first.refresh_from_db()
        self.assertEqual((first.subject, first.template["version"]), ("Welcome, Ana", 1))
        self.assertEqual((second.subject, second.template["version"]), ("Hello Ana", 2))

    def test_the_language_falls_back_to_the_primary_subtag_then_the_default(self):
        """pt-BR is rendered from pt-BR, else pt, else the default; the message records which."""
        create_welcome("pt", greeting="Bem-vindo")
        message = self.accept({**TEMPLATED, "language": "pt-BR"})
        self.assertEqual((message.subject, message.template["language"]), ("Bem-vindo, Ana", "pt"))
        create_welcome("pt-BR", greeting="Oi")
        message = self.accept({**TEMPLATED, "language": "pt_br"})
        self.assertEqual((message.subject, message.template["language"]), ("Oi, Ana", "pt-BR"))
        message = self.accept({**TEMPLATED, "language": "de-AT"})
        self.assertEqual((message.subject, message.template["language"]), ("Welcome, Ana", ""))

    def test_subject_text_or_html_with_a_template_is_422_on_each(self):
        """A message with `template` takes its content from it: each own part given is refused."""
        response = self.post_message({**TEMPLATED, "subject": "S", "text": "T", "html": "<p>H</p>"})
        for field in ("subject", "text", "html"):
            self.assert_refused(response, 422, field, "from the template")

    def test_template_and_template_id_together_are_422(self):
        """A message uses the gateway's template or an ESP's, not both."""
        self.assert_refused(
            self.post_message({**TEMPLATED, "template_id": "d-1"}), 422, "template_id", "not both"
        )

    def test_template_data_or_language_without_a_template_are_422(self):
        """template_data and language mean something only with `template`."""
        response = self.post_message({**PLAIN, "template_data": {"a": 1}, "language": "pt"})
        self.assert_refused(response, 422, "template_data", "give `template` too")
        self.assert_refused(response, 422, "language")

    def test_an_unknown_template_is_422_naming_the_name_and_the_language(self):
        """A template missing in the language and its fallbacks is refused on `template`."""
        response = self.post_message({**TEMPLATED, "template": "nope", "language": "pt-BR"})
        self.assert_refused(response, 422, "template", "No template named 'nope' in 'pt-BR'")

    def test_a_bad_template_name_or_language_is_422_on_the_message_field(self):
        """A name that is no slug is refused on `template`, a language that is no tag on `language`."""
        response = self.post_message({**TEMPLATED, "template": "no such/name", "language": "xx-yy-zz-!"})
        self.assert_refused(response, 422, "template")
        self.assert_refused(response, 422, "language", "BCP 47")

    def test_a_missing_variable_is_422_naming_it_and_nothing_is_stored(self):
        """A variable template_data lacks is a 422 on template_data.<name>, at send as at render."""
        response = self.post_message({**TEMPLATED, "template_data": {"name": "Ana"}})
        self.assert_refused(response, 422, "template_data.first_name", "line 1 of `subject`")

    def test_no_template_data_is_empty_data(self):
        """Without template_data a template that uses a variable is refused on that variable."""
        response = self.post_message({"to": TO, "template": "welcome"})
        self.assert_refused(response, 422, "template_data.first_name")

    def test_a_rendered_subject_with_a_line_break_is_422_on_subject(self):
        """Data that puts a line break into the subject is refused, as a plain message's subject is."""
        response = self.post_message({**TEMPLATED, "template_data": {"first_name": "A\nBcc: x@evil.test"}})
        self.assert_refused(response, 422, "subject", "one line")

    def test_other_errors_are_reported_before_the_template_is_rendered(self):
        """A request refused on another field is not rendered (the costly check comes last)."""
        response = self.post_message({**TEMPLATED, "to": "not an address", "template_data": {}})
        self.assert_refused(response, 422, "to[0]")
        fields = [error["field"] for error in response.json()["errors"]]
        self.assertNotIn("template_data.first_name", fields)

    @override_settings(MAILSERVICE_MAX_MERGE_DATA_BYTES=1_000)
    def test_template_data_over_its_size_cap_is_422(self):
        """template_data is capped as merge data: over MAILSERVICE_MAX_MERGE_DATA_BYTES is a 422 on it."""
        response = self.post_message({**TEMPLATED, "template_data": {"first_name": "A", "x": "y" * 2_000}})
        self.assert_refused(response, 422, "template_data", "1000 bytes")

    def test_template_data_nested_too_deep_is_422(self):
        """template_data nests at most 32 levels, as metadata does."""
        deep: dict = {"first_name": "A"}
        for _ in range(33):
            deep = {"a": deep}
        response = self.post_message({**TEMPLATED, "template_data": {"first_name": "A", "deep": deep}})
        self.assert_refused(response, 422, "template_data", "levels deep")

    def test_nan_in_template_data_is_422_on_its_path(self):
        """What JSON parses but is no number is refused where it is, before any render."""
        raw = json.dumps(TEMPLATED)[:-2] + ', "score": NaN}}'
        self.assert_refused(self.post_message(raw, raw=True), 422, "template_data.score", "NaN")

    @override_settings(MAILSERVICE_TEMPLATE_RENDER_SECONDS=0.05)
    def test_a_render_over_the_time_limit_is_422(self):
        """Rendering that passes MAILSERVICE_TEMPLATE_RENDER_SECONDS is a 422, and nothing is stored."""
        loops = "{% for a in x %}{% for b in x %}{% for c in x %}.{% endfor %}{% endfor %}{% endfor %}"
        template_create(name="slow", text=loops)
        response = self.post_message({"to": TO, "template": "slow", "template_data": {"x": list(range(200))}})
        self.assert_refused(response, 422, "text", "MAILSERVICE_TEMPLATE_RENDER_SECONDS")

    def test_the_send_url_takes_a_template(self):
        """GET /?to=&template=&language= sends the template (no default subject); its data needs JSON."""
        template_create(name="ping", language="pt", subject="Olá {{ name|default:'amigo' }}", text="Teste")
        response = self.client.get(f"/?to={TO}&template=ping&language=pt-BR", **self.auth)
        self.assertEqual(response.status_code, 202, response.content)
        message = Message.objects.get(pk=response.json()["id"])
        self.assertEqual((message.subject, message.text), ("Olá amigo", "Teste"))
        self.assertEqual(message.template, {"name": "ping", "language": "pt", "version": 1})

    def test_the_send_url_takes_template_data_only_as_json(self):
        """template_data in a query string is refused; in a JSON POST it is rendered."""
        response = self.client.get(f"/?to={TO}&template=welcome&template_data=x", **self.auth)
        self.assert_refused(response, 422, "template_data", "JSON")
        response = self.client.post("/", json.dumps(TEMPLATED), content_type="application/json", **self.auth)
        self.assertEqual(response.status_code, 202, response.content)
        self.assertEqual(Message.objects.get().subject, "Welcome, Ana")


@gateway_settings()
class EspTemplateIdTests(SendingMixin, TestCase):
    @override_settings(FIRST_WORKING_EMAIL_BACKENDS=["sendgrid", "mailgun", "mandrill"])
    def test_one_id_with_several_providers_is_422_explaining_the_object(self):
        """A string template_id with a three-provider chain is refused, naming the object form."""
        response = self.post_message({"to": TO, "template_id": "d-123"})
        self.assert_refused(response, 422, "template_id", '{"sendgrid": "d-13b8f94f", "mailgun": "welcome"}')
        self.assertIn("sendgrid, mailgun, mandrill", response.json()["errors"][0]["message"])

    @override_settings(FIRST_WORKING_EMAIL_BACKENDS=["sendgrid"])
    def test_one_id_with_one_provider_is_accepted(self):
        """A string template_id is accepted when the chain has a single provider, and shown as given."""
        message = self.accept({"to": TO, "template_id": "d-123"})
        self.assertEqual(message.template_id, "d-123")
        body = self.client.get(f"/api/messages/{message.pk}", **self.auth).json()
        self.assertEqual((body["template_id"], body["template"]), ("d-123", None))

    @override_settings(FIRST_WORKING_EMAIL_BACKENDS=["sendgrid", "mailgun", "mandrill"])
    def test_one_id_per_provider_is_stored_and_shown_as_given(self):
        """An object of provider ids is stored and GET shows it as given."""
        ids = {"sendgrid": "d-1", "mailgun": "welcome"}
        message = self.accept({"to": TO, "template_id": ids, "merge_global_data": {"name": "Ana"}})
        self.assertEqual(message.template_id, ids)
        self.assertEqual(
            self.client.get(f"/api/messages/{message.pk}", **self.auth).json()["template_id"], ids
        )

    @override_settings(FIRST_WORKING_EMAIL_BACKENDS=["sendgrid", "mailgun"])
    def test_a_provider_the_chain_lacks_is_422_naming_it(self):
        """Each key must be a provider of the chain: an unknown one is refused on template_id.<key>."""
        response = self.post_message({"to": TO, "template_id": {"sendgrid": "d-1", "postmark": "w"}})
        self.assert_refused(response, 422, "template_id.postmark", "sendgrid, mailgun")

    @override_settings(FIRST_WORKING_EMAIL_BACKENDS=["sendgrid", "mailgun"])
    def test_empty_ids_and_empty_objects_are_422(self):
        """An object naming no provider, or a provider with an empty or multi-line id, is refused."""
        self.assert_refused(self.post_message({"to": TO, "template_id": {}}), 422, "template_id")
        response = self.post_message({"to": TO, "template_id": {"sendgrid": "", "mailgun": "a\nb"}})
        self.assert_refused(response, 422, "template_id.sendgrid")
        self.assert_refused(response, 422, "template_id.mailgun", "line breaks")

    def test_a_template_id_of_another_type_is_422(self):
        """A number, a list, or an object of non-strings is refused with one error on template_id."""
        for value in (5, ["d-1"], {"locmem": 5}):
            with self.subTest(value=value):
                response = self.post_message({"to": TO, "template_id": value})
                self.assert_refused(response, 422, "template_id")
                self.assertEqual(len(response.json()["errors"]), 1, response.json())

    @override_settings(FIRST_WORKING_EMAIL_BACKENDS=["sendgrid", "mailgun"])
    def test_the_email_carries_the_ids_as_failover_providers(self):
        """build_email sets failover_providers to the ids, and no template_id of its own."""
        message = self.accept({"to": TO, "template_id": {"mailgun": "welcome"}})
        email = build_email(message, message.recipients.all())
        self.assertEqual(email.failover_providers, {"mailgun": "welcome"})
        self.assertIs(email.template_id, UNSET)


def mailgun_fields(request) -> dict[str, list[str]]:
    """The form fields of a request to Mailgun (urlencoded, or multipart with attachments)."""
    body = request.body if isinstance(request.body, bytes) else request.body.encode()
    content_type = request.headers["Content-Type"]
    if content_type.startswith("multipart/"):
        parsed = message_from_bytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        fields: dict[str, list[str]] = {}
        for part in parsed.get_payload():
            name = part.get_param("name", header="content-disposition")
            fields.setdefault(name, []).append(part.get_payload(decode=True).decode())
        return fields
    return parse_qs(body.decode(), keep_blank_values=True)


@esp_settings()
class TemplateFailoverTests(SendingMixin, TestCase):
    """Through the delivery service, with SendGrid first and Mailgun second (tests/esp.py)."""

    def setUp(self):
        super().setUp()
        self.esp = ESPMock()
        self.esp.start()
        self.addCleanup(self.esp.stop)

    def test_the_secondary_receives_the_identical_rendered_mail(self):
        """SendGrid down: Mailgun receives the subject, text and HTML exactly as rendered and previewed."""
        create_welcome()
        preview = self.preview({"first_name": "Ana"})
        message = self.accept(TEMPLATED)
        self.esp.down("sendgrid")
        message = message_deliver(message_id=message.pk)
        self.assertEqual((message.status, message.provider), ("sent", "mailgun"))
        sendgrid = self.esp.json_bodies("sendgrid")[0]
        self.assertEqual(sendgrid["subject"], preview["subject"])
        self.assertEqual(
            [(part["type"], part["value"]) for part in sendgrid["content"]],
            [("text/plain", preview["text"]), ("text/html", preview["html"])],
        )
        mailgun = mailgun_fields(self.esp.received["mailgun"][0])
        self.assertEqual(
            (mailgun["subject"], mailgun["text"], mailgun["html"]),
            ([preview["subject"]], [preview["text"]], [preview["html"]]),
        )
        self.assertNotIn("template", mailgun)

    def test_an_esp_template_map_gives_each_provider_its_own_id(self):
        """SendGrid down: it was asked with d-1, and Mailgun receives `template=welcome`."""
        ids = {"sendgrid": "d-1", "mailgun": "welcome"}
        message = self.accept({"to": TO, "template_id": ids, "merge_global_data": {"name": "Ana"}})
        self.esp.down("sendgrid")
        message = message_deliver(message_id=message.pk)
        self.assertEqual((message.status, message.provider), ("sent", "mailgun"))
        self.assertEqual(self.esp.json_bodies("sendgrid")[0]["template_id"], "d-1")
        mailgun = mailgun_fields(self.esp.received["mailgun"][0])
        self.assertEqual(mailgun["template"], ["welcome"])
        attempts = list(message.attempts.values_list("provider", "outcome"))
        self.assertEqual(attempts, [("sendgrid", "provider_error"), ("mailgun", "sent")])

    def test_providers_left_out_of_the_map_are_passed_over_not_failed(self):
        """With only Mailgun's id, SendGrid (up, and first) is not asked and no attempt is recorded."""
        message = self.accept({"to": TO, "template_id": {"mailgun": "welcome"}})
        message = message_deliver(message_id=message.pk)
        self.assertEqual((message.status, message.provider), ("sent", "mailgun"))
        self.assertEqual(self.esp.calls("sendgrid"), 0)
        self.assertEqual(list(message.attempts.values_list("provider", flat=True)), ["mailgun"])
        self.assertEqual(mailgun_fields(self.esp.received["mailgun"][0])["template"], ["welcome"])
