"""Django's template engine in a sandbox: what a template may use, and its compiled form, strict
about variables and metered (the rules: mailservice/templating/__init__.py, docs/templates.md).

The sandbox works on Django's compiled template rather than on a fork of it: each
`FilterExpression` becomes a `StrictExpression` (Django's own resolution, but a failed lookup is
an error unless a default filter follows), the nodes that write text of their own are metered,
and both report to the render's `Meter` (rendering.py's `_Render`). This module and rendering.py
depend on Django's template internals: `FilterExpression.resolve`, `Node.render_annotated`, the
attributes of `ForNode` and `WithNode`, and `Context` setting a loop's variable on each step, as
in Django 5.2 and 6.1; tests/templates/test_engine.py checks the sandbox against Django's own
engine where both apply.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

from django.template import Engine, Library, Template, TemplateSyntaxError, defaultfilters, defaulttags
from django.template.base import FilterExpression, Node, NodeList, VariableDoesNotExist
from django.template.defaulttags import FilterNode, ForNode, NowNode, WithNode
from django.template.smartif import TokenBase
from django.utils.safestring import SafeData, mark_safe
from django.utils.timezone import template_localtime

from mailservice.exceptions import TemplateError, TemplateRenderError, TemplateSourceError
from mailservice.templating.limits import (
    FORMAT_GROWTH,
    MAX_TERMS,
    METER,
    SIZED_FILTERS,
    Meter,
    count_terms,
    shorten,
    sized,
)

__all__ = ["METER", "MAX_TAGS", "MAX_TERMS", "CompiledPart", "Meter", "Scope", "compile_part"]

# Django's built-in tags a template may use; every other tag is unknown to the sandbox.
ALLOWED_TAGS = (
    "autoescape", "comment", "cycle", "filter", "firstof", "for", "if", "ifchanged", "now", "regroup",
    "resetcycle", "spaceless", "templatetag", "verbatim", "widthratio", "with",
)  # fmt: skip
# Built-in tags refused with a reason, so the author learns why rather than "unknown tag".
REFUSED_TAGS = {
    "load": "templates use Django's built-in tags and filters only",
    "include": "a template cannot use another template or a file; each one is complete in itself",
    "extends": "a template cannot use another template or a file; each one is complete in itself",
    "block": "blocks only serve {% extends %}, which templates cannot use",
    "debug": "it would print the renderer's internals",
    "url": "the gateway's own URLs are not for templates; write the address",
    "csrf_token": "an email has no form to protect",
    "querystring": "an email is not rendered for a request",
    "lorem": "placeholder text has no place in mail",
}
ALLOWED_FILTERS = (
    "add", "addslashes", "capfirst", "center", "cut", "date", "default", "default_if_none", "dictsort",
    "dictsortreversed", "divisibleby", "escape", "escapejs", "escapeseq", "filesizeformat", "first",
    "floatformat", "force_escape", "get_digit", "iriencode", "join", "json_script", "last", "length",
    "linebreaks", "linebreaksbr", "linenumbers", "ljust", "lower", "make_list", "phone2numeric",
    "pluralize", "pprint", "random", "rjust", "safe", "safeseq", "slice", "slugify", "stringformat",
    "striptags", "time", "timesince", "timeuntil", "title", "truncatechars", "truncatechars_html",
    "truncatewords", "truncatewords_html", "unordered_list", "upper", "urlencode", "urlize",
    "urlizetrunc", "wordcount", "wordwrap", "yesno",
)  # fmt: skip
# Filters that make a variable optional (their argument replaces a missing value).
DEFAULT_FILTERS = ("default", "default_if_none")
# Tags and variables in one source: each becomes objects of Django's that hold about a
# kilobyte and take time to build, so a source of nothing but `{{ a }}` must not reach the size
# limit's worth of them (docs/templates.md, "Limits").
MAX_TAGS = 10_000
# Compiled parts kept for reuse, weighed in bytes: a compiled part holds about a kilobyte per name,
# filter and argument of its tags (MAX_TERMS) besides its source.
CACHE_BYTES = 32 * 1024 * 1024
TERM_BYTES = 1_000


# The sandbox ----------------------------------------------------------------------------------


def _refused(name: str, reason: str) -> Callable[..., Node]:
    def compile_refused(parser: Any, token: Any) -> Node:
        raise TemplateSyntaxError(f"{{% {name} %}} is not available in templates: {reason}.")

    return compile_refused


@cache
def _library() -> Library:
    library = Library()
    for name in ALLOWED_TAGS:
        library.tags[name] = defaulttags.register.tags[name]
    for name, reason in REFUSED_TAGS.items():
        library.tags[name] = _refused(name, reason)
    for name in ALLOWED_FILTERS:
        function = defaultfilters.register.filters[name]
        library.filters[name] = sized(name, function) if name in SIZED_FILTERS else function
    return library


class _SandboxEngine(Engine):
    """An engine with no loaders, no libraries to load and only the sandbox's built-ins."""

    def get_template_builtins(self, builtins: Iterable[str]) -> list[Library]:
        return [_library()]

    def get_template_libraries(self, libraries: Mapping[str, str]) -> dict[str, Library]:
        return {}


