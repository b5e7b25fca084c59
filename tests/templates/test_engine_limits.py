"""The sandbox's checks before a value is built (mailservice/templating/limits.py and engine.py):
values that would expand past the output limit, widths read as the filters read them, joins of
any iterable, the `as` forms of tags, the count of terms in a source, the compiled-template
cache's weight, and error messages that echo neither Python's text nor long source. Each
reproducer runs at a small output limit (10,000 bytes), not at the size that would hurt."""

from unittest import mock

from django.test import SimpleTestCase, TestCase, override_settings

from mailservice.exceptions import (
    TemplateLimitExceeded,
    TemplateNotFound,
    TemplateRenderError,
    TemplateSourceError,
)
from mailservice.services.templates import template_create, template_update
from mailservice.templating import check_source, engine, render
from mailservice.templating.engine import MAX_TERMS, _CompiledCache, compile_part
from mailservice.templating.limits import count_terms, rendered_size
from tests.templates.fixtures import LAYOUT, Source, layout_data

LIMIT = 10_000


def text(source: str, data: dict | None = None) -> str:
    return render(Source(subject="S", text=source), data or {}).text


@override_settings(MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES=LIMIT)
class ExpansionTests(SimpleTestCase):
    def assertOverSize(self, source: str, data: dict, line: int | None = None) -> TemplateLimitExceeded:
        with self.assertRaises(TemplateLimitExceeded) as caught:
            text(source, data)
        self.assertEqual(caught.exception.limit, "MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES")
        self.assertEqual(caught.exception.part, "text")
        if line is not None:
            self.assertEqual(caught.exception.line, line)
        return caught.exception

    def test_a_list_added_to_itself_level_after_level_is_refused(self):
        """`{% with b=a|add:a %}` nested: 2^n references to one string, refused once they would
        render past the limit (the review's 20 levels of 1,000 characters: 2^20 of them)."""
        levels = 20
        names = [f"v{i}" for i in range(levels + 1)]
        pairs = zip(names[:-1], names[1:], strict=True)
        source = "\n" + "".join(f"{{% with {b}={a}|add:{a} %}}" for a, b in pairs)
        for ending in (
            "{{ v20|escapejs|length }}",
            "{{ v20 }}",
            "{{ v20|unordered_list }}",
            "{{ v20|pprint }}",
        ):
            with self.subTest(ending=ending):
                full = source + ending + "{% endwith %}" * levels
                self.assertOverSize(full, {"v0": ["x" * 100]}, line=2)

    def test_a_list_added_to_itself_within_the_limit_renders(self):
        self.assertEqual(text("{% with b=a|add:a %}{{ b|length }}{% endwith %}", {"a": ["x", "y"]}), "4")
        self.assertEqual(text("{{ a|add:1 }} {{ s|add:'!' }}", {"a": 1, "s": "hi"}), "2 hi!")

    def test_the_estimate_counts_shared_items_each_time_and_stops_early(self):
        value = ["x" * 10]
        for _ in range(40):  # 2^40 references: only walking until the limit is cheap
            value = [value, value]
        self.assertGreater(rendered_size(value, LIMIT), LIMIT)
        self.assertLess(rendered_size(["ab", {"k": 1}], LIMIT), 30)

    def test_width_arguments_are_read_as_the_filter_reads_them(self):
        """`"3_000_000_000"` is all digits to a regex but int() reads it as 3e9: refused."""
        for filter_ in ("center", "ljust", "rjust"):
            for width in ('"20_000"', '"20000"', "20000", "w"):
                with self.subTest(filter=filter_, width=width):
                    self.assertOverSize(f"{{{{ s|{filter_}:{width} }}}}", {"s": "x", "w": 20_000})
        self.assertOverSize('{{ n|floatformat:"20_000" }}', {"n": 1.5})
        self.assertOverSize('{{ n|floatformat:"-20_000g" }}', {"n": 1.5})
        self.assertEqual(
            text('{{ s|center:"1_0" }}|{{ n|floatformat:"2_0"|length }}', {"s": "x", "n": 1}), "    x     |22"
        )

    def test_stringformat_widths_and_precisions_are_checked(self):
        for spec in ("0999999999d", ".999999999f", "20000s", "*d"):
            with self.subTest(spec=spec):
                self.assertOverSize(f'{{{{ n|stringformat:"{spec}" }}}}', {"n": 1})
        self.assertEqual(text('{{ n|stringformat:"05.1f" }}', {"n": 1}), "001.0")

    def test_join_is_sized_for_any_iterable(self):
        """A string joined with a long separator, a dict's keys: refused before join runs."""
        self.assertOverSize("{{ s|join:t }}", {"s": "x" * 200, "t": "-" * 100})
        self.assertOverSize("{{ d|join:t }}", {"d": {f"k{i}": 1 for i in range(200)}, "t": "-" * 100})
        self.assertOverSize("{{ l|join:t }}", {"l": ["a"] * 200, "t": "-" * 100})
        self.assertEqual(
            text("{{ s|join:'-' }} {{ d|join:',' }}", {"s": "abc", "d": {"a": 1, "b": 2}}), "a-b-c a,b"
        )

    def test_long_date_formats_are_refused(self):
        """Each format character may become ~30 characters: `{% now %}` and |date check first."""
        self.assertOverSize('{% now "' + "r" * 400 + '" %}', {})
        self.assertOverSize('{% now "' + "r" * 400 + '" as x %}', {})
        self.assertOverSize("{{ d|date:f }}", {"d": "2026-01-01", "f": "r" * 400})
        self.assertEqual(len(text('{% now "Y" as y %}{{ y }}', {})), 4)

    def test_values_stored_by_as_forms_are_held(self):
        """`{% cycle … as x %}`, `{% firstof … as x %}`: a stored value over the limit is refused
        when it is stored, not only when (if ever) it is written."""
        big = "x" * (LIMIT + 1)
        self.assertOverSize("{% cycle s s as x silent %}", {"s": big})
        self.assertOverSize("{% firstof s as x %}", {"s": big})
        self.assertOverSize("{% regroup l by k as g %}", {"l": [{"k": "x" * 100}] * 200})
        self.assertEqual(
            text("{% firstof a b as x %}{{ x }}{% cycle 'p' 'q' as c silent %}{{ c }}", {"a": 0, "b": "B"}),
            "Bp",
        )

    def test_the_realistic_layout_renders(self):
        with override_settings(MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES=1024 * 1024):
            rendered = render(LAYOUT, layout_data())
        self.assertIn("<html", rendered.html)


