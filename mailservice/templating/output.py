"""A rendered HTML part made ready for mail clients, and the text part of an HTML-only template
(docs/templates.md, "Email-ready output")."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import css_inline
import inscriptis
from inscriptis.model.config import ParserConfig

from mailservice import conf
from mailservice.exceptions import TemplateLimitExceeded, TemplateRenderError
from mailservice.templating.limits import time_exceeded

# What inlining and text conversion may be given (docs/templates.md, "Limits"). css-inline and
# the parser under it recurse once per level of nesting and overflow the stack (the process
# dies) somewhere past 10,000 levels; mail layouts nest 20 to 40. Inlining costs about each
# declaration times each element it could apply to (2,000 declarations over 1,000 elements took
# 1.9 s and wrote 20 MB), and matching costs each selector's length times each element. The
# realistic 20 KB receipt layout (tests/templates/fixtures.py) rendered: 18 levels, ~200
# elements, 7,883 characters of `<style>`, ~350 declarations.
MAX_DEPTH = 200
MAX_STYLE_CHARS = 64 * 1024
MAX_DECLARATIONS_X_ELEMENTS = 2_000_000
MAX_STYLE_CHARS_X_ELEMENTS = 500_000_000
# Text conversion (inscriptis) took 2.46 s on a 300×300 table; 20,000 elements is about 0.2 s.
MAX_TEXT_ELEMENTS = 20_000

_WS = "\t\n\f\r "
# One piece of markup as the HTML tokenizer (WHATWG, which css-inline's html5ever follows) reads
# it, so that a quote in an attribute name or a `<!--` in a <style> cannot hide tags from the
# count: a comment, a doctype or bogus comment, or a start or end tag with its attributes (a
# quoted value may hold `>`). Atomic groups: a tag that never closes costs one pass, no more.
MARKUP = re.compile(
    r"<(?:"
    r"!--(?:-?>|.*?(?:--!?>|\Z))"  # a comment; `<!-->` and `<!--->` are empty ones
    r"|[!?][^>]*(?:>|\Z)"  # a doctype, a bogus comment (`<![CDATA[` outside SVG and MathML)
    r"|/(?![A-Za-z])[^>]*(?:>|\Z)"  # `</>`, `</ …>`: nothing, a bogus comment
    rf"|(?P<end>/)?(?P<name>[A-Za-z][^{_WS}/>]*)"
    rf"(?P<attrs>(?>[{_WS}/]+|[^{_WS}/>][^{_WS}/>=]*"
    rf"(?>[{_WS}]*=[{_WS}]*(?>\"[^\"]*(?:\"|\Z)|'[^']*(?:'|\Z)|[^{_WS}>]*))?)*)"
    r"(?:>|\Z)"
    r")",
    re.DOTALL,
)
VOID = frozenset(
    "area base basefont bgsound br col embed frame hr image img input keygen link meta param source "
    "track wbr".split()
)
RAW_TEXT = frozenset("iframe noembed noframes noscript script style textarea title xmp".split())
FORMATTING = frozenset("a b big code em font i nobr s small strike strong tt u".split())
FOREIGN = frozenset(("svg", "math"))
INTEGRATION = frozenset(("foreignobject", "desc", "title", "mi", "mo", "mn", "ms", "mtext", "annotation-xml"))
BREAKOUT = frozenset(
    "b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 head hr i img li "
    "listing menu meta nobr ol p pre ruby s small span strong strike sub sup table tt u ul var".split()
)
# A start tag that closes an open element of its group, looking down the stack no further than
# the first of `stop`: `<li>` an open `<li>` in the same list, `<td>` an open cell of its table.
_TABLE = frozenset(("table",))
IMPLIED_CLOSE = {
    "li": (frozenset(("li",)), frozenset(("ul", "ol", "menu"))),
    "dt": (frozenset(("dt", "dd")), frozenset(("dl",))),
    "dd": (frozenset(("dt", "dd")), frozenset(("dl",))),
    "p": (frozenset(("p",)), frozenset(("table", "td", "th", "caption", "button", "object", "applet"))),
    "option": (frozenset(("option",)), frozenset(("select", "datalist"))),
    "td": (frozenset(("td", "th")), _TABLE),
    "th": (frozenset(("td", "th")), _TABLE),
    "tr": (frozenset(("tr", "td", "th")), _TABLE),
    "tbody": (frozenset(("thead", "tbody", "tfoot", "tr", "td", "th")), _TABLE),
    "thead": (frozenset(("thead", "tbody", "tfoot", "tr", "td", "th")), _TABLE),
    "tfoot": (frozenset(("thead", "tbody", "tfoot", "tr", "td", "th")), _TABLE),
}
# Elements the parser adds where the HTML leaves them out: a cell's row, a row's table body.
IMPLIED_PARENT = {
    "td": ("tr", frozenset(("tr",))),
    "th": ("tr", frozenset(("tr",))),
    "tr": ("tbody", frozenset(("tbody", "thead", "tfoot"))),
    "col": ("colgroup", frozenset(("colgroup",))),
}


@dataclass(frozen=True)
class Shape:
    """What inlining and text conversion will cost, read from the HTML in one pass: `depth`, the
    deepest nesting of elements; `elements`, how many; `style_chars`, the text of the `<style>`
    blocks; `declarations` in them, roughly (each `;` or `}`)."""

    depth: int
    elements: int
    style_chars: int
    declarations: int


def _pop_to(stack: list[str], foreign: list[bool], index: int) -> None:
    """Close stack[index] and what is open inside it. Formatting elements (`<b>`, `<a>`…) closed
    on the way stay counted: the parser reopens them in what follows."""
    reopened = [i for i in range(index + 1, len(stack)) if stack[i] in FORMATTING]
    names, flags = [stack[i] for i in reopened], [foreign[i] for i in reopened]
    del stack[index:], foreign[index:]
    stack += names
    foreign += flags


def _find(stack: list[str], names: frozenset[str], stop: frozenset[str]) -> int:
    if names.isdisjoint(stack):
        return -1
    for index in range(len(stack) - 1, -1, -1):
        if stack[index] in names:
            return index
        if stack[index] in stop:
            break
    return -1


def html_shape(html: str, max_depth: int) -> Shape:
    """The Shape of `html`, read the way an HTML parser builds its tree (implied table rows and
    bodies, cells and list items that close the one before, formatting elements reopened, SVG and
    MathML, raw text in `<style>` and `<script>`), counting an element more than the parser
    would rather than fewer. Reading stops past `max_depth` levels (the depth is then
    max_depth + 1): the HTML is refused anyway, and nothing deeper need be counted."""
    stack: list[str] = []
    foreign: list[bool] = []  # whether each open element's content is SVG or MathML
    depth = elements = 0
    style: list[str] = []
    pos, size = 0, len(html)
    while pos < size and depth <= max_depth:
        match = MARKUP.search(html, pos)
        if match is None:
            break
        pos = match.end()
        tag = match["name"]
        if tag is None:
            continue
        name = tag.lower()
        if match["end"]:
            if name in FORMATTING and stack and stack[-1] != name:
                continue  # misnested: the parser moves it rather than closing what is inside
            index = _find(stack, frozenset((name,)), frozenset())
            if index >= 0:
                _pop_to(stack, foreign, index)
            continue
        elements += 1
        in_foreign = bool(foreign) and foreign[-1]
        if in_foreign and name in BREAKOUT:
            while foreign and foreign[-1]:
                stack.pop()
                foreign.pop()
            in_foreign = False
        if in_foreign:
            if match["attrs"].rstrip().endswith("/"):
                depth = max(depth, len(stack) + 1)
                continue
        elif name in VOID:
            depth = max(depth, len(stack) + 1)
            continue
        else:
            closes = IMPLIED_CLOSE.get(name)
            index = _find(stack, *closes) if closes else -1
            if index >= 0:
                _pop_to(stack, foreign, index)
            parents, implied = [], IMPLIED_PARENT.get(name)
            while implied and (not stack or stack[-1] not in implied[1]) and len(parents) < 2:
                parents.append(implied[0])  # `<td>` in a table: a tbody, then a tr
                implied = IMPLIED_PARENT.get(implied[0])
            stack += reversed(parents)
            foreign += [False] * len(parents)
            elements += len(parents)
        stack.append(name)
        foreign.append(name in FOREIGN or (in_foreign and name not in INTEGRATION))
        depth = max(depth, len(stack))
        if in_foreign:
            continue
        if name == "plaintext":
            break
        if name in RAW_TEXT:
            end = re.compile(rf"</{re.escape(name)}[{_WS}/>]", re.IGNORECASE).search(html, pos)
            text_end = end.start() if end else size
            if name == "style":
                style.append(html[pos:text_end])
            pos = text_end
    css = "".join(style)
    return Shape(depth, elements, len(css), css.count(";") + css.count("}"))


STYLE_TAG = re.compile(r"<style[\s>]", re.IGNORECASE)


def _refuse(part: str, detail: str) -> TemplateRenderError:
    return TemplateRenderError(detail, part=part)


def check_deadline(part: str, deadline: float | None) -> None:
    """A stage that cannot be interrupted (inlining, text conversion) is checked after it: the
    render's time limit, when `deadline` (time.monotonic) has passed."""
    if deadline is not None and time.monotonic() > deadline:
        raise time_exceeded(part)


