"""A rendered HTML part made ready for mail clients, and the text part of an HTML-only template
(docs/templates.md, "Email-ready output")."""

from __future__ import annotations

import re

import css_inline
import inscriptis
from inscriptis.model.config import ParserConfig

from mailservice.exceptions import TemplateRenderError

STYLE_TAG = re.compile(r"<style[\s>]", re.IGNORECASE)


def inline_css(html: str) -> str:
    """`html` with its `<style>` rules moved into style attributes, which mail clients that drop
    `<style>` (Outlook, many webmails) still apply; at-rules (`@media`) stay in a `<style>` for
    the clients that read them, and `<link>` tags stay for the client to follow. No stylesheet is
    loaded: with remote loading on, css-inline would read a `<link>`'s target, a local file
    included. HTML without a `<style>` is left exactly as it is."""
    if not STYLE_TAG.search(html):
        return html
    inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_link_tags=True, keep_at_rules=True)
    try:
        return inliner.inline(html)
    except css_inline.InlineError as err:
        raise TemplateRenderError(f"The CSS could not be inlined: {err}", part="html") from err


# Links as `[text](url)`, images as `[alt]`: a reader without HTML still has every address.
TEXT_CONFIG = ParserConfig(display_links=True, display_images=True)
EMPTY_LINK = re.compile(r"\[\]\([^)\s]*\)")  # a link around an image with no alt text
BLANK_LINES = re.compile(r"\n{3,}")


def html_to_text(html: str) -> str:
    """The text part of an HTML-only template: what the HTML shows (headings, paragraphs, lists,
    tables laid out; elements styled `display: none`, like a preheader, left out), links with
    their addresses. Lines lose the indentation and padding that layout tables give them, and
    runs of blank lines become one, so the text reads as a letter rather than as a grid."""
    if not html.strip():
        return ""
    try:
        text = EMPTY_LINK.sub("", inscriptis.get_text(html, TEXT_CONFIG))
    except Exception as err:  # lxml's parser errors, which no HTML tried so far raises
        raise TemplateRenderError(
            f"No text part could be made from the HTML ({type(err).__name__}); give the template one.",
            part="text",
        ) from err
    text = BLANK_LINES.sub("\n\n", "\n".join(line.strip() for line in text.splitlines())).strip()
    return text + "\n" if text else ""
