"""The shapes the JSON API accepts, the first line of validation (docs/api.md): a message, a
suppression, a stored template and its preview, and the lists' filters (their pagination:
api/pagination.py). Semantic checks (addresses, headers, limits, templates) live in
validation.py and the services."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from django.utils import timezone
from ninja import Schema
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, ConfigDict, Field, field_validator

from mailservice import conf
from mailservice.jsonlimits import cap_problem, field_caps, text_problem
from mailservice.models import Suppression
from mailservice.models.templates import language_tag
from mailservice.statuses import MessageStatus

# How many items a request's lists and objects may hold (docs/security.md, "Input limits").
# They are counted before any item is looked at, so a huge list is refused at once and never
# yields one error per item. The recipient lists follow MAILSERVICE_MAX_RECIPIENTS instead.
MAX_ATTACHMENTS = 100
MAX_HEADERS = 100
MAX_TAGS = 100
# Providers in one `template_id` object: more than any chain has.
MAX_TEMPLATE_IDS = 50

# What the database stores: Python's datetimes, in UTC, years 1 to 9999 (a time zone offset can
# push a valid-looking local time past either end). `send_at` keeps a year of room at the end,
# since delivery adds its retry window (MAILSERVICE_MAX_AGE) to it.
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
LATEST_SEND_AT = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def _utc_between(value: datetime, earliest: datetime, latest: datetime) -> datetime:
    """The aware `value` in UTC, or ValueError when there it falls outside [earliest, latest].
    In UTC because PostgreSQL refuses offsets beyond about ±16 h that ISO 8601 allows (±23:59)."""
    try:
        in_utc = value.astimezone(UTC)
    except OverflowError:  # the offset moves it before year 1 or after year 9999
        in_utc = None
    if in_utc is None or not earliest <= in_utc <= latest:
        raise ValueError(
            f"The time must lie between {_utc_text(earliest)} and {_utc_text(latest)} (UTC); "
            f"got {value.isoformat()}."
        )
    return in_utc


def _utc_text(value: datetime) -> str:
    return value.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _schedulable_send_at(value: datetime | None) -> datetime | None:
    """`send_at` in UTC, storable, and at most MAILSERVICE_MAX_SCHEDULE_DAYS ahead: a scheduled
    message keeps its body (attachments included) in the database until then."""
    if value is None:
        return None
    in_utc = _utc_between(value, EARLIEST, LATEST_SEND_AT)
    days = conf.max_schedule_days()
    if days:
        try:
            horizon = timezone.now() + timedelta(days=days)
        except OverflowError:  # a horizon past the year 9999 is no horizon
            return in_utc
        if in_utc > horizon:
            raise ValueError(
                f"At most {days:g} days ahead (MAILSERVICE_MAX_SCHEDULE_DAYS), until {_utc_text(horizon)}; "
                f"got {value.isoformat()}."
            )
    return in_utc


def _text(value: str) -> str:
    """Refuse what JSON parses but is not storable text: NUL, a lone surrogate (`\\ud800`)."""
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _without_nul(value: str | None) -> str | None:
    """NUL cannot be stored or looked up by every database (PostgreSQL refuses it)."""
    if value is not None and "\x00" in value:
        raise ValueError("The NUL character (U+0000) is not allowed.")
    return value


def _at_most(limit: int | Callable[[], int], items: str) -> BeforeValidator:
    """Refuse a list or object with more than `limit` entries before its items are validated."""

    def check(value: Any) -> Any:
        maximum = limit() if callable(limit) else limit
        if isinstance(value, (list, dict)) and len(value) > maximum:
            raise ValueError(f"At most {maximum} {items}; got {len(value)}.")
        return value

    return BeforeValidator(check)


def capped_json(name: str) -> BeforeValidator:
    """The caps of the free-form JSON field `name` (jsonlimits.FREE_FORM_FIELDS: its bytes, keys,
    depth and strings), checked on the value as parsed, before its items are validated."""

    def check(value: Any) -> Any:
        problem = cap_problem(value, field_caps(name), name)
        if problem:
            raise ValueError(problem)
        return value

    return BeforeValidator(check)


def _template_ids(value: Any) -> Any:
    """One error for anything but a string or an object of strings (a union's own errors would
    list one per member), before the object's entries are validated."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise ValueError(
            'An ESP template id (a string), or one per provider: {"sendgrid": "d-…", "mailgun": "…"}.'
        )
    if len(value) > MAX_TEMPLATE_IDS:
        raise ValueError(f"At most {MAX_TEMPLATE_IDS} providers; got {len(value)}.")
    if not all(isinstance(esp_id, str) for esp_id in value.values()):
        raise ValueError("Each provider's template id must be a string.")
    return value


def _one_or_many(value: Any) -> Any:
    """`"a@example.com"` is short for `["a@example.com"]`."""
    return [value] if isinstance(value, str) else value


