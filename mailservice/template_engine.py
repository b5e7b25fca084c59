"""Django's template engine in a sandbox: what a template may use, its strict variables, and the
limits a render is held to (mailservice/templating.py states the rules; docs/templates.md).

The sandbox works on Django's compiled template rather than on a fork of it: each
`FilterExpression` becomes a `StrictExpression` (Django's own resolution, but a failed lookup is
an error unless a default filter follows), the nodes that write text of their own are metered,
and the context ticks on every loop step. Errors Django would swallow on the way (an `{% if %}`
operator turns any exception into False) are kept by the render's state and raised at its end.
This module is the one that depends on Django's template internals: `FilterExpression.resolve`,
`Node.render_annotated`, the attributes of `ForNode` and `WithNode`, and `Context` setting a
loop's variable on each step, as in Django 5.2 and 6.x; tests/templates/test_engine.py checks
the strict resolution against Django's own where both apply.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache, lru_cache, wraps
from typing import Any, NamedTuple

from django.template import (
    Context,
    Engine,
    Library,
    Template,
    TemplateSyntaxError,
    defaultfilters,
    defaulttags,
)
from django.template.base import FilterExpression, Node, NodeList, VariableDoesNotExist
from django.template.context import BaseContext
from django.template.defaulttags import FilterNode, ForNode, WithNode
from django.template.smartif import TokenBase
from django.utils.safestring import SafeData, mark_safe
from django.utils.timezone import template_localtime

from mailservice import conf
from mailservice.exceptions import (
    TemplateError,
    TemplateLimitExceeded,
    TemplateRenderError,
    TemplateSourceError,
    TemplateVariableMissing,
)

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
# Filters whose argument sets the size of their result (`center:1000000000`), and `join`: a
# result over the output limit is refused before the filter builds it.
SIZED_FILTERS = ("center", "ljust", "rjust", "floatformat", "stringformat", "join")
NUMBER = re.compile(r"\d+")
MISSING = object()


# The sandbox ----------------------------------------------------------------------------------


def _refused(name: str, reason: str) -> Callable[..., Node]:
    def compile_refused(parser: Any, token: Any) -> Node:
        raise TemplateSyntaxError(f"{{% {name} %}} is not available in templates: {reason}.")

    return compile_refused


def _sized(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` refusing, before it runs, a result over the output limit that its argument
    would ask for: a width or precision (`center:1000000000`), or a join's total length."""

    @wraps(function)  # keeps Django's flags (is_safe, needs_autoescape) and signature
    def sized(value: Any, *args: Any, **kwargs: Any) -> Any:
        state = _STATE.get()
        if name == "join":
            if isinstance(value, (list, tuple)):
                separator = len(str(args[0])) if args else 0
                if sum(len(str(item)) + separator for item in value) > state.max_chars:
                    raise state.over_size()
        elif any(int(number) > state.max_chars for arg in args for number in NUMBER.findall(str(arg))):
            raise state.over_size()
        return function(value, *args, **kwargs)

    return sized


@cache
def _library() -> Library:
    library = Library()
    for name in ALLOWED_TAGS:
        library.tags[name] = defaulttags.register.tags[name]
    for name, reason in REFUSED_TAGS.items():
        library.tags[name] = _refused(name, reason)
    for name in ALLOWED_FILTERS:
        function = defaultfilters.register.filters[name]
        library.filters[name] = _sized(name, function) if name in SIZED_FILTERS else function
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
        state = _STATE.get()
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
            if getattr(func, "needs_autoescape", False):
                new_obj = func(obj, *arg_vals, autoescape=context.autoescape)
            else:
                new_obj = func(obj, *arg_vals)
            if getattr(func, "is_safe", False) and isinstance(obj, SafeData):
                obj = mark_safe(new_obj)
            else:
                obj = new_obj
            state.hold(obj)
        return obj


_METERED: dict[type, type] = {}


