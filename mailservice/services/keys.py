"""API keys: created and shown once, stored as a hash, compared in constant time."""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from mailservice import conf
from mailservice.addresses import ascii_domain
from mailservice.exceptions import ApiKeyError
from mailservice.models import ApiKey
from mailservice.models.keys import DEFAULT_SCOPES, SCOPES

logger = logging.getLogger(__name__)

KEY_PREFIX = "smt_"
PREFIX_LENGTH = 12  # "smt_" + 8 characters of the secret: enough to tell keys apart
# A domain name in ASCII form: dot-separated labels of letters, digits and inner hyphens.
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _hash(raw_key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is safe (no dictionary to attack).
    return hashlib.sha256(raw_key.encode()).hexdigest()


def clean_scopes(scopes: Iterable[str]) -> str:
    """`["read", " send"]` -> "send,read" (in the order of SCOPES), or ApiKeyError naming the unknown."""
    wanted = {scope.strip().lower() for scope in scopes if scope.strip()}
    unknown = wanted - set(SCOPES)
    if unknown:
        raise ApiKeyError(f"Unknown scope(s): {', '.join(sorted(unknown))}; use {', '.join(SCOPES)}.")
    if not wanted:
        raise ApiKeyError(f"An API key needs at least one scope ({', '.join(SCOPES)}).")
    return ",".join(scope for scope in SCOPES if scope in wanted)


def clean_domains(domains: Iterable[str]) -> str:
    """Sender domains as stored: lowercased, internationalized ones in ASCII (punycode), the
    form `sender_domain` compares with; `ApiKeyError` for one that is not a domain name."""
    cleaned: list[str] = []
    for value in domains:
        domain = value.strip().lower().rstrip(".")
        if not domain:
            continue
        ascii_domain = sender_domain(f"x@{domain}")
        if not DOMAIN.match(ascii_domain):
            raise ApiKeyError(f"{value.strip()!r} is not a domain name.")
        if ascii_domain not in cleaned:
            cleaned.append(ascii_domain)
    return ",".join(cleaned)


def sender_domain(addr_spec: str) -> str:
    """The domain part of a sender's address, in the form `clean_domains` stores: the ASCII form
    every stored address has (addresses.ascii_domain), so both sides are encoded alike."""
    return ascii_domain(addr_spec.strip().rpartition("@")[2].rstrip(".")).lower()


def api_key_sender_allowed(*, api_key: ApiKey, addr_spec: str) -> bool:
    """Whether this key may send from `addr_spec`: any sender when the key names no domains;
    otherwise only one whose domain is listed exactly (a subdomain must be listed itself)."""
    domains = api_key.from_domain_list
    return not domains or sender_domain(addr_spec) in domains


def api_key_create(
    *,
    name: str,
    rotate: bool = False,
    scopes: Iterable[str] = DEFAULT_SCOPES,
    from_domains: Iterable[str] = (),
    now: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key named `name`; return it with the raw key, which is never stored or shown again.

    With `rotate`, the active keys of that name are revoked first (used by `make run` for "dev").
    Without it, an active key of that name is an error: names tell keys apart in the admin.
    `scopes` (docs/api.md: send, read, manage) default to send and read; `from_domains`, when
    given, are the only sender domains the key may use.
    """
    name = name.strip()
    if not name:
        raise ApiKeyError("An API key needs a name.")
    scope_text = clean_scopes(scopes)
    domain_text = clean_domains(from_domains)
    now = now or timezone.now()
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        active = ApiKey.objects.active().filter(name=name)
        if active.exists():
            if not rotate:
                raise ApiKeyError(f"An active API key named {name!r} exists; revoke it or use --rotate.")
            api_keys_revoke(keys=active, now=now)
        api_key = ApiKey.objects.create(
            name=name,
            prefix=raw_key[:PREFIX_LENGTH],
            key_hash=_hash(raw_key),
            created_at=now,
            scopes=scope_text,
            from_domains=domain_text,
        )
    logger.info(
        "api key created name=%s prefix=%s scopes=%s",
        name,
        api_key.prefix,
        scope_text,
        extra={"api_key_name": name, "prefix": api_key.prefix},
    )
    return api_key, raw_key


def api_key_revoke(*, name_or_prefix: str, now: datetime | None = None) -> int:
    """Revoke the active keys with this name or prefix; return how many."""
    now = now or timezone.now()
    value = name_or_prefix.strip()
    if not value:
        raise ApiKeyError("Give the key's name or prefix.")
    count = api_keys_revoke(keys=ApiKey.objects.filter(Q(name=value) | Q(prefix=value)), now=now)
    if not count:
        raise ApiKeyError(f"No active API key has the name or prefix {value!r}.")
    return count


def api_keys_revoke(*, keys: QuerySet[ApiKey], now: datetime | None = None) -> int:
    """Revoke the active keys among `keys` (a name, a prefix, the admin's selection); return how
    many. Every revocation goes through here, so each logs the same line."""
    now = now or timezone.now()
    with transaction.atomic():
        active = keys.filter(revoked_at__isnull=True)
        names = ",".join(sorted(set(active.values_list("name", flat=True))))
        count = active.update(revoked_at=now)
    if count:
        logger.info("api key revoked name=%s count=%s", names, count, extra={"api_key_name": names})
    return count


def api_key_authenticate(*, raw_key: str, now: datetime | None = None) -> ApiKey | None:
    """The active key matching `raw_key`, or None. Records the last use, at most once a minute."""
    if not raw_key or not raw_key.startswith(KEY_PREFIX) or len(raw_key) > 200:
        return None
    wanted = _hash(raw_key)
    match = None
    for candidate in ApiKey.objects.active().filter(prefix=raw_key[:PREFIX_LENGTH]).order_by():  # any order
        if hmac.compare_digest(candidate.key_hash, wanted):
            match = candidate
    if match is None:
        return None
    now = now or timezone.now()
    stale = now - timedelta(seconds=conf.api_key_touch_interval())
    if match.last_used_at is None or match.last_used_at <= stale:
        # Conditional, so concurrent requests write once; skipped while recent to spare writes.
        ApiKey.objects.filter(pk=match.pk).filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale)).update(
            last_used_at=now
        )
        match.last_used_at = now
    return match