# Before-validators run last listed first: the list is counted (a single address is one), then
# a single address becomes a list. One list alone over the recipient limit is refused here, at
# once; validation.check_message counts to, cc and bcc together before it parses any address.
RecipientList = Annotated[
    list[str] | None,
    BeforeValidator(_one_or_many),
    _at_most(conf.max_recipients, "recipients in to, cc and bcc together"),
]
AddressList = Annotated[
    list[str] | None, BeforeValidator(_one_or_many), _at_most(conf.max_recipients, "addresses")
]


class AttachmentIn(Schema):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(description="File name shown to the recipient.")
    content: str = Field(description="The file, base64-encoded.")
    mimetype: str | None = Field(None, description="e.g. `application/pdf`; guessed from the name if absent.")
    inline: bool = Field(False, description="Shown inside the HTML body instead of as an attachment.")
    content_id: str | None = Field(
        None, description="For inline parts: the id the HTML refers to as `cid:…`."
    )


# The OpenAPI example of a request body (the docs' "Try it out"): it is accepted as it is
# (tests/hardening/test_hostile_input.py posts it).
MESSAGE_EXAMPLE: dict[str, Any] = {
    "from": "Shop <shop@example.com>",
    "to": ["Jane Doe <jane@example.com>"],
    "cc": ["accounts@example.com"],
    "subject": "Your order",
    "text": "Thanks for your order.",
    "html": '<p>Thanks for your order.</p><img src="cid:logo">',
    "headers": {"X-Campaign": "orders"},
    "attachments": [
        {"filename": "invoice.pdf", "content": "JVBERi0xLjQK", "mimetype": "application/pdf"},
        {
            "filename": "logo.png",
            "content": "iVBORw0KGgo=",
            "mimetype": "image/png",
            "inline": True,
            "content_id": "logo",
        },
    ],
    "tags": ["orders"],
    "metadata": {"order_id": "4711"},
}
SUPPRESSION_EXAMPLE: dict[str, Any] = {"address": "jane@example.com", "reason": "manual"}