class TermTests(SimpleTestCase):
    def test_one_tag_with_too_many_arguments_is_refused_before_it_is_compiled(self):
        """`{% firstof a a … %}` is one tag: its arguments count, before Django builds them."""
        for source in (
            "{% firstof " + "a " * (MAX_TERMS + 1) + "%}",
            "{{ a" + "|add:a" * (MAX_TERMS // 2 + 1) + " }}",
            "{% if a" + " or a" * (MAX_TERMS // 2 + 1) + " %}{% endif %}",
        ):
            with self.subTest(source=source[:20]), mock.patch.object(engine, "_compile") as compile_:
                with self.assertRaises(TemplateSourceError) as caught:
                    check_source("text", source)
                compile_.assert_not_called()
                self.assertIn(f"At most {MAX_TERMS} names, filters", caught.exception.errors[0].message)

    def test_terms_are_counted_as_django_splits_them(self):
        self.assertEqual(count_terms("{{ a|add:b }} {% if x or y %}{% endif %} {{ 'a b c' }} text"), 9)
        self.assertLess(count_terms(LAYOUT.html), MAX_TERMS // 10)


class CacheTests(SimpleTestCase):
    def test_checking_a_source_does_not_keep_it(self):
        source = "{{ never_cached_before_917 }}"
        check_source("text", source)
        self.assertIsNone(engine._COMPILED.get(("text", source)))
        compile_part("text", source)
        self.assertIsNotNone(engine._COMPILED.get(("text", source)))

    def test_entries_are_weighed_by_size_and_terms(self):
        """A part's weight is its source and a kilobyte per term; one over the whole capacity is
        not kept at all, and the least recently used go first."""
        cache = _CompiledCache(capacity=100_000)
        with mock.patch.object(engine, "_COMPILED", cache):
            compile_part("text", "{% firstof " + "a " * 200 + "%}")
            self.assertEqual(len(cache.entries), 0)  # ~200 KB > 100 KB
            compile_part("text", "{{ a }}")
            self.assertEqual(cache.held, len("{{ a }}") + engine.TERM_BYTES)
            for i in range(200):
                compile_part("text", f"{{{{ a{i} }}}}")
            self.assertLessEqual(cache.held, 100_000)
            self.assertNotIn(("text", "{{ a }}"), cache.entries)


class UpdateTests(TestCase):
    def test_updating_a_template_that_is_not_there_compiles_nothing(self):
        template_create(name="welcome", text="Hi")
        with mock.patch.object(engine, "_compile") as compile_, self.assertRaises(TemplateNotFound):
            template_update(name="nope", text="{{ a }}")
        compile_.assert_not_called()

    def test_a_template_deleted_while_its_sources_are_checked_is_not_found(self):
        template = template_create(name="welcome", text="Hi")

        def delete_meanwhile(**fields: str) -> None:
            template.delete()

        with mock.patch("mailservice.services.templates._check_content", delete_meanwhile):
            with self.assertRaises(TemplateNotFound):
                template_update(name="welcome", text="Hello")


class ErrorMessageTests(SimpleTestCase):
    def test_a_tag_that_raises_gets_a_message_of_its_own(self):
        """Python's exception text (which can name the sandbox's own classes) is not echoed."""
        with self.assertRaises(TemplateRenderError) as caught:
            text("{% regroup l by k as g %}", {"l": 5})
        message = caught.exception.errors[0].message
        self.assertNotIn("Error:", message)
        self.assertNotIn("_ReadOnly", message)

    def test_a_filter_that_raises_is_named_without_python_s_text(self):
        with self.assertRaises(TemplateRenderError) as caught:
            text("{{ d|date:'Y' }}{{ n|divisibleby:0 }}", {"d": "2026-01-01", "n": 3})
        message = caught.exception.errors[0].message
        self.assertIn(
            "The filter `divisibleby` could not handle its value in `{{ n|divisibleby:0 }}`", message
        )
        self.assertNotIn("ZeroDivision", message)

    def test_source_quoted_in_a_syntax_error_is_shortened(self):
        with self.assertRaises(TemplateSourceError) as caught:
            check_source("text", "{{ " + "(" * 2000 + " }}")
        message = caught.exception.errors[0].message
        self.assertLess(len(message), 400)
        self.assertIn("…", message)