def _metered(cls: type[Node]) -> type[Node]:
    """`cls` whose output counts towards the part's output limit."""
    if cls not in _METERED:

        def render_annotated(self: Node, context: Context) -> str:
            output = super(metered, self).render_annotated(context)
            _STATE.get().spend(output)
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
        inner = dict(scope)
        if isinstance(item, ForNode):
            work.append((item.sequence, scope, line))
            kind = "for" if len(item.loopvars) == 1 else "unpack"
            inner.update((name, Binding(kind, item.sequence, item.is_reversed)) for name in item.loopvars)
            work.extend((node, inner, line) for node in item.nodelist_loop)
            work.extend((node, scope, line) for node in item.nodelist_empty or ())
            continue
        if isinstance(item, WithNode):
            work.extend((expression, scope, line) for expression in item.extra_context.values())
            inner.update((name, Binding("with", source)) for name, source in item.extra_context.items())
            work.extend((node, inner, line) for node in item.nodelist)
            continue
        found = [member for value in vars(item).values() for member in _members(value)]
        if isinstance(item, FilterNode) or not any(isinstance(member, Node) for member in found):
            item.__class__ = _metered(type(item))  # it writes text of its own
        work.extend((member, scope, line) for member in found)
    return lines, scopes


@lru_cache(maxsize=64)
def compile_part(part: str, source: str) -> CompiledPart:
    """The source compiled for the sandbox, or TemplateSourceError with the line at fault.
    Cached on the source, so a template used message after message is compiled once."""
    try:
        template = Template(source, engine=_engine())
    except RecursionError as err:
        raise TemplateSourceError("Tags are nested too deeply.", part=part) from err
    except Exception as err:  # a syntax error, or a tag's own check of its arguments
        debug = getattr(err, "template_debug", None) or {}
        detail = str(err)
        if detail.startswith("Invalid block tag"):
            name = getattr(getattr(err, "token", None), "contents", "").split(" ")[0]
            detail = f"Unknown tag {{% {name} %}}: templates use Django's built-in tags only."
        raise TemplateSourceError(detail, part=part, line=debug.get("line")) from err
    lines, scopes = _instrument(template.nodelist)
    return CompiledPart(part, template, lines, scopes)


# Rendering ------------------------------------------------------------------------------------


class _ReadOnlyDict(dict):
    """template_data as a template sees it: `{{ data.clear }}` renders nothing and changes nothing."""

    def clear(self) -> None:
        raise TypeError("template_data is read-only")

    def popitem(self) -> tuple[Any, Any]:
        raise TypeError("template_data is read-only")

    clear.alters_data = popitem.alters_data = True  # type: ignore[attr-defined]


