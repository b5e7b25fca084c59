"""The templates API (mailservice/api/templates.py): store, list, read, change and delete
templates, and preview what a message would send; each route with its scope (docs/templates.md,
"The API")."""

from __future__ import annotations

import json

from django.test import TestCase, override_settings

from mailservice.models import Template
from mailservice.services.keys import api_key_create
from tests.mailservice.helpers import GatewayMixin, gateway_settings

WELCOME = {
    "name": "welcome",
    "subject": "Welcome, {{ first_name }}",
    "text": "Hi {{ first_name }}, thanks for joining.",
    "html": "<style>p { color: #333; }</style><p>Hi {{ first_name }}</p>",
    "description": "Sent after sign-up",
}


class TemplateApiMixin(GatewayMixin):
    """Calls to the templates API with the test's key (every scope) unless `auth` says otherwise."""

    def call(self, method: str, path: str, body=None, *, auth=None):
        data = {} if body is None else json.dumps(body)
        return getattr(self.client, method)(
            path, data, content_type="application/json", **(self.auth if auth is None else auth)
        )

    def create(self, body=None, **fields):
        response = self.call("post", "/api/templates", {**(body or WELCOME), **fields})
        self.assertEqual(response.status_code, 201, response.content)
        return response.json()

    def render(self, name="welcome", data=None, language=None, *, auth=None):
        body = {"data": {"first_name": "Ana"} if data is None else data}
        if language is not None:
            body["language"] = language
        return self.call("post", f"/api/templates/{name}/render", body, auth=auth)

    def assert_error(self, response, status, field, message_part=None):
        self.assertEqual(response.status_code, status, response.content)
        errors = response.json()["errors"]
        self.assertIn(field, [error["field"] for error in errors], errors)
        if message_part:
            messages = " ".join(error["message"] for error in errors if error["field"] == field)
            self.assertIn(message_part.lower(), messages.lower())
        return errors


@gateway_settings()
class CreateTemplateTests(TemplateApiMixin, TestCase):
    def test_post_stores_version_1_and_answers_201(self):
        """POST /api/templates answers 201 with the template at version 1, its sources included."""
        body = self.create(language="PT_br")
        self.assertEqual((body["name"], body["language"], body["version"]), ("welcome", "pt-BR", 1))
        self.assertEqual((body["subject"], body["description"]), (WELCOME["subject"], WELCOME["description"]))
        self.assertEqual(Template.objects.get().language, "pt-BR")

    def test_an_existing_name_and_language_is_409(self):
        """A second template with the same name and language answers 409 on `name`."""
        self.create()
        response = self.call("post", "/api/templates", {**WELCOME, "text": "Other"})
        self.assert_error(response, 409, "name", "exists")
        self.assertEqual(Template.objects.count(), 1)

    def test_the_same_name_in_another_language_is_another_template(self):
        """One name may have a template in each language."""
        self.create()
        self.create(language="pt")
        self.assertEqual(Template.objects.count(), 2)

    def test_a_syntax_error_is_422_naming_the_part_and_the_line(self):
        """A source that does not compile is refused on its part, naming the line; nothing is stored."""
        response = self.call("post", "/api/templates", {**WELCOME, "html": "<p>\n{% if %}</p>"})
        errors = self.assert_error(response, 422, "html", "line 2 of `html`")
        self.assertEqual(len(errors), 1)
        self.assertFalse(Template.objects.exists())

    def test_a_refused_tag_is_422_on_its_part(self):
        """{% load %} in the subject is refused on `subject`."""
        response = self.call("post", "/api/templates", {**WELCOME, "subject": "{% load static %}Hi"})
        self.assert_error(response, 422, "subject", "load")

    def test_a_bad_name_or_language_is_422_on_it(self):
        """A name that is no slug, and a language that is no BCP 47 tag, are refused on their fields."""
        self.assert_error(self.call("post", "/api/templates", {**WELCOME, "name": "a b"}), 422, "name")
        response = self.call("post", "/api/templates", {**WELCOME, "language": "english please"})
        self.assert_error(response, 422, "language", "BCP 47")

    def test_a_template_needs_text_or_html(self):
        """A template with neither part is refused."""
        response = self.call("post", "/api/templates", {"name": "empty", "subject": "Hi"})
        self.assert_error(response, 422, "text")

    def test_unknown_fields_are_refused(self):
        """A typo in a field name answers 422 instead of being dropped."""
        self.assert_error(self.call("post", "/api/templates", {**WELCOME, "htlm": "<p>x</p>"}), 422, "htlm")

    def test_a_nul_in_the_description_is_422(self):
        """A description holding NUL (which no database stores) is refused on `description`."""
        response = self.call("post", "/api/templates", {**WELCOME, "description": "a\x00b"})
        self.assert_error(response, 422, "description", "NUL")


