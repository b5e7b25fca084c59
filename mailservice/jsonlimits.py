"""Limits on JSON (docs/security.md, "Input limits"): the caps of the free-form fields (metadata,
merge and template data), what JSON parses but is not text, and the shape of a whole body,
measured on its bytes before it is parsed.

A JSON body can cost far more than its size suggests: two million metadata keys fit in 26 MB,
and nesting turns two bytes into a list object. So a body is measured before any object is
built: how many values it holds at most, and how deep it nests. Both are read with a few
C-level passes of bytes operations over the body, never a Python loop over its bytes; only the
values that passed are parsed. The caps of each field are then checked on the parsed value,
before pydantic validates its items, by a walk that stops at the first problem.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from mailservice import conf

# Container levels inside one free-form field (the field's own object is level 0): deeper values
# cannot be serialized for every provider (docs/delivery.md, "A message's own errors").
MAX_JSON_DEPTH = 32
# Characters in one key or string value: metadata often travels in headers or form fields of
# the provider's API; merge and template data fill a template (an HTML fragment, an address).
MAX_METADATA_STRING = 1_000
MAX_MERGE_DATA_STRING = 100_000

# A lone UTF-16 surrogate (JSON allows the escape "\ud800") is not text: it cannot be encoded.
SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class JsonCaps:
    """The caps of one free-form JSON field."""

    bytes: int  # the field as compact UTF-8 JSON
    keys: int  # object keys and list items, at every level together
    depth: int  # container levels inside the field
    string: int  # characters in one key or string value


def metadata_caps() -> JsonCaps:
    return JsonCaps(conf.max_metadata_bytes(), conf.max_metadata_keys(), MAX_JSON_DEPTH, MAX_METADATA_STRING)


def merge_data_caps() -> JsonCaps:
    return JsonCaps(
        conf.max_merge_data_bytes(), conf.max_merge_data_keys(), MAX_JSON_DEPTH, MAX_MERGE_DATA_STRING
    )


# Every free-form JSON field of a message and its caps, each field capped on its own. A new one
# (template_data) is capped by annotating it with schemas.requests.capped_json("<name>").
FREE_FORM_FIELDS: dict[str, Callable[[], JsonCaps]] = {
    "metadata": metadata_caps,
    "merge_data": merge_data_caps,
    "merge_global_data": merge_data_caps,
    "template_data": merge_data_caps,
}


def field_caps(name: str) -> JsonCaps:
    return FREE_FORM_FIELDS[name]()


def text_problem(value: str) -> str | None:
    """Why a parsed JSON string is not storable text (NUL, a lone surrogate), or None."""
    if "\x00" in value:
        return "The NUL character (U+0000) is not allowed."
    if value.isascii():
        return None
    match = SURROGATE.search(value)
    if match:
        return f"A lone UTF-16 surrogate (U+{ord(match.group()):04X}) is not text; send valid Unicode."
    return None


def cap_problem(value: Any, caps: JsonCaps, path: str) -> str | None:
    """Why the parsed `value` of the field at `path` is over `caps`, or None.

    Keys and list items are counted as they are met and the walk stops at the first problem, so
    a value far over the caps costs no more than one at them; the size as JSON is measured only
    for a value within the other caps. Walked without recursion."""
    if isinstance(value, (dict, list)) and len(value) > caps.keys:
        return f"At most {caps.keys} keys and list items, at every level together; got {len(value)}."
    keys = characters = 0
    stack: list[tuple[Any, int, str]] = [(value, 0, path)]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, str):
            if len(item) > caps.string:
                return f"At most {caps.string} characters in a string; {where} has {len(item)}."
            characters += len(item)
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > caps.depth:
            return f"Nested more than {caps.depth} levels deep."
        keys += len(item)
        if keys > caps.keys:
            return f"At most {caps.keys} keys and list items, at every level together; got more."
        if isinstance(item, dict):
            for key, child in item.items():
                key = str(key)
                if len(key) > caps.string:
                    return f"At most {caps.string} characters in a key; a key of {where} has {len(key)}."
                characters += len(key)
                stack.append((child, depth + 1, f"{where}.{key}"))
        else:
            stack.extend((child, depth + 1, f"{where}[{index}]") for index, child in enumerate(item))
    if characters > caps.bytes:  # every character is at least a byte
        return f"At most {caps.bytes} bytes as JSON; got more."
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    if size > caps.bytes:
        return f"At most {caps.bytes} bytes as JSON; got {size}."
    return None


# The characters of a body's structure: brackets and commas outside strings, and the quotes that
# say which are outside.
_NOT_STRUCTURE = bytes(byte for byte in range(256) if byte not in b'"[]{},')
_NOT_KEY_STRUCTURE = bytes(byte for byte in range(256) if byte not in b"[]{}:")
# Openers as +1 and closers as -1 (signed bytes), commas dropped: the running sum is the depth.
_DEPTH_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")


@dataclass(frozen=True)
class BodyShape:
    balanced: bool  # as many closing brackets of each kind as opening ones; else not JSON
    values: int  # JSON values in the body, counted from above: commas + objects + lists + 1
    depth: int  # the deepest nesting, the body's own object or list being level 1


def _unescaped(raw: bytes) -> bytes:
    # Escaped backslashes first, then escaped quotes: every quote left opens or closes a string.
    return raw.replace(b"\\\\", b"").replace(b'\\"', b"")


def _outside_strings(raw: bytes) -> bytes:
    """The body's brackets and commas outside strings, in order. In the usual body no string
    holds a bracket or a comma: each string is then an adjacent pair of quotes once everything
    else is dropped, and a replace removes them all; otherwise the strings are split out."""
    kept = _unescaped(raw).translate(None, _NOT_STRUCTURE)
    outside = kept.replace(b'""', b"")
    if b'"' in outside:
        outside = b"".join(kept.split(b'"')[0::2])
    return outside


def body_shape(raw: bytes, *, max_values: int) -> BodyShape:
    """Whether the brackets of a JSON body balance, how many values it holds and how deep it
    nests, measured on its bytes. The depth is measured only for a balanced body within
    `max_values` (else it is reported as 0), which bounds its cost: a body of brackets alone
    would make it the costliest pass."""
    outside = _outside_strings(raw)
    lists, objects = outside.count(b"["), outside.count(b"{")
    balanced = lists == outside.count(b"]") and objects == outside.count(b"}")
    values = outside.count(b",") + lists + objects + 1
    if not balanced or values > max_values:
        return BodyShape(balanced, values, 0)
    steps = memoryview(outside.translate(_DEPTH_STEPS, b",")).cast("b")
    return BodyShape(balanced, values, max(accumulate(steps), default=0))


def deepest_member(raw: bytes, max_depth: int) -> str | None:
    """The top-level key of the body's object whose value first nests deeper than `max_depth`
    levels (the body's own object being level 1), or None. A Python walk over the structure, for
    a body already known to be too deep and within the values limit, which bounds its cost."""
    parts = _unescaped(raw).split(b'"')
    depth, last_string, member = 0, b"", None
    for index, part in enumerate(parts):
        if index % 2:  # inside a string
            last_string = part
            continue
        for char in part.translate(None, _NOT_KEY_STRUCTURE):
            if char == ord(":"):
                if depth == 1:
                    member = last_string
            elif char in b"[{":
                depth += 1
                if depth > max_depth:
                    return None if member is None else _key_text(member)
            else:
                depth -= 1
    return None


def _key_text(key: bytes) -> str:
    try:
        return str(json.loads(b'"' + key + b'"'))
    except ValueError:
        return key.decode("utf-8", "replace")
