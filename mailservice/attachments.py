"""Checks of a request's attachments: their header-bound fields, base64 content, and inline text
that providers' backends can send as text. The decoded size is summed for the caller, which
refuses the whole request over MAILSERVICE_MAX_ATTACHMENTS_BYTES."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from typing import Any

from mailservice.exceptions import FieldError
from mailservice.headers import check_mimetype, single_line
from mailservice.schemas import AttachmentIn


def check_attachments(
    attachments: list[AttachmentIn] | None, errors: list[FieldError]
) -> tuple[list[dict[str, Any]], int]:
    """The attachments as a Message stores them, and their decoded size in bytes."""
    stored: list[dict[str, Any]] = []
    total = 0
    for index, attachment in enumerate(attachments or []):
        path = f"attachments[{index}]"
        if not attachment.filename.strip():
            errors.append(FieldError(f"{path}.filename", "Every attachment needs a filename."))
        else:
            single_line(attachment.filename, f"{path}.filename", errors)
        if attachment.mimetype is not None:
            check_mimetype(attachment.mimetype, f"{path}.mimetype", errors)
        content_id = attachment.content_id
        if content_id is not None:
            single_line(content_id, f"{path}.content_id", errors)
            content_id = content_id.strip().strip("<>") or None
        if attachment.inline and content_id is None:
            content_id = attachment.filename
        encoded = re.sub(r"\s+", "", attachment.content)
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            errors.append(FieldError(f"{path}.content", "The content is not valid base64."))
            continue
        if attachment.inline and not _is_utf8_if_text(decoded, attachment.mimetype, attachment.filename):
            errors.append(
                FieldError(
                    f"{path}.content",
                    "An inline text attachment must be UTF-8 text; send other bytes with a non-text "
                    "mimetype such as application/octet-stream.",
                )
            )
            continue
        total += len(decoded)
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


def _is_utf8_if_text(content: bytes, mimetype: str | None, filename: str) -> bool:
    """Providers' backends send an inline text part as text: bytes that are not UTF-8 cannot be."""
    kind = mimetype or mimetypes.guess_type(filename)[0] or ""
    if not kind.lower().startswith("text/"):
        return True
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
