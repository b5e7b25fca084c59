"""The template language (mailservice/templating.py, docs/templates.md): strict variables, the
sandbox's refusals, escaping, the email-ready output and the limits."""

import tempfile
from pathlib import Path

from django.test import SimpleTestCase, override_settings

from mailservice.exceptions import (
    TemplateLimitExceeded,
    TemplateRenderError,
    TemplateSourceError,
    TemplateVariableMissing,
)
from mailservice.templating import Rendered, check_source, html_to_text, render
from tests.templates.fixtures import LAYOUT, Source, layout_data


def text(source: str, data: dict | None = None) -> str:
    """The text part a template of only `source` renders."""
    return render(Source(subject="S", text=source), data or {}).text


class StrictVariableTests(SimpleTestCase):
    def assertMissing(
        self, source: str, data: dict, field: str, *, line: int | None = 1
    ) -> TemplateVariableMissing:
        with self.assertRaises(TemplateVariableMissing) as caught:
            text(source, data)
        error = caught.exception
        self.assertEqual((error.field, error.part, error.line), (field, "text", line))
        self.assertEqual(error.errors[0].field, field)
        return error

    def test_a_missing_variable_is_an_error_naming_it_in_template_data(self):
        """{{ first_name }} without first_name in the data is an error on template_data.first_name."""
        error = self.assertMissing("Hi {{ first_name }}", {"name": "Ana"}, "template_data.first_name")
        self.assertIn("`first_name`", error.errors[0].message)
        self.assertTrue(error.errors[0].message.startswith("Line 1 of `text`: "))

    def test_a_dotted_variable_is_named_by_the_path_the_template_used(self):
        """{{ user.name }} with a user lacking a name names template_data.user.name."""
        self.assertMissing("{{ user.name }}", {"user": {"email": "a@example.com"}}, "template_data.user.name")
        self.assertMissing("{{ user.name }}", {}, "template_data.user.name")

    def test_a_list_index_is_named_as_an_index(self):
        """{{ items.5 }} past the end of the list names template_data.items[5]."""
        self.assertMissing("{{ items.5 }}", {"items": [1]}, "template_data.items[5]")

    def test_the_error_names_the_line(self):
        """The line of the source where the missing variable is used is given."""
        self.assertMissing("Hello\n\nDear {{ name }},", {}, "template_data.name", line=3)

    def test_default_makes_a_variable_optional(self):
        """{{ first_name|default:"there" }} renders the default when first_name is missing."""
        self.assertEqual(text('Hi {{ first_name|default:"there" }}'), "Hi there")
        self.assertEqual(text('Hi {{ user.name|default:"there" }}', {"user": {}}), "Hi there")

    def test_default_if_none_makes_a_variable_optional(self):
        """A missing variable counts as null, so |default_if_none replaces it too."""
        self.assertEqual(text('Hi {{ first_name|default_if_none:"there" }}'), "Hi there")

    def test_a_null_value_counts_as_present(self):
        """A variable present with null is not missing: it renders as Django renders None."""
        self.assertEqual(text("[{{ nickname }}]", {"nickname": None}), "[None]")
        self.assertEqual(text("{% if nickname %}yes{% else %}no{% endif %}", {"nickname": None}), "no")

    def test_a_missing_variable_in_if_is_an_error(self):
        """{% if vip %} without vip is an error, not false."""
        self.assertMissing("{% if vip %}VIP{% endif %}", {}, "template_data.vip")

    def test_a_missing_variable_inside_an_if_operator_is_an_error(self):
        """{% if a and vip %}: Django turns errors in operators into false; the gateway does not."""
        self.assertMissing("{% if a and vip %}VIP{% endif %}", {"a": True}, "template_data.vip")
        self.assertMissing("{% if not vip %}-{% endif %}", {}, "template_data.vip")

    def test_default_guards_a_variable_in_if(self):
        """{% if vip|default:False %} is false when vip is missing."""
        self.assertEqual(text("{% if vip|default:False %}VIP{% else %}-{% endif %}"), "-")

    def test_a_missing_sequence_in_for_is_an_error(self):
        """{% for item in items %} without items is an error; an empty list is not."""
        self.assertMissing("{% for item in items %}x{% endfor %}", {}, "template_data.items")
        self.assertEqual(text("{% for item in items %}x{% empty %}none{% endfor %}", {"items": []}), "none")

    def test_loop_variables_are_not_template_data_names(self):
        """{{ item.name }} inside a loop over items reads the loop's item."""
        data = {"items": [{"name": "a"}, {"name": "b"}]}
        source = "{% for item in items %}{{ item.name }}{{ forloop.counter }}{% endfor %}"
        self.assertEqual(text(source, data), "a1b2")

    def test_a_key_missing_from_a_loop_item_is_named_by_its_place_in_the_data(self):
        """A missing key under loop variables names the item: template_data.orders[1].lines[1].sku."""
        data = {"orders": [{"lines": [{"sku": 1}]}, {"lines": [{"sku": 2}, {}]}]}
        source = "{% for o in orders %}{% for l in o.lines %}{{ l.sku }}{% endfor %}{% endfor %}"
        error = self.assertMissing(source, data, "template_data.orders[1].lines[1].sku")
        self.assertIn("`l.sku`", error.errors[0].message)

    def test_a_reversed_loop_names_the_right_item(self):
        """In {% for … reversed %} the index named is the item's own."""
        source = "{% for o in orders reversed %}{{ o.sku }}{% endfor %}"
        self.assertMissing(source, {"orders": [{}, {"sku": 2}]}, "template_data.orders[0].sku")

    def test_with_names_are_not_template_data_names(self):
        """{% with u=user %}{{ u.name }} reads user.name, and a missing one is named so."""
        source = "{% with u=user %}{{ u.name }}{% endwith %}"
        self.assertEqual(text(source, {"user": {"name": "Ana"}}), "Ana")
        self.assertMissing(source, {"user": {}}, "template_data.user.name")

    def test_a_key_missing_under_unpacked_loop_variables_names_no_single_place(self):
        """{% for key, value in … %} has no one place in the data: the error is on template_data."""
        source = "{% for k, v in d.items %}{{ v.x }}{% endfor %}"
        error = self.assertMissing(source, {"d": {"a": {}}}, "template_data")
        self.assertIn("`v.x` is missing", error.errors[0].message)

    def test_a_missing_filter_argument_is_an_error(self):
        """{{ a|add:b }} without b names template_data.b, even after a |default."""
        self.assertMissing("{{ a|add:b }}", {"a": 1}, "template_data.b")
        self.assertMissing("{{ a|default:b }}", {}, "template_data.b")

    def test_a_filter_that_fails_on_the_data_is_a_render_error_with_its_line(self):
        """{{ n|divisibleby:d }} with d = 0 raises inside Django: a TemplateRenderError with the line."""
        with self.assertRaises(TemplateRenderError) as caught:
            text("a\n{{ n|divisibleby:d }}", {"n": 4, "d": 0})
        self.assertEqual((caught.exception.part, caught.exception.line), ("text", 2))
        self.assertIn(
            "The filter `divisibleby` could not handle its value", caught.exception.errors[0].message
        )

    def test_template_data_is_not_changed_by_the_template(self):
        """Methods that would change the data ({{ items.pop }}) render nothing and change nothing."""
        data = {"items": [1, 2], "d": {"k": 1}}
        source = "{{ items.pop }}{{ items.reverse }}{{ d.clear }}|{{ items|length }}{{ d.k }}"
        self.assertEqual(text(source, data), "|21")
        self.assertEqual(data, {"items": [1, 2], "d": {"k": 1}})


