"""The admin of stored templates (docs/templates.md, "The admin"): a list by name and language; a
form whose sources are checked as the API checks them, each problem shown on its field with its
line, and saved through services/templates.py (so each change is a version); and a live preview
of the unsaved sources with sample data, rendered by the preview view below and shown by
static/mailservice/template_preview.js. Registered by importing this module from admin.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.utils.text import Truncator
from django.views.decorators.http import require_POST

from mailservice.exceptions import FieldError, RequestRejected, TemplateError, TemplateNotFound
from mailservice.jsonlimits import cap_problem, field_caps
from mailservice.models import Template
from mailservice.services.templates import (
    MAX_DESCRIPTION,
    template_content_check,
    template_create,
    template_delete,
    template_identity,
    template_update,
)
from mailservice.templating import PARTS, check_source, render

CONTENT = ("description", *PARTS)  # what a change may set; name and language identify the template
# The sample data's field in the preview's answers: it is what a message sends as template_data,
# and a missing variable is named by its path there, as the API names it.
SAMPLE_FIELD = "template_data"


class SourceField(forms.CharField):
    """A source as typed, without the carriage returns browsers add to every line break of a
    textarea they post: a template saved unchanged stays the same version, and its lines are
    the lines the API stored."""

    def __init__(self, **kwargs: Any):
        super().__init__(strip=False, required=False, **kwargs)

    def to_python(self, value: Any) -> str:
        return super().to_python(value).replace("\r\n", "\n").replace("\r", "\n")


def source_area(rows: int) -> forms.Textarea:
    return forms.Textarea(attrs={"rows": rows, "class": "template-source", "spellcheck": "false"})


class TemplateForm(forms.ModelForm):
    """The fields of a template, checked by the core's own functions before anything is saved, so
    every problem the service would refuse shows on the field at fault (a syntax error with its
    line: ``Line 2 of `html`: …``)."""

    subject = SourceField(widget=forms.TextInput(attrs={"class": "vLargeTextField template-source"}))
    text = SourceField(widget=source_area(12))
    html = SourceField(label="HTML", widget=source_area(24))
    description = SourceField(max_length=MAX_DESCRIPTION, widget=forms.Textarea(attrs={"rows": 2}))

    class Meta:
        model = Template
        fields = ("name", "language", *CONTENT)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "name" in self.fields and "name" in cleaned and "language" in cleaned:
            # The stored spelling (`PT_br` is `pt-BR`) before Django checks that the pair is free.
            try:
                cleaned["name"], cleaned["language"] = template_identity(
                    name=cleaned["name"], language=cleaned["language"]
                )
            except RequestRejected as err:
                self.add_rejection(err)
        content = {field: cleaned.get(field) or "" for field in CONTENT}
        try:
            template_content_check(**content)
        except RequestRejected as err:
            self.add_rejection(err)
        return cleaned

    def add_rejection(self, err: RequestRejected) -> None:
        """The core's field errors on the form's fields (on the form when no field matches)."""
        for error in err.errors:
            self.add_error(error.field if error.field in self.fields else None, error.message)


class LanguageFilter(admin.SimpleListFilter):
    """The languages stored, the default one by that name rather than as an empty link."""

    title = "language"
    parameter_name = "language"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        languages = Template.objects.order_by("language").values_list("language", flat=True).distinct()
        return [(language, language or "default") for language in languages]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Template]) -> QuerySet[Template]:
        value = self.value()
        return queryset if value is None else queryset.filter(language=value)


@dataclass(frozen=True)
class Unsaved:
    """A template's sources as the form holds them, for render()."""

    subject: str
    text: str
    html: str


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    """Templates are written through the same services as the API: created at version 1, each
    change a new version, deleted by name and language. Name and language identify a template
    (the API's URLs name them), so they are set once, when it is added."""

    form = TemplateForm
    list_display = ("name", "language_name", "version", "updated_at", "short_description")
    list_filter = (LanguageFilter,)
    search_fields = ("name",)
    # The preview pane, its script and style: templates/admin/mailservice/template/change_form.html.
    change_form_template = "admin/mailservice/template/change_form.html"

    def get_fieldsets(self, request: HttpRequest, obj: Template | None = None):
        if obj is None:
            identity = ("name", "language", "description")
        else:
            identity = ("name", "language_name", "description", ("version", "updated_at"))
        return [(None, {"fields": identity}), ("Content", {"fields": PARTS})]

    def get_readonly_fields(self, request: HttpRequest, obj: Template | None = None):
        return ("name", "language_name", "version", "updated_at") if obj is not None else ()

    @admin.display(description="language", ordering="language")
    def language_name(self, obj: Template) -> str:
        return obj.language or "default"

    @admin.display(description="description")
    def short_description(self, obj: Template) -> str:
        return Truncator(obj.description).chars(80)

    def save_model(self, request: HttpRequest, obj: Template, form: TemplateForm, change: bool) -> None:
        # The form has run every check the services run; a service error left here is a race
        # (the same template added, or deleted, by someone else since) and fails the request.
        content = {field: form.cleaned_data[field] for field in CONTENT}
        if change:
            saved = template_update(name=obj.name, language=obj.language, **content)
        else:
            saved = template_create(name=obj.name, language=obj.language, **content)
        for field in Template._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))

    def delete_model(self, request: HttpRequest, obj: Template) -> None:
        self.delete_queryset(request, Template.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Template]) -> None:
        for name, language in queryset.values_list("name", "language"):
            try:
                template_delete(name=name, language=language)
            except TemplateNotFound:
                pass  # deleted by someone else meanwhile: what was asked for is done

    def get_urls(self):
        opts = self.model._meta
        preview = self.admin_site.admin_view(require_POST(self.preview_view))
        return [
            path("preview/", preview, name=f"{opts.app_label}_{opts.model_name}_preview"),
            *super().get_urls(),
        ]

    def preview_view(self, request: HttpRequest) -> JsonResponse:
        """The unsaved sources posted by the form's script, rendered with its sample data: JSON
        `{"subject", "text", "html"}`, or `{"errors": [{"field", "message"}]}` with the messages
        the API gives. Writes nothing; for those who may add or change templates."""
        if not (self.has_add_permission(request) or self.has_change_permission(request)):
            raise PermissionDenied
        typed = SourceField().clean
        sources = Unsaved(**{part: typed(request.POST.get(part, "")) for part in PARTS})
        return JsonResponse(preview(sources, request.POST.get(SAMPLE_FIELD, "")))


