"""What CSS inlining and the text part may be given (mailservice/templating/output.py): nesting
depth (css-inline overflows its stack past ~10,000 levels), `<style>` size, the inlining and
text conversion budgets, the output size and the deadline after each stage; and language tags
that are ASCII and fit their column. Reproducers run with the caps patched low, not at the size
that would hurt."""

from unittest import mock

from django.test import SimpleTestCase, TestCase, override_settings

from mailservice.exceptions import InvalidRequest, TemplateLimitExceeded, TemplateRenderError
from mailservice.models.templates import language_tag
from mailservice.services.templates import template_identity
from mailservice.templating import output, render
from mailservice.templating.output import MAX_DEPTH, html_shape, html_to_text, inline_css
from tests.templates.fixtures import LAYOUT, Source, layout_data

STYLE = "<style>div{color:red}</style>"


def nested(levels: int, tag: str = "div") -> str:
    return f"<{tag}>" * levels + "x" + f"</{tag}>" * levels


class DepthTests(SimpleTestCase):
    def test_the_cap_passes_and_one_more_level_is_refused(self):
        """MAX_DEPTH levels inline; one more is refused on `html` before css-inline sees it."""
        self.assertIn('style="color: red;"', inline_css(STYLE + nested(MAX_DEPTH)))
        with self.assertRaisesMessage(TemplateRenderError, f"more than {MAX_DEPTH} levels deep") as caught:
            inline_css(STYLE + nested(MAX_DEPTH + 1))
        self.assertEqual(caught.exception.part, "html")

    def test_the_reproducer_is_refused_without_reading_it_all(self):
        """12,000 levels (which crashed the process) are refused, through render() too."""
        with self.assertRaises(TemplateRenderError):
            render(Source(html=STYLE + nested(12_000)), {})
        with self.assertRaises(TemplateRenderError):
            inline_css(nested(12_000))  # without a <style> as well: the parser recurses either way

    def test_markup_cannot_hide_tags_from_the_count(self):
        """A quote in an attribute name, a comment opened in <style>, SVG's style, unclosed
        table cells and formatting elements the parser reopens all count as the parser builds them."""
        deep = nested(MAX_DEPTH + 1)
        for html in (
            '<div x">' + deep,
            "<style><!--</style>" + deep + "-->",
            "<svg><style>" + deep,
            "<div title='>'>" + deep,
            "<table>" + "<td><table>" * 60,  # each level is table, tbody, tr, td
            "".join(f'<div><b id="{i}"></div>' for i in range(MAX_DEPTH + 1)) + "x",
        ):
            with self.subTest(html=html[:30]):
                self.assertGreater(html_shape(html, MAX_DEPTH).depth, MAX_DEPTH)

    def test_siblings_and_implied_closes_are_not_nesting(self):
        shape = html_shape("<ul>" + "<li>x" * 5000 + "</ul>" + "<p>a" * 5000 + "<br>" * 5000, MAX_DEPTH)
        self.assertLessEqual(shape.depth, 3)

    def test_the_realistic_layout_is_far_inside_every_budget(self):
        rendered = render(LAYOUT, layout_data())
        shape = html_shape(rendered.html, MAX_DEPTH)
        self.assertLess(shape.depth, MAX_DEPTH // 5)
        self.assertLess(shape.elements, output.MAX_TEXT_ELEMENTS // 50)


class InliningBudgetTests(SimpleTestCase):
    def test_style_text_over_the_cap_is_refused(self):
        with mock.patch.object(output, "MAX_STYLE_CHARS", 1000):
            with self.assertRaisesMessage(TemplateRenderError, "characters of <style>"):
                inline_css("<style>" + "p{color:red}" * 100 + "</style><p>x</p>")

    def test_declarations_times_elements_over_the_budget_is_refused(self):
        """The blow-up (each declaration copied into each element) is refused before it runs."""
        declarations = ";".join(f"--v{i}:1" for i in range(100))
        html = "<style>p{" + declarations + "}</style>" + "<p>x</p>" * 100
        with mock.patch.object(output, "MAX_DECLARATIONS_X_ELEMENTS", 5_000):
            with self.assertRaisesMessage(TemplateRenderError, "Too much CSS to inline"):
                inline_css(html)
        self.assertIn("--v99", inline_css(html))  # 10,000 is well inside the real budget

    def test_selector_length_times_elements_over_the_budget_is_refused(self):
        html = "<style>" + "p" + ":not(.a)" * 200 + "{color:red}</style>" + "<p>x</p>" * 100
        with mock.patch.object(output, "MAX_STYLE_CHARS_X_ELEMENTS", 100_000):
            with self.assertRaisesMessage(TemplateRenderError, "Too much CSS to inline"):
                inline_css(html)

    @override_settings(MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES=2_000)
    def test_output_over_the_size_limit_after_inlining_is_refused(self):
        html = "<style>p{color:red;margin:0;padding:0}</style>" + "<p>x</p>" * 100  # 800 B in, ~5 KB out
        with self.assertRaises(TemplateLimitExceeded) as caught:
            inline_css(html)
        self.assertEqual(caught.exception.limit, "MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES")

    def test_a_passed_deadline_is_the_renderers_time_error(self):
        with self.assertRaisesMessage(TemplateLimitExceeded, "MAILSERVICE_TEMPLATE_RENDER_SECONDS") as caught:
            inline_css(STYLE + "<div>x</div>", deadline=0.0)
        self.assertEqual(caught.exception.part, "html")
        with self.assertRaises(TemplateLimitExceeded) as caught:
            html_to_text("<p>x</p>", deadline=0.0)
        self.assertEqual(caught.exception.part, "text")


class TextBudgetTests(SimpleTestCase):
    def test_too_many_elements_asks_for_a_text_part(self):
        html = "<table>" + "<tr><td>x</td></tr>" * 60 + "</table>"
        with mock.patch.object(output, "MAX_TEXT_ELEMENTS", 100):
            with self.assertRaisesMessage(TemplateRenderError, "give the template a text part") as caught:
                html_to_text(html)
            self.assertEqual(caught.exception.part, "text")
            rendered = render(Source(html=html, text="plain"), {})  # its own text: no conversion
        self.assertEqual(rendered.text, "plain")

    def test_deep_html_is_refused_for_the_text_part(self):
        with self.assertRaisesMessage(TemplateRenderError, "levels deep"):
            html_to_text(nested(MAX_DEPTH + 1))


class LanguageTagTests(TestCase):
    def test_non_ascii_and_long_tags_are_refused_on_language(self):
        for value in ("ſv", "enİ", "\u212aa", "en-" + "abcdefgh-" * 4 + "x1234"):
            with self.subTest(value=value):
                with self.assertRaises(ValueError):
                    language_tag(value)
                with self.assertRaises(InvalidRequest) as caught:
                    template_identity(name="receipt", language=value)
                self.assertIn("language", str(caught.exception.errors[0].__dict__))

    def test_ascii_tags_still_canonicalize(self):
        self.assertEqual(language_tag("pt-br"), "pt-BR")
        self.assertEqual(language_tag("ZH_hant_tw"), "zh-Hant-TW")