class MessageIn(Schema):
    """A message to send. Unknown fields are refused so that typos surface."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=False,
        json_schema_extra={"example": MESSAGE_EXAMPLE, "examples": [MESSAGE_EXAMPLE]},
    )

    from_: str | None = Field(None, alias="from", description="Sender; defaults to DEFAULT_FROM_EMAIL.")
    to: RecipientList = Field(
        None,
        description="One address or a list; `Name <addr>` accepted. At most MAILSERVICE_MAX_RECIPIENTS "
        "(1,000) in to, cc and bcc together.",
    )
    cc: RecipientList = None
    bcc: RecipientList = None
    reply_to: AddressList = None
    subject: str | None = Field(
        None, description="At most 998 characters; no line breaks or other control characters except tab."
    )
    text: str | None = None
    html: str | None = None
    headers: Annotated[
        Annotated[dict[str, str], Field(max_length=MAX_HEADERS)] | None, _at_most(MAX_HEADERS, "headers")
    ] = Field(None, description=f'Extra headers, e.g. `{{"X-Campaign": "spring"}}`; at most {MAX_HEADERS}.')
    attachments: Annotated[
        Annotated[list[AttachmentIn], Field(max_length=MAX_ATTACHMENTS)] | None,
        _at_most(MAX_ATTACHMENTS, "attachments"),
    ] = Field(None, description=f"At most {MAX_ATTACHMENTS}.")
    tags: Annotated[Annotated[list[str], Field(max_length=MAX_TAGS)] | None, _at_most(MAX_TAGS, "tags")] = (
        Field(None, description=f"At most {MAX_TAGS}.")
    )
    metadata: Annotated[dict[str, Any] | None, capped_json("metadata")] = Field(
        None,
        description="Passed to the provider. At most MAILSERVICE_MAX_METADATA_BYTES (10,000) bytes as "
        "JSON, MAILSERVICE_MAX_METADATA_KEYS (100) keys and list items at every level, 32 levels "
        "deep, 1,000 characters per string.",
    )
    template_id: Annotated[str | dict[str, str] | None, BeforeValidator(_template_ids)] = Field(
        None,
        description="A template stored at the ESP (with `merge_data`, `merge_global_data`). A string "
        'only when the chain has one provider; else one id per provider, `{"sendgrid": "d-…", '
        '"mailgun": "welcome"}`: the message then goes only to those providers, each with its id.',
    )
    template: str | None = Field(
        None,
        description="The name of a template stored in the gateway (/api/templates), rendered now with "
        "`template_data`; leave out subject, text and html.",
    )
    template_data: Annotated[dict[str, Any] | None, capped_json("template_data")] = Field(
        None,
        description="The values `template` uses; every variable it uses must be here (or have a "
        "`|default`). Capped as merge_data.",
    )
    language: str | None = Field(
        None,
        description="The language of `template` (BCP 47, `pt-BR`): that tag, else `pt`, else the default.",
    )
    merge_data: Annotated[
        dict[str, dict[str, Any]] | None,
        capped_json("merge_data"),
        _at_most(conf.max_recipients, "entries (one per recipient)"),
    ] = Field(
        None,
        description="Per-recipient merge data, keyed by address. At most MAILSERVICE_MAX_MERGE_DATA_BYTES "
        "(2 MB) as JSON, MAILSERVICE_MAX_MERGE_DATA_KEYS (20,000) keys and list items at every level, "
        "32 levels deep, 100,000 characters per string.",
    )
    merge_global_data: Annotated[dict[str, Any] | None, capped_json("merge_global_data")] = Field(
        None, description="Merge data for every recipient; capped as merge_data."
    )
    send_at: Annotated[AwareDatetime | None, AfterValidator(_schedulable_send_at)] = Field(
        None,
        description="ISO 8601 with a time zone; delivery waits until then. At most "
        "MAILSERVICE_MAX_SCHEDULE_DAYS (30) days ahead.",
    )


# A stored template's fields, and the preview's body (docs/templates.md, "The API").
Text = Annotated[str, AfterValidator(_text)]
TEMPLATE_EXAMPLE: dict[str, Any] = {
    "name": "welcome",
    "language": "pt-BR",
    "subject": "Bem-vindo, {{ first_name }}",
    "html": "<p>Olá {{ first_name }}!</p>",
    "description": "Sent after sign-up",
}
TEMPLATE_CHANGE_EXAMPLE: dict[str, Any] = {"subject": "Olá, {{ first_name }}"}
PREVIEW_EXAMPLE: dict[str, Any] = {"data": {"first_name": "Ana"}, "language": "pt-BR"}
LANGUAGE_DESCRIPTION = "A BCP 47 tag (`en`, `pt-BR`), or empty for the default language."


class TemplateIn(Schema):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": TEMPLATE_EXAMPLE, "examples": [TEMPLATE_EXAMPLE]}
    )

    name: Text = Field(description="Letters, digits, `-` and `_`; at most 100.")
    language: Text = Field("", description=LANGUAGE_DESCRIPTION)
    subject: Text = Field("", description="One line.")
    text: Text = Field("", description="At least one of text and html.")
    html: Text = ""
    description: Text = ""


class TemplateUpdateIn(Schema):
    """The fields to change; those left out keep their value."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": TEMPLATE_CHANGE_EXAMPLE, "examples": [TEMPLATE_CHANGE_EXAMPLE]},
    )

    subject: Text | None = None
    text: Text | None = None
    html: Text | None = None
    description: Text | None = None


class TemplateRenderIn(Schema):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": PREVIEW_EXAMPLE, "examples": [PREVIEW_EXAMPLE]}
    )

    data: Annotated[dict[str, Any], capped_json("template_data")] = Field(
        default_factory=dict, description="The template_data a message would give."
    )
    language: Text = Field("", description=LANGUAGE_DESCRIPTION + " Falls back as a message's does.")


def _language_tag(value: str | None) -> str | None:
    return None if value is None else language_tag(value)


class TemplateFilters(Schema):
    name: Annotated[str | None, AfterValidator(_without_nul)] = Field(None, description="Only this name.")
    language: Annotated[str | None, AfterValidator(_language_tag)] = Field(
        None, description="Only this language (exactly; empty: the default language)."
    )


class SuppressionIn(Schema):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": SUPPRESSION_EXAMPLE, "examples": [SUPPRESSION_EXAMPLE]}
    )

    address: Annotated[str, AfterValidator(_text)]
    reason: Suppression.Reason = Suppression.Reason.MANUAL


class MessageFilters(Schema):
    status: MessageStatus | None = Field(None, description="Only messages in this status.")
    recipient: Annotated[str | None, AfterValidator(_without_nul)] = Field(
        None, description="Only messages to this address (to, cc or bcc)."
    )
    since: datetime | None = Field(
        None,
        description="Only messages accepted at or after this time (ISO 8601; UTC when it has no zone; "
        "between years 1 and 9999 in UTC).",
    )

    @field_validator("since")
    @classmethod
    def _naive_is_utc(cls, value: datetime | None) -> datetime | None:
        """A time without a zone is taken as UTC; the database stores years 1 to 9999 in UTC."""
        if value is None:
            return None
        if timezone.is_naive(value):
            value = timezone.make_aware(value, UTC)
        return _utc_between(value, EARLIEST, LATEST)


class SuppressionFilters(Schema):
    address: Annotated[str | None, AfterValidator(_without_nul)] = Field(
        None, description="Only this address."
    )
