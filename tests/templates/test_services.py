"""Stored templates (mailservice/services/templates.py): saving checks the sources, each change is
a version, and a message's language falls back to the nearest one stored."""

from django.core.exceptions import ValidationError
from django.test import SimpleTestCase, TestCase

from mailservice.exceptions import InvalidRequest, TemplateConflict, TemplateNotFound, TemplateSourceError
from mailservice.models import Template
from mailservice.models.templates import language_fallbacks, language_tag, validate_language
from mailservice.services.templates import template_create, template_delete, template_resolve, template_update
from mailservice.templating import render
from tests.templates.fixtures import LAYOUT_HTML, LAYOUT_SUBJECT, layout_data


def create(name: str = "welcome", language: str = "", **fields) -> Template:
    fields = {"subject": "Hi {{ name }}", "text": "Hello {{ name }}", **fields}
    return template_create(name=name, language=language, **fields)


class TemplateCreateTests(TestCase):
    def test_a_new_template_is_version_1(self):
        """A created template is stored at version 1 with its fields."""
        template = create(description="Sent after sign-up")
        stored = Template.objects.get()
        self.assertEqual((stored.pk, stored.version, stored.language), (template.pk, 1, ""))
        self.assertEqual(
            (stored.subject, stored.text, stored.description),
            ("Hi {{ name }}", "Hello {{ name }}", "Sent after sign-up"),
        )

    def test_a_duplicate_name_and_language_is_a_conflict(self):
        """A second template with the same name and language is refused with TemplateConflict (409)."""
        create()
        with self.assertRaises(TemplateConflict) as caught:
            create(text="Other")
        self.assertEqual((caught.exception.status, caught.exception.errors[0].field), (409, "name"))
        self.assertEqual(Template.objects.count(), 1)

    def test_one_name_may_have_several_languages(self):
        """The same name in another language is another template; the tag is stored canonically."""
        create()
        create(language="PT-br")
        self.assertEqual(list(Template.objects.values_list("language", flat=True)), ["", "pt-BR"])
        with self.assertRaises(TemplateConflict):
            create(language="pt_BR")

    def test_a_syntax_error_is_refused_naming_the_part_and_the_line(self):
        """A source that does not compile is refused when saved, and nothing is stored."""
        with self.assertRaises(TemplateSourceError) as caught:
            create(html="<p>\n{% if %}</p>")
        self.assertEqual((caught.exception.field, caught.exception.line), ("html", 2))
        self.assertFalse(Template.objects.exists())

    def test_every_part_at_fault_is_listed(self):
        """Problems in several parts are reported together."""
        with self.assertRaises(TemplateSourceError) as caught:
            create(subject="Hi\n{{ name }}", html="{% load static %}")
        self.assertEqual([error.field for error in caught.exception.errors], ["subject", "html"])

    def test_a_template_needs_text_or_html(self):
        """A template with neither a text nor an html part is refused on `text`."""
        with self.assertRaises(InvalidRequest) as caught:
            create(text="", html="")
        self.assertEqual(caught.exception.errors[0].field, "text")
        create(name="html-only", text="", html="<p>x</p>")

    def test_a_name_must_be_a_slug_and_a_language_a_tag(self):
        """A name that is not a slug and a language that is not a BCP 47 tag are refused on their fields."""
        with self.assertRaises(InvalidRequest) as caught:
            create(name="hello world", language="english please")
        self.assertEqual([error.field for error in caught.exception.errors], ["name", "language"])

    def test_the_layout_fixture_can_be_stored_and_rendered(self):
        """The ~20 KB receipt layout is a valid stored template."""
        template = template_create(name="receipt", subject=LAYOUT_SUBJECT, html=LAYOUT_HTML)
        self.assertIn("A-10042", render(template, layout_data()).text)