@cache
def _engine() -> Engine:
    # debug=True: Django records the line of a syntax error or of the node that raised.
    return _SandboxEngine(debug=True, loaders=[], libraries={}, autoescape=True, string_if_invalid="")


class Binding(NamedTuple):
    """A name a `{% for %}` or `{% with %}` binds: where its value comes from in the data."""

    kind: str  # "for", "with", or "unpack" (`{% for key, value in ... %}`: no one place)
    source: FilterExpression
    reversed: bool = False


Scope = dict[str, Binding]


@dataclass(frozen=True)
class CompiledPart:
    """One source compiled for the sandbox, shareable by threads (Django keeps render state in
    the context). `lines` and `scopes` are keyed by id() of each expression of the template."""

    part: str
    template: Template
    lines: dict[int, int]
    scopes: dict[int, Scope]


class StrictExpression(FilterExpression):
    """Django's FilterExpression.resolve, except that a lookup that fails is an error unless a
    default filter follows it (then it is None), each filter's result is held to the output
    limit, and each resolution counts towards the time limit."""

    __slots__ = ()

    def resolve(self, context: Any, ignore_failures: bool = False) -> Any:
        state = METER.get()
        state.tick()
        if self.is_var:
            try:
                obj = self.var.resolve(context)
            except VariableDoesNotExist:
                if not any(getattr(func, "_filter_name", "") in DEFAULT_FILTERS for func, _ in self.filters):
                    raise state.missing(self, self.var.lookups, context) from None
                obj = None
        else:
            obj = self.var
        for func, args in self.filters:
            arg_vals = []
            for lookup, arg in args:
                if not lookup:
                    arg_vals.append(mark_safe(arg))
                    continue
                try:
                    arg_vals.append(arg.resolve(context))
                except VariableDoesNotExist:
                    raise state.missing(self, arg.lookups, context) from None
            if getattr(func, "expects_localtime", False):
                obj = template_localtime(obj, context.use_tz)
            try:
                if getattr(func, "needs_autoescape", False):
                    new_obj = func(obj, *arg_vals, autoescape=context.autoescape)
                else:
                    new_obj = func(obj, *arg_vals)
            except TemplateError:
                raise
            except Exception as err:  # Python's own message would echo the data, or internals
                raise _filter_failed(func, self.token, err, state) from err
            if getattr(func, "is_safe", False) and isinstance(obj, SafeData):
                obj = mark_safe(new_obj)
            else:
                obj = new_obj
            state.hold(obj)
        return obj


def _filter_failed(func: Any, token: str, err: Exception, state: Meter) -> TemplateError:
    """The error of a filter that raised on its value, without Python's own message."""
    name, where = getattr(func, "_filter_name", "a filter"), shorten(str(token))
    if isinstance(err, MemoryError):
        return state.over_size()
    detail = f"The filter `{name}` could not handle its value in `{{{{ {where} }}}}`."
    return TemplateRenderError(detail, part=state.part)


_METERED: dict[type, type] = {}
# The attribute naming the variable a tag's `as` form sets ({% cycle … as x %} and the like).
AS_NAMES = ("asvar", "variable_name", "var_name")


def _metered(cls: type[Node]) -> type[Node]:
    """`cls` whose output counts towards the part's output limit."""
    if cls not in _METERED:

        def render_annotated(self: Node, context: Any) -> str:
            state = METER.get()
            if isinstance(self, NowNode) and len(self.format_string) * FORMAT_GROWTH > state.max_chars:
                raise state.over_size()  # each format character may become 30 of text
            output = super(metered, self).render_annotated(context)
            state.spend(output)
            for attribute in AS_NAMES:  # a value stored rather than written counts as well
                name = getattr(self, attribute, None)
                if isinstance(name, str) and name:
                    state.hold(context.get(name))
            return output

        metered = type(cls.__name__, (cls,), {"render_annotated": render_annotated, "__module__": __name__})
        _METERED.setdefault(cls, metered)
    return _METERED[cls]