@gateway_settings()
class ReadTemplateTests(TemplateApiMixin, TestCase):
    def test_the_list_is_paged_like_messages_without_sources(self):
        """GET /api/templates answers count, limit, offset and items by name and language, no sources."""
        for name in ("b", "a"):
            self.create(name=name)
        self.create(name="a", language="pt")
        response = self.call("get", "/api/templates?limit=2&offset=1")
        self.assertEqual(response.status_code, 200, response.content)
        body = response.json()
        self.assertEqual((body["count"], body["limit"], body["offset"]), (3, 2, 1))
        self.assertEqual(
            [(item["name"], item["language"]) for item in body["items"]], [("a", "pt"), ("b", "")]
        )
        self.assertEqual(
            set(body["items"][0]), {"name", "language", "description", "version", "created_at", "updated_at"}
        )

    def test_the_list_filters_by_name_and_language(self):
        """?name= and ?language= (in any spelling of the tag) keep only those templates."""
        self.create()
        self.create(language="pt-BR")
        self.create(name="other")
        body = self.call("get", "/api/templates?name=welcome&language=pt_br").json()
        self.assertEqual([(item["name"], item["language"]) for item in body["items"]], [("welcome", "pt-BR")])
        self.assert_error(self.call("get", "/api/templates?language=nope-nope-nope"), 422, "language")

    def test_a_limit_out_of_range_is_422(self):
        """The page's limit is 1 to 200, as in the message list."""
        self.assert_error(self.call("get", "/api/templates?limit=201"), 422, "limit")

    def test_get_answers_the_template_in_exactly_that_language(self):
        """GET /api/templates/{name}?language= answers that template; without it the default one."""
        self.create()
        self.create(language="pt", subject="Olá {{ first_name }}")
        self.assertEqual(
            self.call("get", "/api/templates/welcome?language=pt").json()["subject"], "Olá {{ first_name }}"
        )
        body = self.call("get", "/api/templates/welcome").json()
        self.assertEqual((body["language"], body["subject"]), ("", WELCOME["subject"]))

    def test_get_of_an_unknown_template_or_language_is_404(self):
        """An unknown name answers 404, and so does a language without its own template (no fallback)."""
        self.create()
        self.assert_error(self.call("get", "/api/templates/nope"), 404, None, "No template named 'nope'")
        self.assert_error(self.call("get", "/api/templates/welcome?language=pt-BR"), 404, None)