class SandboxTests(SimpleTestCase):
    def assertSourceError(
        self, source: str, part: str = "text", line: int | None = None
    ) -> TemplateSourceError:
        with self.assertRaises(TemplateSourceError) as caught:
            check_source(part, source)
        self.assertEqual((caught.exception.part, caught.exception.field), (part, part))
        if line is not None:
            self.assertEqual(caught.exception.line, line)
        return caught.exception

    def test_load_is_refused_naming_the_line(self):
        """{% load %} of any library is refused: built-in tags and filters only."""
        for library in ("static", "i18n", "humanize"):
            with self.subTest(library):
                error = self.assertSourceError(f"Hello\n{{% load {library} %}}", line=2)
                self.assertIn("{% load %} is not available", error.errors[0].message)

    def test_include_and_extends_are_refused(self):
        """A template cannot include or extend another template or a file."""
        refused = ('{% include "/etc/passwd" %}', '{% extends "a.html" %}', "{% block b %}{% endblock %}")
        for source in refused:
            with self.subTest(source):
                self.assertIn("is not available", self.assertSourceError(source, line=1).errors[0].message)

    def test_tags_that_reach_outside_the_data_are_refused(self):
        """{% debug %}, {% url %}, {% csrf_token %}, {% lorem %} are refused; {% ssi %} is unknown."""
        for source in ("{% debug %}", '{% url "admin:index" %}', "{% csrf_token %}", "{% lorem 999999 w %}"):
            with self.subTest(source):
                self.assertIn("is not available", self.assertSourceError(source).errors[0].message)
        error = self.assertSourceError('{% ssi "/etc/passwd" %}')
        self.assertIn("Unknown tag {% ssi %}", error.errors[0].message)

    def test_an_unknown_tag_is_named_with_its_line(self):
        """A tag Django does not have is named, with its line."""
        error = self.assertSourceError("a\n\n{% frobnicate x %}", line=3)
        self.assertEqual(
            error.errors[0].message,
            "Line 3 of `text`: Unknown tag {% frobnicate %}: templates use Django's built-in tags only.",
        )

    def test_a_syntax_error_names_the_part_and_the_line(self):
        """A syntax error in html is a TemplateSourceError on `html` with its line."""
        error = self.assertSourceError("<p>\n{% if %}\n</p>", part="html", line=2)
        self.assertTrue(error.errors[0].message.startswith("Line 2 of `html`: "), error.errors[0].message)
        self.assertSourceError("{% for x in %}{% endfor %}", part="html", line=1)
        self.assertSourceError("{{ name|nosuchfilter }}", part="html", line=1)

    def test_settings_are_not_in_the_context(self):
        """The context holds template_data only: {{ settings.SECRET_KEY }} is a missing variable."""
        with self.assertRaises(TemplateVariableMissing) as caught:
            text("{{ settings.SECRET_KEY }}")
        self.assertEqual(caught.exception.field, "template_data.settings.SECRET_KEY")

    def test_private_attributes_are_refused(self):
        """{{ name.__class__ }} is refused when the template is saved (Django's own rule)."""
        self.assertSourceError("{{ name.__class__.__mro__ }}")

    def test_deep_nesting_is_refused_not_crashed_on(self):
        """Tags nested thousands deep are an error naming the part, not a crash."""
        self.assertSourceError("{% if x %}" * 3000 + "{% endif %}" * 3000)

    def test_a_source_that_is_not_text_is_refused(self):
        """A NUL character cannot be stored: refused on the part."""
        self.assertSourceError("a\x00b", part="html")

    def test_a_valid_source_passes(self):
        """check_source accepts what renders, and refuses an unknown part as a programming error."""
        check_source("html", "<p>{{ name|default:'you' }}</p>{% for x in items %}{{ x }}{% endfor %}")
        with self.assertRaises(ValueError):
            check_source("body", "x")


