"""The admin: messages with their recipients, attempts and events (read-only), retry and cancel
actions; tracking events read-only; suppressions; API keys shown by name and prefix only; stored
templates with a live preview (template_admin.py, registered by its import here); and change
lists that refuse a query string they cannot filter by instead of failing (every registered
ModelAdmin's, guard_changelists)."""

from __future__ import annotations

import functools

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.db import DataError
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from mailservice import template_admin  # noqa: F401  (registers TemplateAdmin)
from mailservice.addresses import AddressError, normalize_email, parse_address
from mailservice.exceptions import MessageStateError
from mailservice.models import ApiKey, DeliveryAttempt, Message, Recipient, Suppression, TrackingEvent
from mailservice.selectors import HEAVY_FIELDS
from mailservice.services.keys import api_keys_revoke
from mailservice.services.messages import message_cancel, message_requeue
from mailservice.services.suppressions import suppression_add, suppressions_remove


class CheckedChangeList(ChangeList):
    """A change list whose query string holds values Django lets through but cannot filter by
    (`?timestamp__year=0`, a year past 9999, an integer past 64 bits, a NUL, the day after
    9999-12-31) answers as Django does for other incorrect lookups, with the list unfiltered
    (`?e=1`), never a 500. Such values fail only when the date hierarchy computes its bounds or
    when the query is built or run, after Django's own checks."""

    def get_filters(self, request: HttpRequest):
        try:
            return super().get_filters(request)
        except OverflowError as err:  # the date hierarchy's bounds; Django catches only ValueError
            raise IncorrectLookupParameters(err) from err

    def get_results(self, request: HttpRequest) -> None:
        # The first statement the list runs: the count, with every filter applied.
        try:
            super().get_results(request)
        except (ValueError, OverflowError, DataError) as err:
            raise IncorrectLookupParameters(err) from err


@functools.cache
def checked_changelist(changelist: type[ChangeList]) -> type[ChangeList]:
    """`changelist` (Django's, or an app's own subclass) with CheckedChangeList's refusals."""
    if issubclass(changelist, CheckedChangeList):
        return changelist
    return type(f"Checked{changelist.__name__}", (CheckedChangeList, changelist), {})


def guard_changelists(site: admin.AdminSite) -> None:
    """Give every ModelAdmin registered on `site` (other apps' too: auth, axes, the task queue)
    CheckedChangeList's refusals. Run once every app's admin has registered
    (MailserviceConfig.ready)."""
    for model_admin in site._registry.values():
        get_changelist = model_admin.get_changelist
        if getattr(get_changelist, "checked", False):
            continue

        def checked(request: HttpRequest, _original=get_changelist, **kwargs) -> type[ChangeList]:
            return checked_changelist(_original(request, **kwargs))

        checked.checked = True
        model_admin.get_changelist = checked