@gateway_settings()
class ChangeTemplateTests(TemplateApiMixin, TestCase):
    def test_put_changes_the_fields_given_and_makes_the_next_version(self):
        """PUT answers 200 with version 2; the fields left out keep their value."""
        self.create()
        response = self.call("put", "/api/templates/welcome", {"subject": "Hello {{ first_name }}"})
        self.assertEqual(response.status_code, 200, response.content)
        body = response.json()
        self.assertEqual(
            (body["version"], body["subject"], body["text"]), (2, "Hello {{ first_name }}", WELCOME["text"])
        )
        self.assertEqual(self.call("put", "/api/templates/welcome", {"text": "Again"}).json()["version"], 3)

    def test_put_of_the_same_values_keeps_the_version(self):
        """Saving a template as it is changes nothing, not even the version."""
        self.create()
        response = self.call("put", "/api/templates/welcome", {"subject": WELCOME["subject"]})
        self.assertEqual(response.json()["version"], 1)

    def test_put_addresses_one_language(self):
        """?language= says which translation changes; the others keep their version."""
        self.create()
        self.create(language="pt")
        body = self.call("put", "/api/templates/welcome?language=pt", {"text": "Olá"}).json()
        self.assertEqual((body["language"], body["version"]), ("pt", 2))
        self.assertEqual(Template.objects.get(language="").version, 1)

    def test_put_with_a_syntax_error_is_422_and_changes_nothing(self):
        """A change that does not compile is refused naming the part and the line; the template stays."""
        self.create()
        response = self.call("put", "/api/templates/welcome", {"text": "ok\n\n{{ a|nosuchfilter }}"})
        self.assert_error(response, 422, "text", "line 3 of `text`")
        self.assertEqual(Template.objects.get().version, 1)

    def test_put_of_an_unknown_template_is_404(self):
        """PUT does not create: an unknown name or language answers 404."""
        self.assert_error(self.call("put", "/api/templates/nope", {"text": "x"}), 404, None)

    def test_name_and_language_are_not_fields_of_a_change(self):
        """A template's name and language are its address, not fields PUT changes."""
        self.create()
        self.assert_error(self.call("put", "/api/templates/welcome", {"name": "other"}), 422, "name")

    def test_delete_answers_204_and_leaves_the_other_languages(self):
        """DELETE removes the template in that language only; a second DELETE answers 404."""
        self.create()
        self.create(language="pt")
        response = self.call("delete", "/api/templates/welcome?language=pt")
        self.assertEqual(response.status_code, 204, response.content)
        self.assertEqual(list(Template.objects.values_list("language", flat=True)), [""])
        self.assert_error(self.call("delete", "/api/templates/welcome?language=pt"), 404, None)


@gateway_settings()
class RenderTemplateTests(TemplateApiMixin, TestCase):
    def test_render_answers_the_parts_language_and_version(self):
        """The preview: the rendered subject, text and HTML (CSS inlined), the language and version."""
        self.create()
        response = self.render()
        self.assertEqual(response.status_code, 200, response.content)
        body = response.json()
        self.assertEqual(set(body), {"subject", "text", "html", "language", "version"})
        self.assertEqual((body["subject"], body["text"]), ("Welcome, Ana", "Hi Ana, thanks for joining."))
        self.assertIn('<p style="color: #333;">Hi Ana</p>', body["html"])
        self.assertEqual((body["language"], body["version"]), ("", 1))

    def test_render_falls_back_from_the_tag_to_its_language_to_the_default(self):
        """pt-BR is served by pt-BR, else pt, else the default language."""
        self.create()
        self.create(language="pt", subject="Olá {{ first_name }}")
        self.create(language="pt-BR", subject="Oi {{ first_name }}")
        self.assertEqual(self.render(language="pt-BR").json()["subject"], "Oi Ana")
        Template.objects.filter(language="pt-BR").delete()
        self.assertEqual(
            [self.render(language="pt-BR").json()[key] for key in ("subject", "language")], ["Olá Ana", "pt"]
        )
        Template.objects.filter(language="pt").delete()
        self.assertEqual(self.render(language="pt-BR").json()["language"], "")

    def test_a_missing_variable_is_422_naming_it_in_template_data(self):
        """A variable the data lacks answers 422 on template_data.<name>, with the part and line."""
        self.create()
        errors = self.assert_error(
            self.render(data={}), 422, "template_data.first_name", "line 1 of `subject`"
        )
        self.assertEqual(len(errors), 1)

    def test_render_of_an_unknown_template_is_404(self):
        """No template of that name in the language or a fallback answers 404."""
        self.create(language="de")
        self.assert_error(self.render(language="pt-BR"), 404, None, "No template named 'welcome' in 'pt-BR'")

    def test_a_template_not_found_names_the_languages_it_exists_in(self):
        """Asked for in the default language, a template stored only in others says which."""
        self.create(language="en")
        self.create(language="de")
        self.assert_error(self.render(), 404, None, "in the default language; it exists in 'de', 'en'.")

    @override_settings(MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES=1_000)
    def test_a_render_over_the_output_limit_is_422(self):
        """Output past MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES stops the render with a 422 on the part."""
        self.create(text="{% for i in items %}{{ i }}{% endfor %}")
        self.assert_error(self.render(data={"first_name": "A", "items": ["x" * 100] * 20}), 422, "text")

    @override_settings(MAILSERVICE_MAX_MERGE_DATA_KEYS=5)
    def test_data_over_the_template_data_caps_is_422(self):
        """The preview's data has template_data's caps (MAILSERVICE_MAX_MERGE_DATA_*)."""
        self.create()
        response = self.render(data={"first_name": "A", "more": list(range(10))})
        self.assert_error(response, 422, "data", "at most 5")

    def test_a_lone_surrogate_in_the_data_is_422_on_its_path(self):
        """What JSON parses but is no text is refused on template_data.<path>, as in a message."""
        self.create()
        raw = '{"data": {"first_name": "\\ud800"}}'
        response = self.client.post(
            "/api/templates/welcome/render", raw, content_type="application/json", **self.auth
        )
        self.assert_error(response, 422, "template_data.first_name", "surrogate")


