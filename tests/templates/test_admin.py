"""The admin of stored templates (mailservice/template_admin.py): its pages, saving through the
services (versions, source checks shown on their fields), and the live preview's view."""

from __future__ import annotations

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client, TestCase

from mailservice.models import Template
from mailservice.services.templates import template_create

LIST = "/admin/mailservice/template/"
ADD = "/admin/mailservice/template/add/"
PREVIEW = "/admin/mailservice/template/preview/"
STATIC = Path(__file__).resolve().parents[2] / "mailservice" / "static" / "mailservice"
SCRIPT = STATIC / "template_preview.js"


def form(**fields) -> dict[str, str]:
    """An add or change form's post (name and language are ignored on a change page)."""
    empty = dict.fromkeys(("language", "description", "subject", "text", "html"), "")
    return {"name": "welcome", **empty, **fields}


class TemplateAdminTestCase(TestCase):
    def setUp(self):
        self.admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.force_login(self.admin)

    def change_url(self, template: Template) -> str:
        return f"/admin/mailservice/template/{template.pk}/change/"

    def preview(self, client: Client | None = None, **fields):
        return (client or self.client).post(PREVIEW, fields)


class TemplatePagesTests(TemplateAdminTestCase):
    def test_list_shows_name_language_and_version(self):
        """The list shows each template's name, its language ("default" for none) and version."""
        template_create(name="welcome", text="Hi", description="Sent after sign-up")
        template_create(name="welcome", language="pt-BR", text="Olá")
        page = self.client.get(LIST)
        self.assertContains(page, '<td class="field-language_name">default</td>')
        self.assertContains(page, '<td class="field-language_name">pt-BR</td>')
        self.assertContains(page, '<td class="field-version">1</td>', count=2)
        self.assertContains(page, '<td class="field-short_description">Sent after sign-up</td>')

    def test_list_filters_by_language_and_searches_by_name(self):
        """The language filter and the name search narrow the list."""
        template_create(name="welcome", text="Hi")
        template_create(name="receipt", language="pt-BR", text="Olá")
        by_language = self.client.get(LIST, {"language": "pt-BR"})
        self.assertEqual([t.name for t in by_language.context["cl"].result_list], ["receipt"])
        by_default = self.client.get(LIST, {"language": ""})
        self.assertEqual([t.name for t in by_default.context["cl"].result_list], ["welcome"])
        by_name = self.client.get(LIST, {"q": "rece"})
        self.assertEqual([t.name for t in by_name.context["cl"].result_list], ["receipt"])

    def test_change_page_shows_the_sources_and_the_preview(self):
        """A template's page shows its sources, its version and the preview pane."""
        template = template_create(name="welcome", subject="Hi {{ first_name }}", text="Hello")
        page = self.client.get(self.change_url(template))
        self.assertContains(page, "Hi {{ first_name }}")
        self.assertContains(page, 'id="template-preview"')
        self.assertContains(page, f'data-url="{PREVIEW}"')
        self.assertContains(page, "mailservice/template_preview.js")

    def test_preview_iframe_is_sandboxed_without_exceptions(self):
        """The HTML part is shown in an iframe whose sandbox allows nothing (no scripts, no origin)."""
        page = self.client.get(ADD).content.decode()
        iframe = page[page.index("<iframe") : page.index("</iframe>")]
        self.assertIn('sandbox=""', iframe)
        self.assertNotIn("allow-", iframe)
        script = SCRIPT.read_text()
        self.assertIn(".srcdoc = answer.html", script)
        self.assertNotIn("innerHTML", script)
        for relaxing in ("setAttribute", "removeAttribute", ".sandbox"):  # the script never relaxes it
            self.assertNotIn(relaxing, script)

    def test_a_user_who_may_only_view_gets_no_preview(self):
        """Without the add or change permission the page has no preview pane (its view refuses them)."""
        template = template_create(name="welcome", text="Hi")
        viewer = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
        viewer.user_permissions.add(Permission.objects.get(codename="view_template"))
        self.client.force_login(viewer)
        page = self.client.get(self.change_url(template))
        self.assertEqual(page.status_code, 200)
        self.assertNotContains(page, 'id="template-preview"')