class EscapingTests(SimpleTestCase):
    def test_html_is_escaped(self):
        """A value in html is HTML-escaped."""
        rendered = render(Source(subject="S", html="<p>{{ name }}</p>"), {"name": "<b>Ana</b> & co"})
        self.assertEqual(rendered.html, "<p>&lt;b&gt;Ana&lt;/b&gt; &amp; co</p>")

    def test_text_and_subject_are_not_escaped(self):
        """Values in text and subject are written as they are."""
        rendered = render(Source(subject="Re: {{ name }}", text="{{ name }}"), {"name": "<b>Ana</b> & co"})
        self.assertEqual((rendered.subject, rendered.text), ("Re: <b>Ana</b> & co", "<b>Ana</b> & co"))


class OutputTests(SimpleTestCase):
    def test_style_css_is_inlined(self):
        """<style>p{color:red}</style><p>x</p> comes out with the rule on the paragraph."""
        html = render(Source(subject="S", html="<style>p{color:red}</style><p>x</p>"), {}).html
        self.assertIn('<p style="color: red;">x</p>', html)
        self.assertNotIn("<style", html)

    def test_media_queries_stay_in_a_style_block(self):
        """@media rules cannot be inlined: they stay in a <style> for the clients that read them."""
        source = "<style>p{color:red} @media (max-width: 600px) { p { color: blue } }</style><p>x</p>"
        html = render(Source(subject="S", html=source), {}).html
        self.assertIn('<p style="color: red;">x</p>', html)
        self.assertIn("@media (max-width: 600px)", html)

    def test_no_stylesheet_is_loaded(self):
        """A <link> to a stylesheet (a local file here) is kept for the client and never read."""
        with tempfile.NamedTemporaryFile("w", suffix=".css", delete=False) as sheet:
            sheet.write("p { color: blue }")
        self.addCleanup(Path(sheet.name).unlink)
        for href in (sheet.name, f"file://{sheet.name}", "https://example.invalid/x.css"):
            with self.subTest(href):
                source = f'<link rel="stylesheet" href="{href}"><style>b{{color:red}}</style><p>x</p>'
                html = render(Source(subject="S", html=source), {}).html
                self.assertNotIn("blue", html)
                self.assertIn(f'href="{href}"', html)

    def test_html_without_style_is_left_as_it_is(self):
        """No <style>: the rendered HTML is not rewritten."""
        self.assertEqual(render(Source(subject="S", html="<p>x</p>"), {}).html, "<p>x</p>")

    def test_text_is_made_from_html_when_the_template_has_none(self):
        """An HTML-only template gets a text part: its text, links with their addresses."""
        source = '<h1>Hi {{ name }}</h1><p>See <a href="https://e.test/o/1">your order</a>.</p>'
        source += "<ul><li>one</li></ul>"
        rendered = render(Source(subject="S", html=source), {"name": "Ana"})
        self.assertEqual(rendered.text, "Hi Ana\n\nSee [your order](https://e.test/o/1).\n\n* one\n")

    def test_hidden_preheaders_are_left_out_of_the_text(self):
        """An element styled display:none (by a <style> rule) is not in the text part."""
        source = "<style>.pre{display:none}</style><span class='pre'>Preheader</span><p>Body</p>"
        self.assertEqual(render(Source(subject="S", html=source), {}).text, "Body\n")

    def test_a_template_text_is_kept(self):
        """A template with its own text part keeps it, even when it renders empty."""
        template = Source(subject="S", text="{% if x %}x{% endif %}", html="<p>Hello</p>")
        rendered = render(template, {"x": False})
        self.assertEqual(rendered, Rendered(subject="S", text="", html="<p>Hello</p>"))

    def test_a_subject_with_a_line_break_from_the_data_is_refused(self):
        """A rendered subject must be one line, as a message's own subject."""
        for value in ("a\r\nBcc: x@example.com", "a\nb", "a\u2028b"):
            with self.subTest(value=value), self.assertRaises(TemplateRenderError) as caught:
                render(Source(subject="Hi {{ name }}", text="x"), {"name": value})
            self.assertEqual(caught.exception.part, "subject")
            self.assertIn("one line", caught.exception.errors[0].message)

    def test_a_subject_source_with_a_line_break_is_refused(self):
        """A subject source with a line break is refused when it is saved."""
        with self.assertRaises(TemplateSourceError) as caught:
            check_source("subject", "Hello\n{{ name }}")
        self.assertEqual(caught.exception.field, "subject")

    def test_an_empty_html_makes_no_text(self):
        """html_to_text of nothing visible is empty."""
        self.assertEqual(html_to_text("<div style='display:none'>x</div>"), "")

    def test_the_layout_fixture_renders_ready_to_send(self):
        """The receipt layout renders: subject, escaped values, CSS inlined, Outlook comments
        kept, and a text part with the order's lines."""
        rendered = render(LAYOUT, layout_data())
        self.assertEqual(rendered.subject, "Your Example Store order #A-10042")
        self.assertIn("Canvas tote &lt;large&gt;", rendered.html)
        self.assertIn("<!--[if mso]>", rendered.html)
        self.assertIn('class="button-link"', rendered.html)
        self.assertRegex(rendered.html, r'<a class="button-link"[^>]* style="[^"]*display: inline-block')
        self.assertIn("@media screen and (max-width: 620px)", rendered.html)
        self.assertIn("Canvas tote <large>       2    €18.00", rendered.text)
        self.assertIn("[View your order](https://shop.example.com/orders/A-10042)", rendered.text)
        self.assertNotIn("Thanks for your order. Here is your receipt.", rendered.text)  # the preheader
        self.assertGreater(len(LAYOUT.html), 18_000)