@gateway_settings()
class TemplateScopeTests(TemplateApiMixin, TestCase):
    def key(self, *scopes: str) -> dict:
        _, raw = api_key_create(name="-".join(scopes), scopes=scopes)
        return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}

    def test_a_read_key_reads_and_previews_but_cannot_change(self):
        """`read` lists, reads and previews templates; creating, changing and deleting answer 403."""
        self.create()
        read = self.key("read")
        self.assertEqual(self.call("get", "/api/templates", auth=read).status_code, 200)
        self.assertEqual(self.call("get", "/api/templates/welcome", auth=read).status_code, 200)
        self.assertEqual(self.render(auth=read).status_code, 200)
        for method, path, body in (
            ("post", "/api/templates", {**WELCOME, "name": "other"}),
            ("put", "/api/templates/welcome", {"text": "x"}),
            ("delete", "/api/templates/welcome", None),
        ):
            with self.subTest(method):
                self.assert_error(self.call(method, path, body, auth=read), 403, None, "'manage'")
        self.assertEqual(list(Template.objects.values_list("name", "version")), [("welcome", 1)])

    def test_a_send_key_previews_but_cannot_read_or_change(self):
        """`send` may preview what it would send; reading and changing templates answer 403."""
        self.create()
        send = self.key("send")
        self.assertEqual(self.render(auth=send).status_code, 200)
        self.assert_error(self.call("get", "/api/templates", auth=send), 403, None)
        self.assert_error(self.call("get", "/api/templates/welcome", auth=send), 403, None)
        self.assert_error(self.call("post", "/api/templates", WELCOME, auth=send), 403, None)

    def test_a_manage_key_does_everything(self):
        """`manage` creates, reads, changes, previews and deletes."""
        manage = self.key("manage")
        self.assertEqual(self.call("post", "/api/templates", WELCOME, auth=manage).status_code, 201)
        self.assertEqual(self.call("get", "/api/templates/welcome", auth=manage).status_code, 200)
        self.assertEqual(
            self.call("put", "/api/templates/welcome", {"text": "x"}, auth=manage).status_code, 200
        )
        self.assertEqual(self.render(auth=manage).status_code, 200)
        self.assertEqual(self.call("delete", "/api/templates/welcome", auth=manage).status_code, 204)

    def test_no_key_is_401(self):
        """Every route needs an API key."""
        self.assertEqual(self.call("get", "/api/templates", auth={}).status_code, 401)
        self.assertEqual(self.render(auth={}).status_code, 401)
