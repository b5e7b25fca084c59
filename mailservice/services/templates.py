"""Stored templates: saving them (their sources checked once, here, so a stored template always
compiles), changing them (each change a new version), finding the one a message asks for in
its language or the nearest fallback, and rendering it as a message stores it (docs/templates.md)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.validators import slug_re
from django.db import IntegrityError, transaction
from django.utils import timezone

from mailservice.exceptions import (
    FieldError,
    InvalidRequest,
    TemplateConflict,
    TemplateNotFound,
    TemplateSourceError,
)
from mailservice.models import Template
from mailservice.models.templates import language_fallbacks, language_tag
from mailservice.templating import PARTS, check_source, render

logger = logging.getLogger(__name__)

MAX_NAME = 100  # Template.name
MAX_DESCRIPTION = 1_000


def template_create(
    *,
    name: str,
    language: str = "",
    subject: str = "",
    text: str = "",
    html: str = "",
    description: str = "",
) -> Template:
    """Store a new template (version 1); TemplateConflict when `name` has one in this language."""
    name, language = template_identity(name=name, language=language)
    template_content_check(subject=subject, text=text, html=html, description=description)
    try:
        with transaction.atomic():
            template = Template.objects.create(
                name=name, language=language, subject=subject, text=text, html=html, description=description
            )
    except IntegrityError as err:  # the unique (name, language): taken, maybe a moment ago
        raise TemplateConflict(name, language) from err
    logger.info(
        "template created name=%s language=%s",
        name,
        language or "-",
        extra={"template": name, "language": language, "version": template.version},
    )
    return template


def template_update(
    *,
    name: str,
    language: str = "",
    subject: str | None = None,
    text: str | None = None,
    html: str | None = None,
    description: str | None = None,
) -> Template:
    """Change the fields given (None keeps one as it is). A change makes a new version; giving
    every field as it already is changes nothing, not even the version. TemplateNotFound when
    there is no such template (in exactly this language: no fallback)."""
    name, language = template_identity(name=name, language=language)
    given = {"subject": subject, "text": text, "html": html, "description": description}
    given = {field: value for field, value in given.items() if value is not None}
    # A template that is not there is not found before anything is compiled; the sources are
    # checked before the row is locked (compiling a large source takes a while, and on SQLite the
    # transaction holds the database's write lock), and one deleted meanwhile is not found.
    if not Template.objects.filter(name=name, language=language).exists():
        raise TemplateNotFound(name, language)
    _check_content(**given)
    with transaction.atomic():
        template = Template.objects.select_for_update().filter(name=name, language=language).first()
        if template is None:
            raise TemplateNotFound(name, language)
        changed = [field for field, value in given.items() if getattr(template, field) != value]
        if not changed:
            return template
        _check_has_body(given.get("text", template.text), given.get("html", template.html))
        for field in changed:
            setattr(template, field, given[field])
        template.version += 1
        template.updated_at = timezone.now()
        template.save(update_fields=[*changed, "version", "updated_at"])
    logger.info(
        "template changed name=%s language=%s version=%s fields=%s",
        name,
        language or "-",
        template.version,
        ",".join(changed),
        extra={"template": name, "language": language, "version": template.version, "fields": changed},
    )
    return template


def template_delete(*, name: str, language: str = "") -> None:
    """Delete one template in exactly this language (its other languages stay);
    TemplateNotFound when there is none."""
    name, language = template_identity(name=name, language=language)
    deleted, _ = Template.objects.filter(name=name, language=language).delete()
    if not deleted:
        raise TemplateNotFound(name, language)
    logger.info(
        "template deleted name=%s language=%s",
        name,
        language or "-",
        extra={"template": name, "language": language},
    )


def template_resolve(*, name: str, language: str = "") -> Template:
    """The template a message asking for `name` in `language` gets: that language, else each
    shorter form of its tag (`pt-BR` → `pt`), else the default language; one query.
    TemplateNotFound when none of them exists."""
    name, language = template_identity(name=name, language=language)
    candidates = language_fallbacks(language)
    rows = Template.objects.filter(name=name, language__in=candidates)
    found = {template.language: template for template in rows}
    for candidate in candidates:
        if candidate in found:
            return found[candidate]
    available = Template.objects.filter(name=name).values_list("language", flat=True)
    raise TemplateNotFound(name, language, available=list(available))


@dataclass(frozen=True)
class RenderedTemplate:
    """A template rendered for one message: the parts as the message stores and sends them (a
    part left empty is None, as in a message that gives none), and which template made them."""

    subject: str
    text: str | None
    html: str | None
    name: str
    language: str  # of the template used, after any fallback
    version: int

    def reference(self) -> dict[str, Any]:
        """What the message records of its template (Message.template)."""
        return {"name": self.name, "language": self.language, "version": self.version}


def template_render(*, name: str, language: str = "", data: Mapping[str, Any]) -> RenderedTemplate:
    """What a message naming `name` in `language` with `data` as its template_data is made of:
    the template found as template_resolve finds it, rendered. One function for the message and
    its preview, so the preview is what would be sent. TemplateNotFound, InvalidRequest on `name`
    or `language`, or a TemplateError (a variable missing from the data, a render limit)."""
    template = template_resolve(name=name, language=language)
    rendered = render(template, data)
    return RenderedTemplate(
        subject=rendered.subject,
        text=rendered.text or None,
        html=rendered.html or None,
        name=template.name,
        language=template.language,
        version=template.version,
    )


def template_identity(*, name: str, language: str) -> tuple[str, str]:
    """`name` and `language` as stored (the tag's canonical spelling), or InvalidRequest on
    `name` and/or `language`."""
    errors = []
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME or not slug_re.fullmatch(name):
        errors.append(
            FieldError("name", f"A template name is 1 to {MAX_NAME} letters, digits, hyphens or underscores.")
        )
    try:
        language = language_tag(language)
    except ValueError as err:
        errors.append(FieldError("language", str(err)))
    if errors:
        raise InvalidRequest(errors)
    return name, language


def template_content_check(
    *, subject: str = "", text: str = "", html: str = "", description: str = ""
) -> None:
    """A whole template's content as a new one must be: every part compiles within the limits,
    the description fits, and there is a text part, an html part or both. InvalidRequest (a
    TemplateSourceError for the sources, listing every part's problems)."""
    _check_content(subject=subject, text=text, html=html, description=description)
    _check_has_body(text, html)


def _check_content(**fields: str) -> None:
    """Every source given compiles and is within the limits, or the first TemplateSourceError,
    whose `errors` lists the problems of every part at once."""
    problems: list[TemplateSourceError] = []
    for part in PARTS:
        if fields.get(part):
            try:
                check_source(part, fields[part])
            except TemplateSourceError as err:
                problems.append(err)
    if len(fields.get("description") or "") > MAX_DESCRIPTION:
        raise InvalidRequest([FieldError("description", f"At most {MAX_DESCRIPTION} characters.")])
    if problems:
        first = problems[0]
        first.errors = [error for problem in problems for error in problem.errors]
        raise first


def _check_has_body(text: str, html: str) -> None:
    if not text and not html:
        raise InvalidRequest([FieldError("text", "A template needs a text part, an html part, or both.")])