class TemplateSaveTests(TemplateAdminTestCase):
    def test_adding_creates_version_1_through_the_service(self):
        """A template added in the admin is version 1, its language stored in the canonical spelling."""
        response = self.client.post(ADD, form(language="PT_br", subject="Olá {{ name }}", text="Oi"))
        self.assertEqual(response.status_code, 302)
        template = Template.objects.get()
        self.assertEqual((template.name, template.language, template.version), ("welcome", "pt-BR", 1))
        self.assertEqual(template.subject, "Olá {{ name }}")

    def test_changing_makes_version_2(self):
        """Saving a change makes the next version; name and language stay as they were."""
        template = template_create(name="welcome", text="Hi")
        response = self.client.post(self.change_url(template), form(name="other", text="Hello"))
        self.assertEqual(response.status_code, 302)
        template.refresh_from_db()
        self.assertEqual((template.name, template.text, template.version), ("welcome", "Hello", 2))

    def test_saving_unchanged_sources_keeps_the_version(self):
        """A browser posts every line break as CRLF: saving the same lines again is not a change."""
        template = template_create(name="welcome", text="Hi\nthere\n", html="<p>Hi</p>\n")
        self.client.post(self.change_url(template), form(text="Hi\r\nthere\r\n", html="<p>Hi</p>\r\n"))
        template.refresh_from_db()
        self.assertEqual((template.text, template.version), ("Hi\nthere\n", 1))

    def test_a_syntax_error_shows_on_its_field_with_its_line(self):
        """A source that does not compile is refused on its field, the message naming the line."""
        response = self.client.post(ADD, form(text="Hi", html="<p>\n{% if %}</p>"))
        self.assertEqual(response.status_code, 200)
        errors = response.context["adminform"].form.errors
        self.assertEqual(list(errors), ["html"])
        self.assertIn("Line 2 of `html`", errors["html"][0])
        self.assertFalse(Template.objects.exists())

    def test_a_refused_tag_on_a_change_keeps_the_stored_version(self):
        """A change with a tag templates may not use is refused on its field; nothing is saved."""
        template = template_create(name="welcome", text="Hi")
        response = self.client.post(self.change_url(template), form(text='{% include "x.html" %}'))
        self.assertIn("text", response.context["adminform"].form.errors)
        template.refresh_from_db()
        self.assertEqual((template.text, template.version), ("Hi", 1))

    def test_a_template_needs_a_body(self):
        """Neither text nor html: refused on `text`, as the service refuses it."""
        response = self.client.post(ADD, form(subject="Hi"))
        self.assertEqual(
            response.context["adminform"].form.errors["text"],
            ["A template needs a text part, an html part, or both."],
        )
        self.assertFalse(Template.objects.exists())

    def test_a_taken_name_and_language_is_a_form_error(self):
        """Adding a name in a language it has already is refused on the form, not a server error."""
        template_create(name="welcome", language="pt-BR", text="Oi")
        response = self.client.post(ADD, form(language="pt_br", text="Olá"))
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response.context["adminform"].form.errors)
        self.assertEqual(Template.objects.count(), 1)

    def test_a_bad_name_or_language_shows_on_its_field(self):
        """A name that is not a slug and a language that is not a tag are refused on their fields."""
        response = self.client.post(ADD, form(name="no spaces", language="english!", text="Hi"))
        self.assertEqual(set(response.context["adminform"].form.errors), {"name", "language"})

    def test_deleting_goes_through_the_service(self):
        """Deleting a template removes it (its other languages stay)."""
        template = template_create(name="welcome", text="Hi")
        template_create(name="welcome", language="pt", text="Oi")
        url = f"/admin/mailservice/template/{template.pk}/delete/"
        self.assertEqual(self.client.post(url, {"post": "yes"}).status_code, 302)
        self.assertEqual(list(Template.objects.values_list("language", flat=True)), ["pt"])

    def test_the_delete_action_deletes_each_selected_template(self):
        """The list's delete action removes every template selected."""
        ids = [template_create(name=name, text="Hi").pk for name in ("a", "b")]
        self.client.post(
            LIST, {"action": "delete_selected", "_selected_action": [str(pk) for pk in ids], "post": "yes"}
        )
        self.assertFalse(Template.objects.exists())