def check_depth(part: str, shape: Shape) -> None:
    if shape.depth > MAX_DEPTH:
        raise _refuse(part, f"The rendered HTML nests elements more than {MAX_DEPTH} levels deep.")


def inline_css(html: str, *, deadline: float | None = None) -> str:
    """`html` with its `<style>` rules moved into style attributes, which mail clients that drop
    `<style>` (Outlook, many webmails) still apply; at-rules (`@media`) stay in a `<style>` for
    the clients that read them, and `<link>` tags stay for the client to follow. No stylesheet is
    loaded: with remote loading on, css-inline would read a `<link>`'s target, a local file
    included. HTML without a `<style>` is left exactly as it is.

    Refused (TemplateRenderError on `html`) before inlining: nesting deeper than MAX_DEPTH, more
    than MAX_STYLE_CHARS of `<style>`, or more work than the budgets allow; after it, a result
    over MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES, or the render's `deadline` passed."""
    shape = html_shape(html, MAX_DEPTH)
    check_depth("html", shape)
    if not STYLE_TAG.search(html):
        return html
    if shape.style_chars > MAX_STYLE_CHARS:
        raise _refuse(
            "html", f"At most {MAX_STYLE_CHARS} characters of <style> in all; got {shape.style_chars}."
        )
    work = shape.declarations * shape.elements
    if work > MAX_DECLARATIONS_X_ELEMENTS or shape.style_chars * shape.elements > MAX_STYLE_CHARS_X_ELEMENTS:
        raise _refuse(
            "html",
            f"Too much CSS to inline for the number of elements ({shape.declarations} declarations and "
            f"{shape.style_chars} characters of <style> over {shape.elements} elements): use fewer "
            "style rules or fewer elements.",
        )
    inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_link_tags=True, keep_at_rules=True)
    try:
        inlined = inliner.inline(html)
    except css_inline.InlineError as err:
        raise TemplateRenderError(f"The CSS could not be inlined: {err}", part="html") from err
    check_deadline("html", deadline)
    size, limit = len(inlined.encode("utf-8")), conf.template_render_max_bytes()
    if size > limit:
        raise TemplateLimitExceeded(
            f"The HTML with its CSS inlined is over {limit} bytes (MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES).",
            part="html",
            limit="MAILSERVICE_TEMPLATE_RENDER_MAX_BYTES",
        )
    return inlined