def preview(template: Unsaved, sample: str) -> dict[str, Any]:
    """What `template` makes with the JSON `sample` as its template_data: the problems of every
    source and of the sample at once, else the render's first one, else the three parts."""
    errors = [error for part in PARTS for error in source_errors(part, getattr(template, part))]
    data, problem = sample_data(sample)
    if problem:
        errors.append(FieldError(SAMPLE_FIELD, problem))
    if not errors:
        try:
            rendered = render(template, data)
        except TemplateError as err:
            errors = err.errors
        else:
            return {"subject": rendered.subject, "text": rendered.text, "html": rendered.html}
    return {"errors": [error.as_dict() for error in errors]}


def source_errors(part: str, source: str) -> list[FieldError]:
    try:
        if source:
            check_source(part, source)
    except TemplateError as err:
        return err.errors
    return []


def sample_data(sample: str) -> tuple[dict[str, Any], str | None]:
    """The sample as template_data (an empty one for nothing typed), or why it cannot be: not
    JSON, not an object, or over the caps the API puts on template_data."""
    if not sample.strip():
        return {}, None
    try:
        data = json.loads(sample)
    except ValueError as err:
        return {}, f"Not JSON: {err}."
    except RecursionError:  # nesting far deeper than the caps allow
        return {}, "Nested too deep."
    if not isinstance(data, dict):
        return {}, 'Sample data is a JSON object: {"first_name": "Ana"}.'
    return data, cap_problem(data, field_caps(SAMPLE_FIELD), SAMPLE_FIELD)