def _members(value: Any) -> Iterator[Node | FilterExpression]:
    """The nodes and expressions inside one attribute of a node, not inside other nodes."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (Node, FilterExpression)):
            yield item
        elif isinstance(item, (list, tuple, NodeList)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, TokenBase):  # an {% if %} condition: operators, literals
            stack.extend(vars(item).values())


def _instrument(nodelist: NodeList) -> tuple[dict[int, int], dict[int, Scope]]:
    """Make the compiled template strict and metered; map each expression to its line and to
    the names the enclosing `{% for %}`/`{% with %}` tags bind there."""
    lines: dict[int, int] = {}
    scopes: dict[int, Scope] = {}
    work: list[tuple[Any, Scope, int]] = [(node, {}, 1) for node in nodelist]
    seen: set[int] = set()
    while work:
        item, scope, line = work.pop()
        if id(item) in seen:  # {% resetcycle %} holds the {% cycle %} node it resets
            continue
        seen.add(id(item))
        if isinstance(item, FilterExpression):
            item.__class__ = StrictExpression
            lines[id(item)], scopes[id(item)] = line, scope
            continue
        token = getattr(item, "token", None)
        line = getattr(token, "lineno", None) or line
        if isinstance(item, ForNode):
            work.append((item.sequence, scope, line))
            binding = Binding("for" if len(item.loopvars) == 1 else "unpack", item.sequence, item.is_reversed)
            inner = {**scope, **dict.fromkeys(item.loopvars, binding)}
            work.extend((node, inner, line) for node in item.nodelist_loop)
            work.extend((node, scope, line) for node in item.nodelist_empty or ())
            continue
        if isinstance(item, WithNode):
            work.extend((expression, scope, line) for expression in item.extra_context.values())
            inner = {**scope, **{name: Binding("with", value) for name, value in item.extra_context.items()}}
            work.extend((node, inner, line) for node in item.nodelist)
            continue
        found = [member for value in vars(item).values() for member in _members(value)]
        if isinstance(item, FilterNode) or not any(isinstance(member, Node) for member in found):
            item.__class__ = _metered(type(item))  # it writes text of its own
        work.extend((member, scope, line) for member in found)
    return lines, scopes


class _CompiledCache:
    """The most recently used compiled parts, up to `capacity` bytes as weighed by
    compile_part: a template used message after message is compiled once, and a few huge ones
    (or many sources tried once) cannot hold a worker's memory."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.entries: OrderedDict[tuple[str, str], tuple[CompiledPart, int]] = OrderedDict()
        self.held = 0
        self.lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> CompiledPart | None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is None:
                return None
            self.entries.move_to_end(key)
            return entry[0]

    def put(self, key: tuple[str, str], compiled: CompiledPart, weight: int) -> None:
        with self.lock:
            if key in self.entries or weight > self.capacity:
                return
            self.entries[key] = (compiled, weight)
            self.held += weight
            while self.held > self.capacity:
                _, (_, dropped) = self.entries.popitem(last=False)
                self.held -= dropped


_COMPILED = _CompiledCache(CACHE_BYTES)


def compile_part(part: str, source: str, *, keep: bool = True) -> CompiledPart:
    """The source compiled for the sandbox (from the cache when it was compiled before), or
    TemplateSourceError with the line at fault. `keep=False` (a source checked on saving)
    leaves the cache as it is: what is saved is compiled again, once, when it is first used."""
    compiled = _COMPILED.get((part, source))
    if compiled is None:
        tags = source.count("{{") + source.count("{%")
        if tags > MAX_TAGS:
            raise TemplateSourceError(f"At most {MAX_TAGS} tags and variables; got {tags}.", part=part)
        terms = count_terms(source)
        if terms > MAX_TERMS:
            raise TemplateSourceError(
                f"At most {MAX_TERMS} names, filters, operators and arguments in tags and variables; "
                f"got {terms}.",
                part=part,
            )
        compiled = _compile(part, source)
        if keep:
            _COMPILED.put((part, source), compiled, len(source) + TERM_BYTES * max(terms, 1))
    return compiled


def _compile(part: str, source: str) -> CompiledPart:
    try:
        template = Template(source, engine=_engine())
    except RecursionError as err:
        raise TemplateSourceError("Tags are nested too deeply.", part=part) from err
    except Exception as err:  # a syntax error, or a tag's own check of its arguments
        debug = getattr(err, "template_debug", None) or {}
        detail = str(err)
        if detail.startswith("Invalid block tag"):
            name = getattr(getattr(err, "token", None), "contents", "").split(" ")[0]
            detail = f"Unknown tag {{% {shorten(name)} %}}: templates use Django's built-in tags only."
        raise TemplateSourceError(shorten(detail, 300), part=part, line=debug.get("line")) from err
    lines, scopes = _instrument(template.nodelist)
    return CompiledPart(part, template, lines, scopes)
