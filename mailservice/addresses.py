"""Parsing and checking one email address as the API accepts it: `a@example.com` or
`"Doe, Jane" <a@example.com>`, internationalized domains included."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import idna
from anymail.exceptions import AnymailInvalidAddress
from anymail.utils import parse_single_address
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

MAX_ADDRESS_LENGTH = 998  # one header line
MAX_ADDR_SPEC_LENGTH = 254  # RFC 5321 path limit


class AddressError(ValueError):
    """The value is not one valid email address; the message says why, for the API's answer."""


@dataclass(frozen=True)
class ParsedAddress:
    original: str  # as given, display name included
    display_name: str
    addr_spec: str  # local@domain, domain as given (may be Unicode)

    @property
    def email(self) -> str:
        """The normalized form used for lookups and the suppression list."""
        return normalize_email(self.addr_spec)


@lru_cache(maxsize=4096)
def parse_address(value: str) -> ParsedAddress:
    """One address, or AddressError. CR/LF are refused first: they would inject headers.

    Cached (a pure function; errors are not cached): a sender's address, and often its
    recipients', come back request after request, and parsing costs more than storing."""
    if "\r" in value or "\n" in value:
        raise AddressError("Line breaks are not allowed in an address.")
    if not value.strip():
        raise AddressError("The address is empty.")
    if len(value) > MAX_ADDRESS_LENGTH:
        raise AddressError(f"The address is longer than {MAX_ADDRESS_LENGTH} characters.")
    try:
        parsed = parse_single_address(value)
    except AnymailInvalidAddress as err:
        if "Only one email address" in str(err):
            raise AddressError("Give one address per item; use a list for several.") from None
        raise AddressError(f"{value!r} is not a valid email address.") from None
    except Exception:  # the stdlib parser raises assorted errors on garbage
        raise AddressError(f"{value!r} is not a valid email address.") from None
    addr_spec = parsed.addr_spec
    if len(addr_spec) > MAX_ADDR_SPEC_LENGTH:
        raise AddressError(f"The address is longer than {MAX_ADDR_SPEC_LENGTH} characters.")
    try:
        validate_email(addr_spec)  # accepts IDN domains (checked in their punycode form)
    except ValidationError:
        raise AddressError(f"{addr_spec!r} is not a valid email address.") from None
    return ParsedAddress(original=value.strip(), display_name=parsed.display_name, addr_spec=addr_spec)


def normalize_email(addr_spec: str) -> str:
    """Lowercase, with an internationalized domain in its ASCII (punycode) form, so that
    `Jane@Bücher.de` and `jane@xn--bcher-kva.de` are one recipient and one suppression entry."""
    local, _, domain = addr_spec.strip().rpartition("@")
    return f"{local}@{ascii_domain(domain)}".lower()


def ascii_domain(domain: str) -> str:
    """The domain as Anymail encodes it for the ESPs by default (IDNA 2008 with UTS 46 mapping,
    Anymail's IDNA_ENCODER "idna2008"), so the form the ESP reports back in its webhooks is the
    form stored: `straße.de` is `xn--strae-oqa.de`, not IDNA 2003's `strasse.de`. A domain IDNA
    2008 refuses (emoji) falls back to IDNA 2003, then to itself. Case is left as given."""
    if domain.isascii() and "xn--" not in domain.lower():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        try:
            return domain.encode("idna").decode("ascii")
        except UnicodeError:
            return domain