class LimitTests(SimpleTestCase):
    @override_settings(MAILSERVICE_TEMPLATE_MAX_BYTES=100)
    def test_a_source_over_the_size_limit_is_refused(self):
        """A source over MAILSERVICE_TEMPLATE_MAX_BYTES (UTF-8 bytes) is refused on its part."""
        check_source("html", "é" * 50)
        with self.assertRaises(TemplateSourceError) as caught:
            check_source("html", "é" * 51)
        self.assertIn("MAILSERVICE_TEMPLATE_MAX_BYTES", caught.exception.errors[0].message)

    @override_settings(MAILSERVICE_TEMPLATE_RENDER_SECONDS=0.05)
    def test_loops_over_loops_stop_at_the_time_limit(self):
        """Three nested loops over 500 items (125 million steps, no output) stop at the time limit."""
        source = "{% for a in x %}{% for b in x %}{% for c in x %}{% endfor %}{% endfor %}{% endfor %}"
        with self.assertRaises(TemplateLimitExceeded) as caught:
            text(source, {"x": list(range(500))})
        self.assertEqual(caught.exception.limit, "MAILSERVICE_TEMPLATE_RENDER_SECONDS")

    @override_settings(MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES=10_000)
    def test_loops_over_loops_stop_at_the_output_limit(self):
        """Output past MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES stops the render as it grows."""
        source = "{% for a in x %}{% for b in x %}{{ big }}{% endfor %}{% endfor %}"
        with self.assertRaises(TemplateLimitExceeded) as caught:
            text(source, {"x": list(range(1000)), "big": "y" * 1000})
        self.assertEqual(caught.exception.limit, "MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES")
        just_under = text("{% for a in x %}{{ big }}{% endfor %}", {"x": [1] * 9, "big": "y" * 1000})
        self.assertEqual(just_under, "y" * 9000)

    @override_settings(MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES=10_000)
    def test_template_text_repeated_by_loops_counts(self):
        """The template's own text repeated by a loop counts towards the output limit too."""
        with self.assertRaises(TemplateLimitExceeded):
            text("{% for a in x %}" + "z" * 100 + "{% endfor %}", {"x": list(range(101))})

    def test_a_filter_asked_for_a_huge_result_is_refused_before_it_runs(self):
        """center:1000000000, floatformat, stringformat widths and joins over the limit are refused."""
        sources = (
            "{{ x|center:1000000000 }}",
            "{{ 1|floatformat:999999999 }}",
            '{{ 1|stringformat:"999999999d" }}',
            "{{ big|join:big }}",
        )
        for source in sources:
            with self.subTest(source), self.assertRaises(TemplateLimitExceeded):
                text(source, {"x": "a", "big": ["y" * 1000] * 2000})

    def test_doubling_a_value_is_stopped_at_the_output_limit(self):
        """{% with %} and |add doubling a string level after level stop at the limit."""
        levels = 40
        source = "".join(f"{{% with v{i + 1}=v{i}|add:v{i} %}}" for i in range(levels))
        source += "{% endwith %}" * levels
        with self.assertRaises(TemplateLimitExceeded):
            text(source, {"v0": "ab"})
