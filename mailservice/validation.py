"""Checks a parsed request cannot express as types: addresses, headers, content, templates, limits.

Every problem is reported with the path of the offending value from the body's root, all at
once, so a client fixes its request in one go. Nothing here writes; the one read is the stored
template a message names, rendered last, once every other check has passed. The checks of
header lines, attachments and templates live in headers.py, attachments.py and
message_templates.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mailservice import conf
from mailservice.addresses import AddressError, ParsedAddress, parse_address
from mailservice.attachments import check_attachments
from mailservice.exceptions import FieldError, InvalidRequest, MalformedRequest, PayloadTooLarge
from mailservice.headers import check_headers, control_character, single_line
from mailservice.jsonlimits import (
    FREE_FORM_FIELDS,
    MAX_JSON_DEPTH,
    body_shape,
    deepest_member,
    field_caps,
    text_problem,
)
from mailservice.message_fields import COLUMNS, CONTENT
from mailservice.message_templates import check_template_fields, check_template_id, render_template
from mailservice.schemas import MAX_ATTACHMENTS, MAX_HEADERS, MAX_TAGS, MessageIn

MAX_ERRORS = 100  # errors listed in one answer; one more entry counts the rest
# Members of a message body besides its lists and free-form fields: its top-level fields, with
# room for more (body_values_limit). The lists' lengths are limited in the request schemas,
# counted before any item is looked at; the free-form JSON fields' caps (MAX_JSON_DEPTH among
# them) live in jsonlimits.py, which the schemas check them with (schemas.requests.capped_json).
BODY_MEMBERS = 50
# A request's name of each MessageIn field -> the field (`from` -> `from_`).
SCHEMA_FIELDS = {info.alias or name: name for name, info in MessageIn.model_fields.items()}


@dataclass
class Draft:
    """A request that passed every check, ready to be stored as a Message: its recipients, and
    the value of each Message column (message_fields.COLUMNS), also read as an attribute
    (`draft.subject`)."""

    to: list[ParsedAddress]
    cc: list[ParsedAddress]
    bcc: list[ParsedAddress]
    columns: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        # Called only for names the class does not define: the columns'.
        try:
            return self.__dict__["columns"][name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}") from None

    @property
    def recipient_count(self) -> int:
        return len(self.to) + len(self.cc) + len(self.bcc)


class ErrorList(list[FieldError]):
    """The errors of one request: the first on each field, at most MAX_ERRORS of them kept; the
    rest are only counted, so a request with a million problems costs no more memory than one
    with a hundred."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: set[str | None] = set()
        self.more = 0

    def append(self, error: FieldError) -> None:
        if error.field in self.fields:
            return
        if len(self) < MAX_ERRORS:
            self.fields.add(error.field)
            super().append(error)
        else:
            self.more += 1

    def listed(self) -> list[FieldError]:
        """The errors to answer: the kept ones, and one entry counting those left out."""
        return [*self, *([more_errors(self.more)] if self.more else [])]


def more_errors(count: int) -> FieldError:
    return FieldError(
        None,
        f"{count} more error{'s' if count != 1 else ''} not listed; "
        f"fix the first {MAX_ERRORS} and send again.",
    )


def capped(errors: list[FieldError]) -> list[FieldError]:
    """At most MAX_ERRORS errors, and an entry counting the rest (for error lists built
    elsewhere, e.g. pydantic's). A list already capped is returned as it is."""
    if len(errors) <= MAX_ERRORS + 1:
        return errors
    return [*errors[:MAX_ERRORS], more_errors(len(errors) - MAX_ERRORS)]