class _ReadOnlyList(list):
    def pop(self, index: int = -1) -> Any:
        raise TypeError("template_data is read-only")

    def clear(self) -> None:
        raise TypeError("template_data is read-only")

    def reverse(self) -> None:
        raise TypeError("template_data is read-only")

    def sort(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("template_data is read-only")

    pop.alters_data = clear.alters_data = reverse.alters_data = sort.alters_data = True  # type: ignore


def read_only(value: Any) -> Any:
    """`value` (template_data) with its objects and lists read-only, as render_part takes it."""
    if isinstance(value, Mapping):
        return _ReadOnlyDict((str(key), read_only(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return _ReadOnlyList(read_only(item) for item in value)
    return value


class _Render:
    """One part being rendered: its limits, what it has spent, and the first error, kept so
    that an error Django swallows (`{% if a and b %}` turns one into False) still fails it."""

    def __init__(self, compiled: CompiledPart, data: dict, deadline: float):
        self.compiled = compiled
        self.part = compiled.part
        self.data = data
        self.deadline = deadline
        self.max_chars = conf.template_render_max_bytes()  # a character is at least a byte
        self.spent = 0
        self.ticks = 0
        self.failure: TemplateError | None = None

    def fail(self, error: TemplateError) -> TemplateError:
        if self.failure is None:
            self.failure = error
        return self.failure

    def tick(self) -> None:
        if self.failure is not None:
            raise self.failure
        self.ticks += 1
        if not self.ticks & 15 and time.monotonic() > self.deadline:
            limit = conf.template_render_seconds()
            raise self.fail(
                TemplateLimitExceeded(
                    f"Rendering took longer than {limit:g} s (MAILSERVICE_TEMPLATE_RENDER_SECONDS).",
                    part=self.part,
                    limit="MAILSERVICE_TEMPLATE_RENDER_SECONDS",
                )
            )

    def over_size(self) -> TemplateError:
        return self.fail(
            TemplateLimitExceeded(
                f"The rendered {self.part} is over {self.max_chars} bytes "
                "(MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES).",
                part=self.part,
                limit="MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES",
            )
        )

    def spend(self, output: str) -> None:
        self.tick()
        self.spent += len(output)
        if self.spent > self.max_chars:
            raise self.over_size()

    def hold(self, value: Any) -> None:
        if isinstance(value, (str, list, tuple, dict)) and len(value) > self.max_chars:
            raise self.over_size()

    def missing(self, expression: FilterExpression, lookups: tuple[str, ...], context: Any) -> TemplateError:
        written = ".".join(lookups)
        located = None
        if isinstance(context, BaseContext):  # not inside {% regroup %}, which resolves on each item
            scope = self.compiled.scopes.get(id(expression), {})
            located = self._locate(lookups, scope, context, len(context.dicts))
        line = self.compiled.lines.get(id(expression))
        field = located[0] if located else "template_data"
        error = TemplateVariableMissing(written, part=self.part, field=field, line=line, local=not located)
        return self.fail(error)

    def _locate(
        self, lookups: tuple[str, ...], scope: Scope, context: BaseContext, below: int
    ) -> tuple[str, Any] | None:
        """The place in template_data that `lookups` name, and the value there (MISSING past
        the data's end), following `{% for %}`/`{% with %}` names back to where they come from;
        None when there is no one place."""
        dicts = context.dicts[:below]
        index = next((i for i in range(len(dicts) - 1, -1, -1) if lookups[0] in dicts[i]), None)
        if index is None or dicts[index] is self.data:
            return _extend("template_data", self.data, lookups)
        binding = scope.get(lookups[0])
        source = binding.source if binding and binding.kind != "unpack" else None
        if source is None or not source.is_var or source.filters:
            return None
        found = self._locate(source.var.lookups, self.compiled.scopes.get(id(source), {}), context, index)
        if found is None:
            return None
        path, value = found
        if binding.kind == "for":
            loop = dicts[index].get("forloop") or {}
            position = loop.get("revcounter0" if binding.reversed else "counter0")
            if not isinstance(value, list) or position is None:
                return None
            path, value = f"{path}[{position}]", value[position] if position < len(value) else MISSING
        return _extend(path, value, lookups[1:])


def _extend(path: str, value: Any, lookups: Iterable[str]) -> tuple[str, Any]:
    """`path` followed by `lookups` as a data path (`.key`, `[index]`), and the value there."""
    for bit in lookups:
        if isinstance(value, list) and bit.isdigit():
            path += f"[{bit}]"
            value = value[int(bit)] if int(bit) < len(value) else MISSING
        else:
            path += f".{bit}"
            value = value[bit] if isinstance(value, dict) and bit in value else MISSING
    return path, value


_STATE: ContextVar[_Render] = ContextVar("mailservice_template_render")


class _Context(Context):
    """Ticks on every loop step ({% for %} sets its variable on each), so an empty loop inside a
    loop is stopped by the time limit too."""

    def __setitem__(self, key: str, value: Any) -> None:
        _STATE.get().tick()
        super().__setitem__(key, value)

    def update(self, other_dict: Any) -> Any:
        _STATE.get().tick()
        return super().update(other_dict)


def render_part(compiled: CompiledPart, data: dict, *, deadline: float) -> str:
    """One part rendered with `data` (as read_only made it), or a TemplateError."""
    state = _Render(compiled, data, deadline)
    token = _STATE.set(state)
    try:
        output = compiled.template.render(_Context(data, autoescape=compiled.part == "html"))
    except Exception as err:
        failure = state.fail(_render_error(err, compiled.part))
        if failure.line is None:  # the node that raised, as Django's debug mode records it
            failure.at_line((getattr(err, "template_debug", None) or {}).get("line"))
        raise failure from (None if failure is err else err)
    finally:
        _STATE.reset(token)
    if state.failure is not None:  # swallowed on the way (an {% if %} operator)
        raise state.failure
    if len(output) > state.max_chars // 4 and len(output.encode("utf-8")) > state.max_chars:
        raise state.over_size()
    return str(output)


def _render_error(err: Exception, part: str) -> TemplateError:
    if isinstance(err, TemplateError):
        return err
    if isinstance(err, RecursionError):
        return TemplateRenderError("The data or the tags are nested too deeply to render.", part=part)
    return TemplateRenderError(f"{type(err).__name__}: {err}", part=part)
