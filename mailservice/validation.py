"""Checks a parsed request cannot express as types: addresses, headers, content, limits.

Every problem is reported with the path of the offending value from the body's root, all at
once, so a client fixes its request in one go. Nothing here touches the database.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailservice import conf
from mailservice.addresses import AddressError, ParsedAddress, parse_address
from mailservice.exceptions import FieldError, InvalidRequest, PayloadTooLarge
from mailservice.schemas import MessageIn

MAX_LINE = 998
# RFC 5322 field-name: printable US-ASCII except the colon.
HEADER_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
MIMETYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
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


@dataclass
class Draft:
    """A request that passed every check, ready to be stored as a Message."""

    from_email: str
    to: list[ParsedAddress]
    cc: list[ParsedAddress]
    bcc: list[ParsedAddress]
    reply_to: list[str]
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str]
    attachments: list[dict[str, Any]]
    tags: list[str]
    metadata: dict[str, Any] | None
    template_id: str | None
    merge_data: dict[str, dict[str, Any]] | None
    merge_global_data: dict[str, Any] | None
    send_at: datetime | None

    @property
    def recipient_count(self) -> int:
        return len(self.to) + len(self.cc) + len(self.bcc)


def check_message(data: MessageIn) -> Draft:
    """Return the Draft, or raise InvalidRequest (422) / PayloadTooLarge (413) listing every problem."""
    errors: list[FieldError] = []

    from_email = conf.default_from_email()
    if data.from_ is not None:
        parsed = _address(data.from_, "from", errors)
        from_email = parsed.original if parsed else from_email
    to, cc, bcc = (_indexed_addresses(getattr(data, name), name, errors) for name in ("to", "cc", "bcc"))
    _refuse_repeats([*to, *cc, *bcc], errors)
    to, cc, bcc = ([address for _, address in group] for group in (to, cc, bcc))
    reply_to = [a.original for a in _addresses(data.reply_to, "reply_to", errors)]

    given = len(data.to or []) + len(data.cc or []) + len(data.bcc or [])
    if given == 0:
        errors.append(FieldError("to", "At least one recipient is needed, in to, cc or bcc."))
    elif given > conf.max_recipients():
        errors.append(
            FieldError("to", f"At most {conf.max_recipients()} recipients in to, cc and bcc together; got {given}.")
        )

    subject = data.subject or ""
    _single_line(subject, "subject", errors)
    if not (data.text or data.html or data.template_id):
        errors.append(FieldError("text", "Give text, html or template_id: the message has no content."))
    if data.template_id is not None:
        _single_line(data.template_id, "template_id", errors)
    for index, tag in enumerate(data.tags or []):
        _single_line(tag, f"tags[{index}]", errors)

    headers = _headers(data.headers or {}, errors)
    attachments, attachment_bytes = _attachments(data, errors)
    if errors:
        raise InvalidRequest(errors)
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
    return Draft(
        from_email=from_email,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        subject=subject,
        text=data.text,
        html=data.html,
        headers=headers,
        attachments=attachments,
        tags=list(data.tags or []),
        metadata=data.metadata,
        template_id=data.template_id,
        merge_data=data.merge_data,
        merge_global_data=data.merge_global_data,
        send_at=data.send_at,
    )


def _address(value: str, path: str, errors: list[FieldError]) -> ParsedAddress | None:
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
    parsed = [(f"{name}[{index}]", _address(value, f"{name}[{index}]", errors)) for index, value in enumerate(values or [])]
    return [(path, address) for path, address in parsed if address is not None]


def _refuse_repeats(recipients: list[tuple[str, ParsedAddress]], errors: list[FieldError]) -> None:
    """One address, one recipient: a repeat (in any of to/cc/bcc, in any case) would get two
    rows that one provider event cannot both settle."""
    first_seen: dict[str, str] = {}
    for path, address in recipients:
        if address.email in first_seen:
            errors.append(
                FieldError(path, f"{address.addr_spec} is already a recipient ({first_seen[address.email]}); give each address once.")
            )
        else:
            first_seen[address.email] = path


def _single_line(value: str, path: str, errors: list[FieldError]) -> None:
    if "\r" in value or "\n" in value:
        errors.append(FieldError(path, "Line breaks are not allowed here."))
    elif len(value) > MAX_LINE:
        errors.append(FieldError(path, f"At most {MAX_LINE} characters; got {len(value)}."))


def _headers(headers: dict[str, str], errors: list[FieldError]) -> dict[str, str]:
    for name, value in headers.items():
        path = f"headers.{name}"
        lowered = name.lower()
        if "\r" in name or "\n" in name:
            errors.append(FieldError(path, "Line breaks are not allowed in a header name."))
        elif not HEADER_NAME.match(name):
            errors.append(
                FieldError(path, "A header name is printable ASCII without spaces or colons (RFC 5322).")
            )
        elif lowered in OWNED_HEADERS:
            errors.append(FieldError(path, f"The {name} header cannot be set here: {OWNED_HEADERS[lowered]}."))
        elif lowered.startswith("content-"):
            errors.append(FieldError(path, f"The {name} header cannot be set here: the gateway sets it."))
        else:
            _single_line(value, path, errors)
    return dict(headers)


def _attachments(data: MessageIn, errors: list[FieldError]) -> tuple[list[dict[str, Any]], int]:
    stored: list[dict[str, Any]] = []
    total = 0
    for index, attachment in enumerate(data.attachments or []):
        path = f"attachments[{index}]"
        if not attachment.filename.strip():
            errors.append(FieldError(f"{path}.filename", "Every attachment needs a filename."))
        else:
            _single_line(attachment.filename, f"{path}.filename", errors)
        if attachment.mimetype is not None and not MIMETYPE.match(attachment.mimetype):
            errors.append(FieldError(f"{path}.mimetype", "Give a MIME type such as application/pdf."))
        content_id = attachment.content_id
        if content_id is not None:
            _single_line(content_id, f"{path}.content_id", errors)
            content_id = content_id.strip().strip("<>") or None
        if attachment.inline and content_id is None:
            content_id = attachment.filename
        encoded = re.sub(r"\s+", "", attachment.content)
        try:
            decoded_size = len(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            errors.append(FieldError(f"{path}.content", "The content is not valid base64."))
            continue
        total += decoded_size
        stored.append(
            {
                "filename": attachment.filename,
                "content": encoded,
                "mimetype": attachment.mimetype,
                "inline": attachment.inline,
                "content_id": content_id,
            }
        )
    return stored, total
