"""Rendering one compiled part: the data as a template sees it (read-only), the limits a render
is held to as it goes, and where in template_data a missing variable is (docs/templates.md).

`_Render` is the meter the sandbox's expressions and nodes report to (templating/engine.py): it
counts output, checks the clock, and keeps the first error, so that an error Django swallows on
the way (an `{% if %}` operator turns any exception into False) still fails the render.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from django.template import Context, TemplateSyntaxError
from django.template.base import FilterExpression
from django.template.context import BaseContext

from mailservice import conf
from mailservice.exceptions import (
    TemplateError,
    TemplateLimitExceeded,
    TemplateRenderError,
    TemplateVariableMissing,
)
from mailservice.templating.engine import METER, CompiledPart, Meter, Scope
from mailservice.templating.limits import rendered_size, shorten, time_exceeded

MISSING = object()


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


class _Render(Meter):
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
            raise self.fail(time_exceeded(self.part))

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
        if isinstance(value, str):
            if len(value) > self.max_chars:
                raise self.over_size()
        elif isinstance(value, (list, tuple, dict)) and rendered_size(value, self.max_chars) > self.max_chars:
            raise self.over_size()  # counting nested items each time they appear (`a|add:a`)

    def missing(self, expression: FilterExpression, lookups: tuple[str, ...], context: Any) -> TemplateError:
        written = shorten(".".join(lookups))
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


class _Context(Context):
    """Ticks on every loop step ({% for %} sets its variable on each), so an empty loop inside a
    loop is stopped by the time limit too."""

    def __setitem__(self, key: str, value: Any) -> None:
        METER.get().tick()
        super().__setitem__(key, value)

    def update(self, other_dict: Any) -> Any:
        METER.get().tick()
        return super().update(other_dict)


def render_part(compiled: CompiledPart, data: dict, *, deadline: float) -> str:
    """One part rendered with `data` (as read_only made it), or a TemplateError."""
    state = _Render(compiled, data, deadline)
    token = METER.set(state)
    try:
        output = compiled.template.render(_Context(data, autoescape=compiled.part == "html"))
    except Exception as err:
        failure = state.fail(_render_error(err, compiled.part, state))
        if failure.line is None:  # the node that raised, as Django's debug mode records it
            failure.at_line((getattr(err, "template_debug", None) or {}).get("line"))
        raise failure from (None if failure is err else err)
    finally:
        METER.reset(token)
    if state.failure is not None:  # swallowed on the way (an {% if %} operator)
        raise state.failure
    if len(output) > state.max_chars // 4 and len(output.encode("utf-8")) > state.max_chars:
        raise state.over_size()
    return str(output)


# What a tag that raised is told, by the class of what it raised: Python's own message would
# echo the data or the renderer's internals (`combine() argument 1 must be …`).
FAILURES = (
    (RecursionError, "The data or the tags are nested too deeply to render."),
    (ArithmeticError, "A tag could not compute with its values (a division by zero, a number out of range)."),
    ((TypeError, ValueError, KeyError, IndexError, AttributeError),
     "A tag was given a value of a type or form it cannot use."),
)  # fmt: skip


def _render_error(err: Exception, part: str, meter: _Render) -> TemplateError:
    if isinstance(err, TemplateError):
        return err
    if isinstance(err, MemoryError):
        return meter.over_size()
    if isinstance(err, TemplateSyntaxError):  # Django's own words on a tag's arguments
        return TemplateRenderError(shorten(str(err), 300), part=part)
    detail = next((detail for kind, detail in FAILURES if isinstance(err, kind)), None)
    return TemplateRenderError(detail or "A tag failed on this data.", part=part)