class TemplatePreviewTests(TemplateAdminTestCase):
    def test_renders_the_unsaved_sources_with_the_sample_data(self):
        """The preview answers the rendered subject, text and HTML (CSS inlined), and stores nothing."""
        response = self.preview(
            subject="Hi {{ first_name }}",
            text="Hello {{ first_name }}",
            html="<style>p {color: red}</style><p>Hello {{ first_name }}</p>",
            template_data=json.dumps({"first_name": "Ana <3"}),
        )
        self.assertEqual(response.status_code, 200)
        answer = response.json()
        self.assertEqual((answer["subject"], answer["text"]), ("Hi Ana <3", "Hello Ana <3"))
        self.assertIn('<p style="color: red;">Hello Ana &lt;3</p>', answer["html"])
        self.assertFalse(Template.objects.exists())

    def test_html_alone_gets_a_text_part(self):
        """Without a text source the preview shows the text made from the HTML, as a message gets."""
        answer = self.preview(html="<h1>Welcome</h1><p>Hi</p>").json()
        self.assertIn("Welcome", answer["text"])

    def test_a_missing_variable_is_named_as_the_api_names_it(self):
        """A variable the sample data lacks is reported on `template_data.<path>`, with its line."""
        answer = self.preview(text="Hi\n{{ first_name }}", template_data="{}").json()
        self.assertEqual(answer["errors"][0]["field"], "template_data.first_name")
        self.assertIn("Line 2 of `text`", answer["errors"][0]["message"])

    def test_a_syntax_error_is_reported_on_its_part_with_its_line(self):
        """Each source that does not compile is reported on its part, with the line."""
        answer = self.preview(subject="{{ a|no_such_filter }}", html="<p>\n\n{% for %}").json()
        fields = {error["field"]: error["message"] for error in answer["errors"]}
        self.assertEqual(set(fields), {"subject", "html"})
        self.assertIn("Line 3 of `html`", fields["html"])

    def test_sample_data_must_be_a_json_object(self):
        """Sample data that is not JSON, or not an object, is reported on template_data."""
        for sample in ("{first_name: 1}", "[1, 2]"):
            with self.subTest(sample=sample):
                errors = self.preview(text="Hi", template_data=sample).json()["errors"]
                self.assertEqual([error["field"] for error in errors], ["template_data"])

    def test_sample_data_over_the_api_caps_is_refused(self):
        """Sample data nested deeper than template_data may be is refused, as the API refuses it."""
        deep = "[" * 40 + "]" * 40
        errors = self.preview(text="Hi", template_data=f'{{"a": {deep}}}').json()["errors"]
        self.assertEqual(errors[0]["field"], "template_data")
        self.assertIn("Nested more than", errors[0]["message"])

    def test_anonymous_and_non_staff_users_are_sent_to_the_login(self):
        """The preview is an admin view: without a staff login it redirects to the login page."""
        member = get_user_model().objects.create_user("member", password="pw")
        for client in (Client(), self.logged_in(member)):
            response = self.preview(client, text="Hi")
            self.assertEqual(response.status_code, 302)
            self.assertIn("/admin/login/", response["Location"])

    def test_staff_without_add_or_change_permission_is_refused(self):
        """Staff who may only view templates get 403 from the preview."""
        viewer = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
        viewer.user_permissions.add(Permission.objects.get(codename="view_template"))
        self.assertEqual(self.preview(self.logged_in(viewer), text="Hi").status_code, 403)

    def test_staff_who_may_add_templates_can_preview(self):
        """The add permission alone is enough to preview (the add page needs it)."""
        author = get_user_model().objects.create_user("author", password="pw", is_staff=True)
        author.user_permissions.add(Permission.objects.get(codename="add_template"))
        self.assertEqual(self.preview(self.logged_in(author), text="Hi").json()["text"], "Hi")

    def test_get_is_not_allowed(self):
        """Only POST renders a preview: GET answers 405."""
        self.assertEqual(self.client.get(PREVIEW).status_code, 405)

    def test_requires_the_csrf_token(self):
        """A post without the CSRF token is refused; with the form's token it renders."""
        client = self.logged_in(self.admin, enforce_csrf_checks=True)
        self.assertEqual(self.preview(client, text="Hi").status_code, 403)
        page = client.get(ADD)
        token = page.context["csrf_token"]
        self.assertEqual(self.preview(client, text="Hi", csrfmiddlewaretoken=token).json()["text"], "Hi")

    def logged_in(self, user, **options) -> Client:
        client = Client(**options)
        client.force_login(user)
        return client
