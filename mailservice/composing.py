"""Turning a stored Message into the EmailMessage the failover backend sends: body, alternatives,
attachments, the ESP template (its id, or the providers that have it: `failover_providers`), and
the attributes each stored field is copied to (message_fields.EMAIL_ATTRIBUTES: reply-to,
headers, and Anymail's tags, metadata and merge data)."""

from __future__ import annotations

import base64
import copy
import mimetypes
from collections.abc import Iterable
from email import encoders
from email.message import MIMEPart
from email.mime.base import MIMEBase

import django
from anymail.message import AnymailMessage
from anymail.utils import parse_single_address

from mailservice.addresses import ascii_domain
from mailservice.message_fields import EMAIL_ATTRIBUTES
from mailservice.models import Message, Recipient

DEFAULT_MIMETYPE = "application/octet-stream"
RECIPIENT_KINDS = tuple(Recipient.Kind.values)


def _with_ascii_domain(address: str) -> str:
    """The address with its domain in the ASCII form every stored address has. ESPs report that
    form back, and Anymail's SendGrid backend files its tracking id under it: an address given
    with a Unicode domain would otherwise never be linked to its delivery events."""
    if address.isascii():  # the common case, without parsing it again
        return address
    parsed = parse_single_address(address)
    if parsed.domain.isascii():
        return address
    return parsed.format(idna_encode=lambda domain: ascii_domain(domain).lower())


def build_email(message: Message, recipients: Iterable[Recipient]) -> AnymailMessage:
    """The message for these recipients (the ones not suppressed)."""
    by_kind: dict[str, list[str]] = {kind: [] for kind in RECIPIENT_KINDS}
    for recipient in recipients:
        by_kind[recipient.kind].append(_with_ascii_domain(recipient.address))

    if message.text:
        body, html_alternative = message.text, message.html
    else:
        body, html_alternative = message.html or "", None
    email = AnymailMessage(
        subject=message.subject,
        body=body,
        from_email=message.from_email,
        to=by_kind[Recipient.Kind.TO],
        cc=by_kind[Recipient.Kind.CC],
        bcc=by_kind[Recipient.Kind.BCC],
    )
    if html_alternative:
        email.attach_alternative(html_alternative, "text/html")
    elif message.html and not message.text:
        email.content_subtype = "html"
    for attachment in message.attachments or []:
        _attach(email, attachment)
    if isinstance(message.template_id, dict):
        # One ESP template id per provider: only those providers are asked, each with its own id,
        # and the others are passed over (docs/failover.md, "Choosing providers per message").
        email.failover_providers = dict(message.template_id)
    elif message.template_id:
        email.template_id = message.template_id
    for field in EMAIL_ATTRIBUTES:
        value = getattr(message, field.column)
        if value or (field.empty_too and value is not None):
            # A list or a dict is copied: the email and the row share nothing a backend could change.
            setattr(email, field.email_attribute, copy.copy(value))
    # Lets the failover backend's log lines name the message.
    email.failover_ref = str(message.pk)
    return email


def _attach(email: AnymailMessage, attachment: dict) -> None:
    content = base64.b64decode(attachment["content"])
    filename = attachment["filename"]
    mimetype = attachment.get("mimetype") or mimetypes.guess_type(filename)[0] or DEFAULT_MIMETYPE
    if attachment.get("inline"):
        email.attach(_inline_part(content, filename, mimetype, attachment.get("content_id") or filename))
    else:
        email.attach(filename, content, mimetype)


def _inline_part(content: bytes, filename: str, mimetype: str, content_id: str):
    """An inline part with a Content-ID: a MIMEPart on Django 6 (MIMEBase is deprecated there),
    a MIMEBase on 5.2 (which does not take MIMEPart)."""
    maintype, subtype = mimetype.split("/", 1)
    if django.VERSION >= (6, 0):
        part = MIMEPart()
        part.set_content(
            content,
            maintype=maintype,
            subtype=subtype,
            disposition="inline",
            filename=filename,
            cid=f"<{content_id}>",
        )
        return part
    part = MIMEBase(maintype, subtype)
    part.set_payload(content)
    encoders.encode_base64(part)
    part.add_header("Content-Disposition", "inline", filename=filename)
    part.add_header("Content-ID", f"<{content_id}>")
    return part
