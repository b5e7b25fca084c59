"""Checks of what a request puts into a line of the message's header: one-line values (subject,
tags, template_id, header values, attachments' filenames and content ids), header names, and
MIME types (docs/security.md, "Input limits"). Problems are appended to the request's error
list with the path of the offending value."""

from __future__ import annotations

import re

from mailservice.exceptions import FieldError

MAX_LINE = 998  # subject, header values, filenames, content ids, tags, template_id (RFC 5322 line)
MAX_HEADER_NAME = 76  # a header name and ": " fit a 78-character line (RFC 5322)
MAX_MIMETYPE = 255  # `type/subtype`, each at most 127 characters (RFC 6838)
# RFC 5322 field-name: printable US-ASCII except the colon.
HEADER_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
# RFC 6838 restricted-name for the type and the subtype.
MIMETYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")
# Control characters (C0 but tab, DEL, C1) and the Unicode line and paragraph separators: in a
# header the email library may break the line on them or fail to encode it, at send time.
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# Headers with a field of their own, or that the gateway (or the provider) writes.
OWNED_HEADERS = {
    "from": "use the `from` field",
    "to": "use the `to` field",
    "cc": "use the `cc` field",
    "bcc": "use the `bcc` field",
    "reply-to": "use the `reply_to` field",
    "subject": "use the `subject` field",
    "sender": "the gateway sets it",
    "date": "the gateway sets it",
    "message-id": "the gateway sets it",
    "return-path": "the receiving server sets it",
    "mime-version": "the gateway sets it",
}


def control_character(value: str, where: str = "here", *, tab: bool = True) -> str | None:
    """Why `value` cannot go into a header line: a line break, another control character (a tab
    is allowed where `tab`), or None when it can."""
    if "\r" in value or "\n" in value:
        return f"Line breaks are not allowed {where}."
    match = CONTROL.search(value) or (None if tab else re.search("\t", value))
    if match:
        return (
            f"Control characters are not allowed {where} (U+{ord(match.group()):04X} at position "
            f"{match.start()}){'; only tab is' if tab else ''}."
        )
    return None


def single_line(value: str, path: str, errors: list[FieldError]) -> None:
    problem = control_character(value)
    if problem:
        errors.append(FieldError(path, problem))
    elif len(value) > MAX_LINE:
        errors.append(FieldError(path, f"At most {MAX_LINE} characters; got {len(value)}."))


def check_headers(headers: dict[str, str], errors: list[FieldError]) -> dict[str, str]:
    for name, value in headers.items():
        path = f"headers.{name}"
        lowered = name.lower()
        problem = control_character(name, "in a header name", tab=False)
        if problem:
            errors.append(FieldError(path, problem))
        elif not HEADER_NAME.match(name):
            errors.append(
                FieldError(path, "A header name is printable ASCII without spaces or colons (RFC 5322).")
            )
        elif len(name) > MAX_HEADER_NAME:
            errors.append(
                FieldError(path, f"A header name has at most {MAX_HEADER_NAME} characters; got {len(name)}.")
            )
        elif lowered in OWNED_HEADERS:
            errors.append(
                FieldError(path, f"The {name} header cannot be set here: {OWNED_HEADERS[lowered]}.")
            )
        elif lowered.startswith("content-"):
            errors.append(FieldError(path, f"The {name} header cannot be set here: the gateway sets it."))
        else:
            single_line(value, path, errors)
    return dict(headers)


def check_mimetype(value: str, path: str, errors: list[FieldError]) -> None:
    if len(value) > MAX_MIMETYPE:
        errors.append(
            FieldError(path, f"A MIME type has at most {MAX_MIMETYPE} characters; got {len(value)}.")
        )
    elif not MIMETYPE.match(value):
        errors.append(
            FieldError(path, "Give a MIME type as type/subtype, such as application/pdf, without parameters.")
        )
