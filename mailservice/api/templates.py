"""POST/GET /api/templates, GET/PUT/DELETE /api/templates/{name}?language=, and
POST /api/templates/{name}/render, the preview of what a message would send (docs/templates.md,
"The API")."""

# No `from __future__ import annotations` here: ninja reads the paginated views' annotations
# through @paginate's wrapper, whose module cannot resolve names given as strings.
from django.http import HttpRequest, HttpResponse
from ninja import Path, Query, Router, Status
from ninja.pagination import paginate

from mailservice import selectors
from mailservice.api.auth import ApiKeyAuth
from mailservice.api.pagination import Pagination
from mailservice.exceptions import FieldError, NotFound, TemplateNotFound
from mailservice.schemas import (
    ErrorsOut,
    TemplateFilters,
    TemplateIn,
    TemplateOut,
    TemplatePreviewOut,
    TemplateRenderIn,
    TemplateSummaryOut,
    TemplateUpdateIn,
)
from mailservice.services.templates import template_create, template_delete, template_render, template_update
from mailservice.validation import check_template_data

router = Router(tags=["templates"])
ERRORS = dict.fromkeys((400, 401, 403, 404, 409, 413, 422, 429), ErrorsOut)
# Reading templates needs `read` (or `manage`), changing them `manage`, and a preview what sending
# or reading does (docs/api.md, "Authentication").
READ = ApiKeyAuth("read", "manage")
MANAGE = ApiKeyAuth("manage")
PREVIEW = ApiKeyAuth("send", "read", "manage")
ONE_TEMPLATE = "/templates/{name}"
# The examples address the template POST /api/templates's example creates (the docs' "Try it out").
NAME = Path(..., description="The template's name.", example="welcome")
LANGUAGE = Query(
    "",
    description="The template's language, exactly: a BCP 47 tag, or empty for the default language.",
    example="pt-BR",
)


def not_found(name: str, language: str) -> NotFound:
    """404 for the routes that address one template exactly (no language fallback)."""
    which = f"in language {language!r}" if language else "in the default language"
    return NotFound([FieldError(None, f"No template named {name!r} {which}.")])


@router.post(
    "/templates",
    response={201: TemplateOut, **ERRORS},
    url_name="template_create",
    auth=MANAGE,
    summary="Store a template (version 1)",
    description="409 when the name has a template in this language already. A source that does not "
    "compile answers 422 naming the part and the line.",
)
def create_template(request: HttpRequest, payload: TemplateIn):
    return Status(201, template_create(**payload.model_dump()))


@router.get(
    "/templates",
    response={200: list[TemplateSummaryOut], **ERRORS},
    url_name="template_list",
    auth=READ,
    summary="Templates by name and language, paginated (without their sources)",
)
@paginate(Pagination)
def list_templates(request: HttpRequest, filters: Query[TemplateFilters]):
    return selectors.template_list(**filters.model_dump())


@router.get(
    ONE_TEMPLATE,
    response={200: TemplateOut, **ERRORS},
    url_name="template_get",
    auth=READ,
    summary="A template in one language",
)
def get_template(request: HttpRequest, name: str = NAME, language: str = LANGUAGE):
    template = selectors.template_get(name=name, language=language)
    if template is None:
        raise not_found(name, language)
    return template


@router.put(
    ONE_TEMPLATE,
    response={200: TemplateOut, **ERRORS},
    url_name="template_update",
    auth=MANAGE,
    summary="Change a template's fields (a new version)",
    description="The fields given change; those left out keep their value. A change makes the next "
    "version; giving every field as it is changes nothing.",
)
def update_template(
    request: HttpRequest, payload: TemplateUpdateIn, name: str = NAME, language: str = LANGUAGE
):
    try:
        return template_update(name=name, language=language, **payload.model_dump())
    except TemplateNotFound:
        raise not_found(name, language) from None


@router.delete(
    ONE_TEMPLATE,
    response={204: None, **ERRORS},
    url_name="template_delete",
    auth=MANAGE,
    summary="Delete a template in one language (its other languages stay)",
)
def delete_template(request: HttpRequest, name: str = NAME, language: str = LANGUAGE):
    try:
        template_delete(name=name, language=language)
    except TemplateNotFound:
        raise not_found(name, language) from None
    return HttpResponse(status=204)


@router.post(
    ONE_TEMPLATE + "/render",
    response={200: TemplatePreviewOut, **ERRORS},
    url_name="template_render",
    auth=PREVIEW,
    summary="Preview: what a message with this template and data would send",
    description="The template a message asking for `language` gets (that tag, else its shorter forms, "
    "else the default language), rendered with `data` as the message's `template_data`. A "
    "variable the data lacks answers 422 on `template_data.<name>`, as the message would.",
)
def render_template(request: HttpRequest, payload: TemplateRenderIn, name: str = NAME):
    check_template_data(payload.data)
    try:
        return template_render(name=name, language=payload.language, data=payload.data)
    except TemplateNotFound as err:  # in the language asked for and each fallback
        raise NotFound([FieldError(None, str(err))]) from None