class TemplateUpdateTests(TestCase):
    def test_a_change_makes_a_new_version(self):
        """Each change adds one to the version and keeps the fields not given."""
        create()
        template = template_update(name="welcome", html="<p>Hello {{ name }}</p>")
        self.assertEqual((template.version, template.text), (2, "Hello {{ name }}"))
        self.assertEqual(template.html, "<p>Hello {{ name }}</p>")
        template = template_update(name="welcome", description="v3")
        self.assertEqual(Template.objects.get().version, 3)

    def test_giving_the_same_values_changes_nothing(self):
        """An update that changes no field keeps the version (a PUT sent twice makes one version)."""
        created = create()
        template = template_update(name="welcome", subject="Hi {{ name }}", text="Hello {{ name }}")
        self.assertEqual((template.version, Template.objects.get().updated_at), (1, created.updated_at))

    def test_an_invalid_source_changes_nothing(self):
        """A change whose source does not compile is refused and the stored version stays."""
        create()
        with self.assertRaises(TemplateSourceError):
            template_update(name="welcome", text="{{ name|nosuchfilter }}")
        stored = Template.objects.get()
        self.assertEqual((stored.version, stored.text), (1, "Hello {{ name }}"))

    def test_removing_the_last_body_part_is_refused(self):
        """Emptying the text of a template without html is refused on `text`."""
        create()
        with self.assertRaises(InvalidRequest):
            template_update(name="welcome", text="")

    def test_an_unknown_template_is_not_found(self):
        """Updating a template that does not exist (in exactly that language) is TemplateNotFound."""
        create()
        with self.assertRaises(TemplateNotFound):
            template_update(name="welcome", language="pt", text="Olá")


class TemplateDeleteTests(TestCase):
    def test_delete_removes_one_language(self):
        """Deleting a language's template leaves the others."""
        create()
        create(language="pt")
        template_delete(name="welcome", language="pt")
        self.assertEqual(list(Template.objects.values_list("language", flat=True)), [""])
        with self.assertRaises(TemplateNotFound):
            template_delete(name="welcome", language="pt")


class TemplateResolveTests(TestCase):
    def setUp(self):
        create(text="default")
        create(language="pt", text="pt")
        create(language="pt-BR", text="pt-BR")
        create(language="zh-Hant", text="zh-Hant")

    def resolved(self, language: str) -> str:
        return template_resolve(name="welcome", language=language).text

    def test_the_exact_language_is_preferred(self):
        """A request for pt-BR gets pt-BR, whatever its spelling."""
        self.assertEqual(self.resolved("pt-BR"), "pt-BR")
        self.assertEqual(self.resolved("pt_br"), "pt-BR")

    def test_a_regional_language_falls_back_to_its_primary_language(self):
        """pt-PT (not stored) gets pt."""
        self.assertEqual(self.resolved("pt-PT"), "pt")

    def test_each_shorter_tag_is_tried_before_the_default(self):
        """zh-Hant-TW gets zh-Hant; de gets the default."""
        self.assertEqual(self.resolved("zh-Hant-TW"), "zh-Hant")
        self.assertEqual(self.resolved("de"), "default")
        self.assertEqual(self.resolved(""), "default")

    def test_no_template_in_any_fallback_is_not_found(self):
        """Without a default, a language with no match is TemplateNotFound; so is an unknown name."""
        template_delete(name="welcome")
        with self.assertRaises(TemplateNotFound) as caught:
            self.resolved("de")
        self.assertEqual((caught.exception.name, caught.exception.language), ("welcome", "de"))
        with self.assertRaises(TemplateNotFound):
            template_resolve(name="nope")


class LanguageTagTests(SimpleTestCase):
    def test_tags_are_spelled_canonically(self):
        """Language lowercase, script titlecase, region uppercase; "" is the default language."""
        cases = {
            "EN": "en",
            "pt-br": "pt-BR",
            "zh_hant_tw": "zh-Hant-TW",
            "es-419": "es-419",
            "sl-ROZAJ": "sl-rozaj",
            "": "",
            "  ": "",
        }
        for given, expected in cases.items():
            with self.subTest(given):
                self.assertEqual(language_tag(given), expected)

    def test_what_is_not_a_tag_is_refused(self):
        """Words, private use and over-long values are not language tags."""
        for value in ("english", "e", "en-US-x-private", "pt-BR-", "en--US", "a" * 40, "en US"):
            with self.subTest(value), self.assertRaises(ValueError):
                language_tag(value)
        with self.assertRaises(ValidationError):
            validate_language("english")

    def test_fallbacks_drop_one_subtag_at_a_time_then_the_default(self):
        """zh-Hant-TW → zh-Hant → zh → default; the default alone is itself."""
        self.assertEqual(language_fallbacks("zh-Hant-TW"), ["zh-Hant-TW", "zh-Hant", "zh", ""])
        self.assertEqual(language_fallbacks("pt-BR"), ["pt-BR", "pt", ""])
        self.assertEqual(language_fallbacks(""), [""])