def check_message(data: MessageIn) -> Draft:
    """Return the Draft, or raise InvalidRequest (422) / PayloadTooLarge (413) listing every problem.

    Counts come first: over the recipient limit, no address of to, cc or bcc is parsed."""
    errors = ErrorList()

    given = len(data.to or []) + len(data.cc or []) + len(data.bcc or [])
    if given == 0:
        errors.append(FieldError("to", "At least one recipient is needed, in to, cc or bcc."))
    elif given > conf.max_recipients():
        errors.append(
            FieldError(
                "to", f"At most {conf.max_recipients()} recipients in to, cc and bcc together; got {given}."
            )
        )

    from_email = conf.default_from_email()
    if data.from_ is not None:
        parsed = _address(data.from_, "from", errors)
        from_email = parsed.original if parsed else from_email
    to: list[ParsedAddress] = []
    cc: list[ParsedAddress] = []
    bcc: list[ParsedAddress] = []
    if given <= conf.max_recipients():
        indexed = [_indexed_addresses(getattr(data, name), name, errors) for name in ("to", "cc", "bcc")]
        _refuse_repeats([pair for group in indexed for pair in group], errors)
        to, cc, bcc = ([address for _, address in group] for group in indexed)
    reply_to = [a.original for a in _addresses(data.reply_to, "reply_to", errors)]

    subject = data.subject or ""
    single_line(subject, "subject", errors)
    if not any(getattr(data, SCHEMA_FIELDS[name]) for name in CONTENT):
        errors.append(
            FieldError("text", "Give text, html, template or template_id: the message has no content.")
        )
    template_id = check_template_id(data.template_id, errors)
    check_template_fields(data, errors)
    for index, tag in enumerate(data.tags or []):
        single_line(tag, f"tags[{index}]", errors)

    headers = check_headers(data.headers or {}, errors)
    attachments, attachment_bytes = check_attachments(data.attachments, errors)
    _json_values(data.model_dump(by_alias=True, exclude_none=True), errors)
    if errors:
        raise InvalidRequest(errors.listed())
    if attachment_bytes > conf.max_attachments_bytes():
        raise PayloadTooLarge(
            [
                FieldError(
                    "attachments",
                    f"Attachments come to {attachment_bytes} bytes decoded; the limit is "
                    f"{conf.max_attachments_bytes()} bytes.",
                )
            ]
        )
    # Every column as the schema parsed it, then those checked above as checked.
    columns = {field.column: getattr(data, SCHEMA_FIELDS[field.name]) for field in COLUMNS}
    columns.update(
        from_email=from_email,
        reply_to=reply_to,
        subject=subject,
        headers=headers,
        attachments=attachments,
        tags=list(data.tags or []),
        template_id=template_id,
    )
    if data.template is not None:
        # Rendered now, so that workers never render and every provider gets the same mail.
        rendered = render_template(data)
        columns.update(
            subject=rendered.subject, text=rendered.text, html=rendered.html, template=rendered.reference()
        )
    return Draft(to=to, cc=cc, bcc=bcc, columns=columns)


def _address(value: str, path: str, errors: list[FieldError]) -> ParsedAddress | None:
    # Line breaks are left to parse_address, which names them; other control characters would
    # pass it inside a display name.
    if "\r" not in value and "\n" not in value:
        problem = control_character(value, "in an address")
        if problem:
            errors.append(FieldError(path, problem))
            return None
    try:
        return parse_address(value)
    except AddressError as err:
        errors.append(FieldError(path, str(err)))
        return None


def _addresses(values: list[str] | None, name: str, errors: list[FieldError]) -> list[ParsedAddress]:
    return [address for _, address in _indexed_addresses(values, name, errors)]


def _indexed_addresses(
    values: list[str] | None, name: str, errors: list[FieldError]
) -> list[tuple[str, ParsedAddress]]:
    """The valid addresses with their paths (`cc[2]`); invalid ones are reported in `errors`."""
    parsed = [
        (f"{name}[{index}]", _address(value, f"{name}[{index}]", errors))
        for index, value in enumerate(values or [])
    ]
    return [(path, address) for path, address in parsed if address is not None]


