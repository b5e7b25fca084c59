"""The sandbox's dependency on Django's template internals (mailservice/templating/engine.py and
rendering.py): where a template's variables are all present, it renders as Django's own engine."""

import time

import django
from django.template import Context, Engine
from django.test import SimpleTestCase

from mailservice.exceptions import TemplateSourceError
from mailservice.templating.engine import MAX_TAGS, _CompiledCache, compile_part
from mailservice.templating.rendering import read_only, render_part

DATA = {
    "name": "Ana <b>",
    "count": 3,
    "price": 12.5,
    "tags": ["a", "b", "c"],
    "user": {"first_name": "ana", "vip": True, "nickname": None},
    "items": [{"sku": "x1", "qty": 2}, {"sku": "y2", "qty": 1}],
    "when": "2026-11-25",
}
SOURCES = [
    "{{ name }} {{ name|safe }} {{ name|upper|truncatechars:4 }} {{ name|length }}",
    "{{ count|add:2 }} {{ price|floatformat:2 }} {{ count|pluralize:'y,ies' }} {{ count|divisibleby:3 }}",
    "{{ tags|join:', ' }} {{ tags|first }} {{ tags|slice:':2'|join:'' }} {{ tags.1 }}",
    "{{ user.first_name|capfirst }} {{ user.nickname|default_if_none:'-' }} {{ user.vip|yesno:'VIP,-' }}",
    "{% for item in items %}{{ forloop.counter }}:{{ item.sku }}x{{ item.qty }}"
    "{% if not forloop.last %}, {% endif %}{% endfor %}",
    "{% with first=items.0 %}{{ first.sku }}{% endwith %} {% firstof user.nickname name %}",
    "{% for item in items reversed %}{% cycle 'odd' 'even' %}{% endfor %} {% widthratio count 10 100 %}",
    "{% if user.vip and count > 2 %}yes{% elif count %}some{% else %}no{% endif %}",
    "{% filter upper %}{{ name }}{% endfilter %} {% spaceless %}<p> <b>x</b> </p>{% endspaceless %}",
    "{% autoescape off %}{{ name }}{% endautoescape %} {{ name|escape }} {% templatetag openblock %}",
    "{% regroup items by qty as groups %}"
    "{% for group in groups %}{{ group.grouper }}={{ group.list|length }};{% endfor %}",
    "{% for key, value in user.items %}{{ key }}={{ value }};{% endfor %} {{ items|dictsort:'sku'|first }}",
    "{% for tag in tags %}{% ifchanged %}{{ tag }}{% endifchanged %}{% endfor %} {{ tags|unordered_list }}",
    "{% verbatim %}{{ raw }}{% endverbatim %} {{ name|urlencode }} {{ name|slugify }}",
    "{{ name|json_script:'id' }} {{ user|pprint }} {{ name|center:11 }}|{{ count|stringformat:'03d' }}",
]


class DjangoParityTests(SimpleTestCase):
    def test_templates_with_all_their_variables_render_as_django_renders_them(self):
        """The strict expressions and metered nodes change nothing where nothing is missing."""
        stock = Engine(debug=True)
        for source in SOURCES:
            for part in ("html", "text"):
                with self.subTest(source=source, part=part):
                    expected = stock.from_string(source).render(Context(DATA, autoescape=part == "html"))
                    compiled = compile_part(part, source)
                    got = render_part(compiled, read_only(DATA), deadline=time.monotonic() + 5)
                    self.assertEqual(got, expected)

    def test_written_against_these_django_versions(self):
        """The sandbox relies on FilterExpression.resolve, Node.render_annotated and the ForNode
        and WithNode attributes of these versions; check them again before moving on."""
        self.assertIn(django.VERSION[:2], {(5, 2), (6, 1)})


class CompiledCacheTests(SimpleTestCase):
    def test_a_source_used_again_is_compiled_once(self):
        """The same part and source give the same compiled template (shared by threads)."""
        source = "<p>{{ name }}</p>{% for x in items %}{{ x }}{% endfor %}"
        self.assertIs(compile_part("html", source), compile_part("html", source))

    def test_the_cache_holds_a_bounded_number_of_tags(self):
        """Past its capacity in tags and variables, the least recently used parts are dropped."""
        cache = _CompiledCache(capacity=10)
        for key, weight in (("a", 4), ("b", 4)):
            cache.put(("html", key), key, weight)
        cache.get(("html", "a"))  # a is now the most recently used
        cache.put(("html", "c"), "c", 4)
        self.assertEqual(list(cache.entries), [("html", "a"), ("html", "c")])
        self.assertEqual(cache.held, 8)

    def test_a_source_with_too_many_tags_is_refused(self):
        """More than MAX_TAGS tags and variables in one part is refused before it is compiled."""
        compile_part("text", "{{ a }}" * MAX_TAGS)
        with self.assertRaises(TemplateSourceError) as caught:
            compile_part("text", "{{ a }}" * (MAX_TAGS + 1))
        self.assertIn(f"At most {MAX_TAGS} tags and variables", caught.exception.errors[0].message)