# Links as `[text](url)`, images as `[alt]`: a reader without HTML still has every address.
TEXT_CONFIG = ParserConfig(display_links=True, display_images=True)
EMPTY_LINK = re.compile(r"\[\]\([^)\s]*\)")  # a link around an image with no alt text
BLANK_LINES = re.compile(r"\n{3,}")


def html_to_text(html: str, *, deadline: float | None = None) -> str:
    """The text part of an HTML-only template: what the HTML shows (headings, paragraphs, lists,
    tables laid out; elements styled `display: none`, like a preheader, left out), links with
    their addresses. Lines lose the indentation and padding that layout tables give them, and
    runs of blank lines become one, so the text reads as a letter rather than as a grid.

    Refused (TemplateRenderError on `text`, asking for a text part) for HTML nested deeper than
    MAX_DEPTH or with more than MAX_TEXT_ELEMENTS elements; TemplateLimitExceeded when the
    render's `deadline` has passed once the text is made."""
    if not html.strip():
        return ""
    shape = html_shape(html, MAX_DEPTH)
    if shape.depth > MAX_DEPTH or shape.elements > MAX_TEXT_ELEMENTS:
        reason = (
            f"nests elements more than {MAX_DEPTH} levels deep"
            if shape.depth > MAX_DEPTH
            else f"has more than {MAX_TEXT_ELEMENTS} elements ({shape.elements})"
        )
        raise _refuse("text", f"No text part is made from HTML that {reason}; give the template a text part.")
    try:
        text = EMPTY_LINK.sub("", inscriptis.get_text(html, TEXT_CONFIG))
    except Exception as err:  # lxml's parser errors, which no HTML tried so far raises
        raise TemplateRenderError(
            f"No text part could be made from the HTML ({type(err).__name__}); give the template one.",
            part="text",
        ) from err
    check_deadline("text", deadline)
    text = BLANK_LINES.sub("\n\n", "\n".join(line.strip() for line in text.splitlines())).strip()
    return text + "\n" if text else ""