def _refuse_repeats(recipients: list[tuple[str, ParsedAddress]], errors: list[FieldError]) -> None:
    """One address, one recipient: a repeat (in any of to/cc/bcc, in any case) would get two
    rows that one provider event cannot both settle."""
    first_seen: dict[str, str] = {}
    for path, address in recipients:
        if address.email in first_seen:
            errors.append(
                FieldError(
                    path,
                    f"{address.addr_spec} is already a recipient ({first_seen[address.email]}); "
                    "give each address once.",
                )
            )
        else:
            first_seen[address.email] = path


def check_template_data(data: dict[str, Any]) -> None:
    """A preview's data (POST /api/templates/{name}/render) checked as a message's template_data
    is: InvalidRequest on `template_data.<path>` for what JSON parses but is no text or number."""
    errors = ErrorList()
    _json_values({"template_data": data}, errors)
    if errors:
        raise InvalidRequest(errors.listed())


def _json_values(body: dict[str, Any], errors: list[FieldError]) -> None:
    """What JSON parses but no database stores or no provider serializes, anywhere in the body
    (metadata and merge data included): NaN and Infinity (also a number too large for a float,
    such as 1e400), NUL characters and lone surrogates, in values and in keys. Walked without
    recursion; the free-form fields were capped (depth and size) before
    (schemas.requests.capped_json)."""
    stack: list[tuple[str, Any]] = [(name, value) for name, value in reversed(body.items())]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                errors.append(FieldError(path, problem))
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                errors.append(
                    FieldError(
                        path,
                        "NaN and Infinity are not JSON numbers (nor is one too large for a "
                        "64-bit float); give a finite number or a string.",
                    )
                )
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                item_path = f"{path}.{key}"
                problem = text_problem(key) if isinstance(key, str) else None
                if problem:
                    errors.append(FieldError(item_path, f"In this key: {problem}"))
                else:
                    stack.append((item_path, item))
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{path}[{index}]", item) for index, item in reversed(list(enumerate(value))))


def body_values_limit() -> int:
    """The most JSON values a body may hold, counted on its bytes (jsonlimits.body_shape): four
    times what a message within every other limit can hold. The count reaches up to twice the
    real one; the other half is room, so that a body some way over one limit (200,000
    recipients) is parsed and answered on its field. A body over it breaks some limit whatever
    it holds, and is refused before it is parsed: parsing is what costs (two million metadata
    keys take seconds)."""
    members = (
        BODY_MEMBERS
        + 2 * conf.max_recipients()  # to, cc and bcc together; reply_to
        + MAX_TAGS
        + MAX_HEADERS
        + 6 * MAX_ATTACHMENTS  # each attachment and its five fields
        + sum(field_caps(name).keys for name in FREE_FORM_FIELDS)
    )
    return 4 * members


def parse_json_body(raw: bytes) -> Any:
    """The parsed JSON body of a request to the API or the send URL, measured on its bytes first
    (docs/security.md, "Input limits"): PayloadTooLarge (413) over body_values_limit(),
    InvalidRequest (422) on the top-level field that nests deeper than a free-form field may
    (MAX_JSON_DEPTH inside the field), MalformedRequest (400) when it is not JSON (its brackets
    do not balance, or the parser says so). No object is built for a body refused on its shape."""
    limit = body_values_limit()
    shape = body_shape(raw, max_values=limit)
    if not shape.balanced:  # a bracket left open (or closed twice) is not JSON, however long
        raise MalformedRequest([FieldError(None, "The request body is not valid JSON.")])
    if shape.values > limit:
        raise PayloadTooLarge(
            [
                FieldError(
                    None,
                    f"The body holds too many JSON values for any message within the limits "
                    f"({shape.values} counted; at most {limit}).",
                )
            ]
        )
    max_depth = MAX_JSON_DEPTH + 2  # the body's object and the field's own value
    if shape.depth > max_depth:
        raise InvalidRequest(
            [FieldError(deepest_member(raw, max_depth), f"Nested more than {MAX_JSON_DEPTH} levels deep.")]
        )
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: a body the measure misread (not JSON)
        raise MalformedRequest([FieldError(None, "The request body is not valid JSON.")]) from None