class ViewOnlyAdmin(admin.ModelAdmin):
    """Rows that only services write (the worker, webhooks, the API): the admin shows them and
    runs its actions, which call services, but never saves or deletes one itself."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


# Long text (an ESP's error, a dotted exception class) wraps inside its cell, so a table is never
# wider than the page, and is shown whole.
WRAPPED = '<div style="white-space: pre-wrap; overflow-wrap: anywhere; max-width: 48em;">{}</div>'
LIST_RECIPIENTS = 3  # recipients named in the message list; the rest are counted


def wrapped(text: str) -> str:
    return format_html(WRAPPED, text) if text else "-"


def milliseconds(seconds: float | None) -> str:
    """0.00696 -> "7.0 ms", 1.234 -> "1,234 ms": durations as operators read them."""
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:,.0f} ms"


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class RecipientInline(ReadOnlyInline):
    model = Recipient
    fields = ("kind", "address", "status", "provider_message_id", "error_text", "updated_at")
    readonly_fields = fields

    @admin.display(description="error")
    def error_text(self, obj: Recipient) -> str:
        return wrapped(obj.error)


class AttemptInline(ReadOnlyInline):
    model = DeliveryAttempt
    fields = (
        "round",
        "provider",
        "outcome",
        "status_code",
        "error_class_text",
        "error_text",
        "duration_ms",
        "created_at",
    )
    readonly_fields = fields

    @admin.display(description="error class")
    def error_class_text(self, obj: DeliveryAttempt) -> str:
        return wrapped(obj.error_class)

    @admin.display(description="error")
    def error_text(self, obj: DeliveryAttempt) -> str:
        return wrapped(obj.error)

    @admin.display(description="duration")
    def duration_ms(self, obj: DeliveryAttempt) -> str:
        return milliseconds(obj.duration)


class EventInline(ReadOnlyInline):
    model = TrackingEvent
    fk_name = "message"
    fields = ("provider", "event_type", "timestamp", "recipient", "description_text")
    readonly_fields = fields

    @admin.display(description="description")
    def description_text(self, obj: TrackingEvent) -> str:
        return wrapped(obj.description)


class SuppressionForm(forms.ModelForm):
    class Meta:
        model = Suppression
        fields = ("address", "reason")

    def clean_address(self) -> str:
        try:
            # Normalized here, so the unique check sees the entry the service would find.
            return normalize_email(parse_address(self.cleaned_data["address"]).addr_spec)
        except AddressError as err:
            raise forms.ValidationError(str(err)) from None


@admin.register(Message)
class MessageAdmin(ViewOnlyAdmin):
    list_display = (
        "id",
        "status",
        "recipient_list",
        "subject",
        "provider",
        "attempt_count",
        "possible_duplicate",
        "created_at",
    )
    list_filter = ("status", "provider", "possible_duplicate")
    search_fields = ("id", "subject", "provider_message_id", "recipients__email")
    date_hierarchy = "created_at"
    inlines = (RecipientInline, AttemptInline, EventInline)
    actions = ("retry_messages", "cancel_messages")
    # What the worker writes is shown, never edited: the row is the delivery's source of truth.
    readonly_fields = [field.name for field in Message._meta.fields if field.name not in ("attachments",)]
    exclude = ("attachments",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        queryset = super().get_queryset(request)
        if request.resolver_match and request.resolver_match.url_name.endswith("changelist"):
            queryset = queryset.defer(*HEAVY_FIELDS).prefetch_related(
                Prefetch(
                    "recipients", queryset=Recipient.objects.only("message_id", "kind", "position", "email")
                )
            )
        return queryset

    @admin.display(description="recipients")
    def recipient_list(self, obj: Message) -> str:
        """The first few to, cc and bcc addresses, and how many more."""
        order = {Recipient.Kind.TO: 0, Recipient.Kind.CC: 1, Recipient.Kind.BCC: 2}
        recipients = sorted(obj.recipients.all(), key=lambda r: (order.get(r.kind, 3), r.position))
        emails = [recipient.email for recipient in recipients]
        shown = ", ".join(emails[:LIST_RECIPIENTS])
        more = len(emails) - LIST_RECIPIENTS
        return f"{shown} and {more} more" if more > 0 else (shown or "-")

    def get_readonly_fields(self, request: HttpRequest, obj: Message | None = None):
        return [*self.readonly_fields, "last_error_text"]

    def get_fields(self, request: HttpRequest, obj: Message | None = None):
        # The last error wrapped and whole, in place of the plain field.
        return [
            "last_error_text" if name == "last_error" else name
            for name in super().get_fields(request, obj)
            if name != "last_error_text"
        ]

    @admin.display(description="last error")
    def last_error_text(self, obj: Message) -> str:
        return wrapped(obj.last_error)

    @admin.action(description="Retry the selected messages now")
    def retry_messages(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        self._apply(request, queryset, message_requeue, "queued again")

    @admin.action(description="Cancel the selected messages (queued or deferred only)")
    def cancel_messages(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        # The service DELETE /api/messages/{id} calls too: the message becomes `cancelled`.
        self._apply(request, queryset, message_cancel, "cancelled")

    def _apply(self, request, queryset, action, done: str) -> None:
        succeeded, refused = 0, 0
        for message in queryset:
            try:
                action(message=message)
                succeeded += 1
            except MessageStateError:
                refused += 1
        if succeeded:
            self.message_user(request, f"{succeeded} message(s) {done}.", messages.SUCCESS)
        if refused:
            self.message_user(
                request, f"{refused} message(s) skipped: not in a state that allows it.", messages.WARNING
            )


@admin.register(TrackingEvent)
class TrackingEventAdmin(ViewOnlyAdmin):
    list_display = ("provider", "event_type", "recipient", "timestamp", "message")
    list_filter = ("provider", "event_type")
    search_fields = ("recipient", "event_id", "provider_message_id")
    # By the provider's time of the event; its year, month and day are checked (`?timestamp__year=0`
    # reloads the list unfiltered).
    date_hierarchy = "timestamp"
    raw_id_fields = ("message", "message_recipient")


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    """Entries are added and removed through the same services as the API, so an address typed
    here is validated and normalized like one posted there; an entry is never edited."""

    form = SuppressionForm
    list_display = ("address", "reason", "provider", "created_at")
    list_filter = ("reason", "provider")
    search_fields = ("address",)
    fields = ("address", "reason")

    def has_change_permission(self, request: HttpRequest, obj: Suppression | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Suppression, form, change: bool) -> None:
        saved, _ = suppression_add(address=obj.address, reason=obj.reason)
        obj.pk, obj.address, obj.reason, obj.created_at = (
            saved.pk,
            saved.address,
            saved.reason,
            saved.created_at,
        )

    def delete_model(self, request: HttpRequest, obj: Suppression) -> None:
        suppressions_remove(entries=Suppression.objects.filter(pk=obj.pk), by="admin")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Suppression]) -> None:
        suppressions_remove(entries=queryset, by="admin")


@admin.register(ApiKey)
class ApiKeyAdmin(ViewOnlyAdmin):
    """Keys are created with `manage.py create_api_key` (the only time the key is shown); the
    admin can revoke them. The hash is never displayed."""

    # expires_at: the end of a rotation's grace period (docs/deployment.md, "Rotation without downtime").
    fields = (
        "name",
        "masked",
        "scopes",
        "sender_domains",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    list_display = fields
    list_filter = ("revoked_at", "scopes")
    search_fields = ("name", "prefix")
    readonly_fields = fields
    actions = ("revoke",)

    @admin.display(description="key")
    def masked(self, obj: ApiKey) -> str:
        return f"{obj.prefix}…"

    @admin.display(description="sender domains")
    def sender_domains(self, obj: ApiKey) -> str:
        return ", ".join(obj.from_domain_list) or "any"

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = api_keys_revoke(keys=queryset)
        self.message_user(request, f"{count} key(s) revoked.", messages.SUCCESS)
