"""Stored templates, which the gateway renders itself so that templated mail survives a failover
(docs/templates.md), and the language tags that tell their translations apart."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

# A BCP 47 language tag as templates use them (RFC 5646): a language of 2 or 3 letters, then
# optionally a script (4 letters), a region (2 letters or 3 digits) and variants: `pt`,
# `pt-BR`, `zh-Hant-TW`, `es-419`, `sl-rozaj`. Extensions and private use (`-u-…`, `-x-…`) select
# nothing a template could differ by, and are refused rather than silently ignored.
LANGUAGE_TAG = re.compile(
    r"(?P<language>[a-z]{2,3})(?:-(?P<script>[a-z]{4}))?(?:-(?P<region>[a-z]{2}|\d{3}))?"
    r"(?P<variants>(?:-(?:[a-z0-9]{5,8}|\d[a-z0-9]{3}))*)",
    re.IGNORECASE | re.ASCII,  # ASCII only: `[a-z]` would otherwise match `İ`, `ſ` and `K` (Kelvin)
)
MAX_LANGUAGE = 35  # the length RFC 5646 asks every implementation to support


def language_tag(value: str) -> str:
    """`value` spelled the canonical way (`PT-br` → `pt-BR`, `zh-hant-tw` → `zh-Hant-TW`), so one
    language is one row; "" (the default language) stays "". ValueError for anything else."""
    value = (value or "").strip().replace("_", "-")
    if not value:
        return ""
    match = LANGUAGE_TAG.fullmatch(value) if len(value) <= MAX_LANGUAGE and value.isascii() else None
    if match is None:
        raise ValueError(
            f"{value[:MAX_LANGUAGE]!r} is not a language tag: use a BCP 47 tag such as en, pt-BR or "
            "zh-Hant-TW, or none for the default language."
        )
    parts = [match["language"].lower()]
    if match["script"]:
        parts.append(match["script"].title())
    if match["region"]:
        parts.append(match["region"].upper())
    parts += [variant.lower() for variant in match["variants"].split("-") if variant]
    tag = "-".join(parts)
    if len(tag) > MAX_LANGUAGE:  # the column's length; ASCII keeps it the input's, checked anyway
        raise ValueError(f"A language tag has at most {MAX_LANGUAGE} characters.")
    return tag


def language_fallbacks(tag: str) -> list[str]:
    """The languages a request for `tag` is served from, best first: the tag, then the tag with
    its last subtag dropped, and so on (`zh-Hant-TW`, `zh-Hant`, `zh`), then the default ""
    (RFC 4647's lookup)."""
    parts = tag.split("-") if tag else []
    return ["-".join(parts[:end]) for end in range(len(parts), 0, -1)] + [""]


def validate_language(value: str) -> None:
    """The model field's validator (forms, full_clean): the tag as language_tag reads it."""
    try:
        language_tag(value)
    except ValueError as err:
        raise ValidationError(str(err), code="invalid_language") from err


class Template(models.Model):
    """One template in one language: a subject, a text and an HTML part (at least one of the two,
    which the services check) in the gateway's template language (mailservice/templating.py).

    `version` starts at 1 and grows by one with every change, so a message can say which content
    it was rendered from."""

    name = models.SlugField(max_length=100)
    # A canonical BCP 47 tag (language_tag), or "" for the default language every lookup ends at.
    language = models.CharField(
        max_length=MAX_LANGUAGE, blank=True, default="", validators=[validate_language]
    )
    subject = models.TextField(blank=True, default="")
    text = models.TextField(blank=True, default="")
    html = models.TextField(blank=True, default="")
    description = models.TextField(blank=True, default="")
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "language"]
        constraints = [
            models.UniqueConstraint(fields=["name", "language"], name="mailservice_template_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.language or 'default'}) v{self.version}"
