"""The gateway's template language, and the email it makes: Django's template syntax in a sandbox,
strict about its variables, bounded in time and size, with CSS inlined and a text part.

Templates are rendered by the gateway, not by a provider, so a templated message survives a
failover like any other (docs/templates.md). The rules, which the tests hold it to:

- **Built-ins only.** Django's built-in tags and filters, nothing else. `{% load %}` is refused,
  and so are tags that would reach outside `template_data`: `{% include %}` and `{% extends %}`
  (a template is complete in itself: no file, no other template), `{% debug %}` (the renderer's
  internals), `{% url %}`, `{% csrf_token %}`, `{% querystring %}` (no request, no URLs),
  `{% lorem %}`. The context holds `template_data` and nothing else (no settings, no request).
- **Every variable is required.** A variable the template uses anywhere (`{{ }}`, `{% if %}`,
  `{% for %}`, `{% with %}`, a filter's argument) that `template_data` lacks is an error naming
  it as `template_data.<path>`; a missing variable never renders as nothing, and never counts as
  false in an `{% if %}`. A `|default` or `|default_if_none` filter in its chain makes it
  optional: a missing optional variable is null, exactly as if template_data held null for it.
  A value that is present and null counts as present. Names bound by `{% for %}` and
  `{% with %}` belong to the template; a missing key under them is named by its place in the
  data (`template_data.orders[2].sku`) where that place is known.
- **Escaping.** HTML-escaped in `html`; `subject` and `text` are plain text, not escaped.
- **Limits.** A source over MAILSERVICE_TEMPLATE_MAX_BYTES, or with more than 10,000 tags and
  variables (engine.MAX_TAGS), is refused when it is saved; a render
  stops when a part's output passes MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES or the parts together
  take longer than MAILSERVICE_TEMPLATE_RENDER_SECONDS, checked as it goes (every loop step,
  every node and filter), so a loop over a loop cannot hold a worker or fill its memory.
- **Email-ready output.** The `<style>` CSS of `html` is inlined (css-inline; no stylesheet is
  ever loaded, neither remote nor local); a template without `text` gets one made from the
  rendered HTML (inscriptis); the rendered subject must be one line, the rule a message's own
  subject follows.

This package is what the services call: `check_source` when a template is saved, `render` for a
message. Its modules: `engine.py` (the sandbox: what a template may use, compiled strict and
metered), `rendering.py` (one part rendered within the limits; where a missing variable is in
the data), `output.py` (CSS inlining and the text part).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mailservice import conf
from mailservice.exceptions import TemplateRenderError, TemplateSourceError
from mailservice.headers import MAX_LINE, control_character
from mailservice.jsonlimits import text_problem
from mailservice.templating.engine import compile_part
from mailservice.templating.output import html_to_text, inline_css
from mailservice.templating.rendering import read_only, render_part

__all__ = ["PARTS", "Rendered", "TemplateSource", "check_source", "html_to_text", "inline_css", "render"]

PARTS = ("subject", "text", "html")


class TemplateSource(Protocol):
    """What render() needs of a template: its three sources (a stored Template is one)."""

    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Rendered:
    """A template rendered for one message, ready to send."""

    subject: str
    text: str
    html: str


def check_source(part: str, source: str) -> None:
    """Refuse, when a template is saved, a source that can never render: TemplateSourceError
    naming the part and, for a syntax error, the line."""
    if part not in PARTS:
        raise ValueError(f"Unknown template part {part!r}; one of {', '.join(PARTS)}.")
    problem = text_problem(source)
    if problem:
        raise TemplateSourceError(problem, part=part)
    size, limit = len(source.encode("utf-8")), conf.template_max_bytes()
    if size > limit:
        raise TemplateSourceError(
            f"At most {limit} bytes (MAILSERVICE_TEMPLATE_MAX_BYTES); got {size}.", part=part
        )
    if part == "subject":
        problem = control_character(source, "in a subject")
        if problem:
            raise TemplateSourceError(problem, part=part, line=1)
    compile_part(part, source, keep=False)  # checking a source does not keep it compiled


def render(template: TemplateSource, data: Mapping[str, Any]) -> Rendered:
    """The message a template makes with `data`: each part rendered (strict variables, limits),
    the HTML's CSS inlined, a text part made from the HTML when the template has none, and a
    subject that is one line. Raises a TemplateError naming the part and, where one is, the line.

    `data` is template_data as parsed from JSON; its size and depth are capped where it is
    accepted (mailservice/jsonlimits.py), not here."""
    deadline = time.monotonic() + conf.template_render_seconds()
    values = read_only(dict(data))
    parts = {}
    for part in PARTS:
        source = getattr(template, part) or ""
        parts[part] = render_part(compile_part(part, source), values, deadline=deadline) if source else ""
    subject = parts["subject"]
    problem = control_character(subject, "in a subject") or (
        f"At most {MAX_LINE} characters; got {len(subject)}." if len(subject) > MAX_LINE else None
    )
    if problem:
        raise TemplateRenderError(f"The rendered subject must be one line. {problem}", part="subject")
    html = inline_css(parts["html"], deadline=deadline) if parts["html"] else ""
    text = parts["text"] if template.text else html_to_text(html, deadline=deadline)
    return Rendered(subject=subject, text=text, html=html)
