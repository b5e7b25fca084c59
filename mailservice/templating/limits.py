"""The sandbox's limits on what a template asks of a render before it is built (engine.py uses
them; docs/templates.md, "Limits"): the meter a render reports to, the size a value would have
once rendered, filters refusing a result over the output limit that their argument or value
would ask for, and the count of names, filters and arguments in a source's tags.

A check here is an estimate made without building the value: it may refuse a little early,
never after the memory is spent. Output that passes these checks is still counted as it is
written (rendering.py's `_Render.spend`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from decimal import Decimal
from functools import wraps
from itertools import islice
from typing import Any, Protocol

from django.template.base import FilterExpression

from mailservice import conf
from mailservice.exceptions import TemplateLimitExceeded

# Filters whose argument sets the size of their result (`center:1000000000`), `join`, `add` (a
# list added to itself level after level) and `date`/`time` (each format character may become
# a long text): a result over the output limit is refused before the filter builds it.
SIZED_FILTERS = ("add", "center", "ljust", "rjust", "floatformat", "stringformat", "join", "date", "time")
# What one format character of `date`, `time` or `{% now %}` can become at most ("r": an RFC
# 5322 date, 31 characters; "c": ISO 8601, 32).
FORMAT_GROWTH = 32
# Names, literals, filters and arguments in a source's tags and variables (`{% firstof a a … %}`
# is one tag but as many expressions as arguments): each one is an object of Django's.
MAX_TERMS = 10_000
TAG = re.compile(r"{%.*?%}|{{.*?}}", re.DOTALL)  # Django's tag_re, less comments
TERM = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s|:=,"']+""")
QUOTED = re.compile(r"""'([^']{100})[^']+'|"([^"]{100})[^"]+\"""")
STRINGFORMAT_WIDTH = re.compile(r"\d+")


def time_exceeded(part: str) -> TemplateLimitExceeded:
    """The error of a render past MAILSERVICE_TEMPLATE_RENDER_SECONDS, wherever it is noticed: as
    a part renders (rendering.py), or after a stage that cannot be interrupted (output.py)."""
    return TemplateLimitExceeded(
        f"Rendering took longer than {conf.template_render_seconds():g} s "
        "(MAILSERVICE_TEMPLATE_RENDER_SECONDS).",
        part=part,
        limit="MAILSERVICE_TEMPLATE_RENDER_SECONDS",
    )


class Meter(Protocol):
    """What the sandbox reports to while a part renders (templating/rendering.py's `_Render`)."""

    part: str
    max_chars: int

    def tick(self) -> None:
        """One step of work (a resolution, a loop step); raises once the time is up."""

    def spend(self, output: str) -> None:
        """Text a node wrote; raises once the part's output is over its limit."""

    def hold(self, value: Any) -> None:
        """A filter's result or a value a tag stores; raises when it alone would render over the
        output limit."""

    def over_size(self) -> Exception:
        """The error of an output over its limit, to raise."""

    def missing(self, expression: FilterExpression, lookups: tuple[str, ...], context: Any) -> Exception:
        """The error of a variable that is not there, to raise."""


# The render in progress in this thread (or task): set by rendering.render_part.
METER: ContextVar[Meter] = ContextVar("mailservice_template_meter")


def rendered_size(value: Any, limit: int) -> int:
    """About how many characters `value` renders as (a list as its repr, each item counted
    every time it appears, so a list holding one list twice counts it twice), stopping as soon
    as the count passes `limit`. Each item counts at least one, so the walk is bounded too."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 2  # quotes, in a list's repr
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            stack.extend(islice(item.keys(), limit))
            stack.extend(islice(item.values(), limit))
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(item)
            stack.extend(islice(item, limit))
        elif isinstance(item, (bytes, bytearray)):
            total += len(item) + 3
        elif isinstance(item, (bool, int, float, Decimal)) or item is None:
            total += _scalar_size(item)
        else:
            total += 8  # a date, or another object of the sandbox's: short when rendered
    return total


def _scalar_size(value: Any) -> int:
    try:
        return len(str(value))
    except ValueError:  # an int past Python's digit limit for str()
        return 4300


def _number(value: Any) -> int | None:
    """`value` read as an int exactly as the width filters read it (`int(arg)`), or None when
    they could not read it (then the filter fails or does nothing on its own)."""
    try:
        return abs(int(value))
    except (ValueError, TypeError, OverflowError):
        return None


def _floatformat_places(arg: Any) -> int | None:
    """The places `floatformat` would give (Django strips a `g`, `u`, `gu` or `ug` suffix)."""
    if isinstance(arg, str):
        for suffix in ("gu", "ug", "g", "u"):
            if arg.endswith(suffix):
                arg = arg[: -len(suffix)] or -1
                break
    return _number(arg)


def _joined_size(value: Any, separator: Any, limit: int) -> int | None:
    """The length of `separator.join(value)` as `join` would build it, or None when `value` is
    not something join reads (it then returns the value as it is)."""
    sep = rendered_size(str(separator), limit) - 2 if separator is not None else 0
    if isinstance(value, str):
        return len(value) + sep * max(len(value) - 1, 0)
    if isinstance(value, Mapping):
        items: Iterable[Any] = list(islice(value.keys(), limit + 1))
    else:
        try:
            items = list(islice(iter(value), limit + 1))
        except TypeError:
            return None
    total = sep * max(len(items) - 1, 0)
    for item in items:
        total += max(rendered_size(item, limit) - 2, 0)
        if total > limit:
            break
    return total


def _asked_size(name: str, value: Any, args: tuple[Any, ...], limit: int) -> int:
    """The size the filter `name` would build with this value and argument (0: not known to
    be large)."""
    arg = args[0] if args else None
    if name in ("center", "ljust", "rjust"):
        return _number(arg) or 0
    if name == "floatformat":
        return _floatformat_places(arg) or 0 if args else 0
    if name == "stringformat":  # "%" + arg: a width or precision is digits; `*` needs a tuple
        spec = str(arg)
        if "*" in spec:
            return limit + 1
        return max((int(number) for number in STRINGFORMAT_WIDTH.findall(spec)), default=0)
    if name == "join":
        return _joined_size(value, arg, limit) or 0
    if name == "add":
        if isinstance(value, (str, list, tuple)) and isinstance(arg, (str, list, tuple)):
            return rendered_size(value, limit) + rendered_size(arg, limit)
        return 0
    if name in ("date", "time") and isinstance(arg, str):
        return len(arg) * FORMAT_GROWTH
    return 0


def sized(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` refusing, before it runs, a result over the output limit that its argument
    or value would ask for: a width or precision (`center:1000000000`, `center:"3_000_000_000"`
    read as the filter reads it), a join's total length, a list added to a list, a long format."""

    @wraps(function)  # keeps Django's flags (is_safe, needs_autoescape) and signature
    def sized_filter(value: Any, *args: Any, **kwargs: Any) -> Any:
        state = METER.get()
        if _asked_size(name, value, args, state.max_chars) > state.max_chars:
            raise state.over_size()
        return function(value, *args, **kwargs)

    return sized_filter


def count_terms(source: str) -> int:
    """The names, literals, filters, operators and arguments in the tags and variables of
    `source` (a quoted literal is one), counted without compiling it."""
    return sum(len(TERM.findall(tag[2:-2])) for tag in TAG.findall(source))


def shorten(text: str, limit: int = 100) -> str:
    """`text` as an error quotes it: at most `limit` characters, and each quoted piece of
    source in it (Django's messages quote the token at fault) at most 100."""
    text = QUOTED.sub(lambda match: f"'{match.group(1) or match.group(2)}…'", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
