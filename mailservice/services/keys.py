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
DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)


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
    scopes: Iterable[str] | None = None,
    from_domains: Iterable[str] | None = None,
    now: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key named `name`; return it with the raw key, which is never stored or shown again.

    Without `rotate`, an active key of that name is an error: names tell keys apart in the admin.
    With it, this is `api_key_rotate` with no grace: the active keys of that name stop working at
    once (what `make run` does for "dev" on every start). `scopes` (docs/api.md: send, read,
    manage) default to send and read; `from_domains`, when given, are the only sender domains the
    key may use.
    """
    if rotate:
        api_key, raw_key, _ = api_key_rotate(name=name, scopes=scopes, from_domains=from_domains, now=now)
        return api_key, raw_key
    name = _clean_name(name)
    scope_text = clean_scopes(DEFAULT_SCOPES if scopes is None else scopes)
    domain_text = clean_domains(from_domains or ())
    now = now or timezone.now()
    with transaction.atomic():
        if ApiKey.objects.active(now).filter(name=name).exists():
            raise ApiKeyError(f"An active API key named {name!r} exists; revoke it or use --rotate.")
        api_key, raw_key = _insert(name=name, scopes=scope_text, from_domains=domain_text, now=now)
    logger.info(
        "api key created name=%s prefix=%s scopes=%s",
        name,
        api_key.prefix,
        scope_text,
        extra={"api_key_name": name, "prefix": api_key.prefix},
    )
    return api_key, raw_key


def api_key_rotate(
    *,
    name: str,
    grace: timedelta = timedelta(0),
    scopes: Iterable[str] | None = None,
    from_domains: Iterable[str] | None = None,
    now: datetime | None = None,
) -> tuple[ApiKey, str, list[ApiKey]]:
    """Replace the active keys named `name` by a new one; return it, the raw key (shown once), and
    the replaced keys with their expiry.

    The replaced keys keep working, with their own scopes and sender domains, for `grace` (zero:
    they stop at once), so clients can move to the new key without a failed request; then they
    authenticate no more (401, as a revoked key). An expiry already closer is kept: rotating
    again never extends an old key's life. The new key has the newest replaced key's scopes and
    sender domains unless `scopes` or `from_domains` are given. Without an active key of that
    name, this simply creates one (so setup scripts may rotate on every run).
    """
    name = _clean_name(name)
    if grace < timedelta(0):
        raise ApiKeyError("The grace period cannot be negative.")
    now = now or timezone.now()
    expires_at = now + grace
    with transaction.atomic():
        active = ApiKey.objects.active(now).filter(name=name).select_for_update()
        replaced = list(active.order_by("-created_at"))
        model = replaced[0] if replaced else None
        if scopes is None:
            scopes = model.scope_set if model else DEFAULT_SCOPES
        if from_domains is None:
            from_domains = model.from_domain_list if model else ()
        scope_text, domain_text = clean_scopes(scopes), clean_domains(from_domains)
        ApiKey.objects.filter(pk__in=[key.pk for key in replaced]).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=expires_at)
        ).update(expires_at=expires_at)
        for key in replaced:
            key.expires_at = min(key.expires_at or expires_at, expires_at)
        api_key, raw_key = _insert(name=name, scopes=scope_text, from_domains=domain_text, now=now)
    old_prefixes = ",".join(key.prefix for key in replaced)
    logger.info(
        "api key rotated name=%s prefix=%s scopes=%s replaced=%s old_keys_expire_at=%s",
        name,
        api_key.prefix,
        scope_text,
        old_prefixes or "none",
        expires_at.isoformat() if replaced else "-",
        extra={
            "api_key_name": name,
            "prefix": api_key.prefix,
            "replaced_prefixes": old_prefixes,
            "expires_at": expires_at.isoformat() if replaced else None,
        },
    )
    return api_key, raw_key, replaced


def _clean_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise ApiKeyError("An API key needs a name.")
    return name


def _insert(*, name: str, scopes: str, from_domains: str, now: datetime) -> tuple[ApiKey, str]:
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        name=name,
        prefix=raw_key[:PREFIX_LENGTH],
        key_hash=_hash(raw_key),
        created_at=now,
        scopes=scopes,
        from_domains=from_domains,
    )
    return api_key, raw_key


GRACE = re.compile(r"^(\d{1,6})([smhd])$")
GRACE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
MAX_GRACE = timedelta(days=365)


def parse_grace(value: str) -> timedelta:
    """`24h`, `30m`, `7d`, `90s` or `0` (at once) as a timedelta; ApiKeyError for anything else,
    or for more than a year (a key that lives on that long was not rotated)."""
    text = value.strip().lower()
    if text == "0":
        return timedelta(0)
    match = GRACE.match(text)
    if not match:
        raise ApiKeyError(f"Grace period {value!r}: use a number and a unit (24h, 30m, 7d, 90s), or 0.")
    grace = timedelta(**{GRACE_UNITS[match.group(2)]: int(match.group(1))})
    if grace > MAX_GRACE:
        raise ApiKeyError(f"Grace period {value!r} is longer than a year; rotate with a shorter one.")
    return grace


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
        active = keys.active(now)  # a key in a rotation's grace period included: revoked at once
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
    now = now or timezone.now()
    match = None
    # A rotated key past its grace period is no longer active: refused like a revoked one.
    candidates = ApiKey.objects.active(now).filter(prefix=raw_key[:PREFIX_LENGTH]).order_by()  # any order
    for candidate in candidates:
        if hmac.compare_digest(candidate.key_hash, wanted):
            match = candidate
    if match is None:
        return None
    stale = now - timedelta(seconds=conf.api_key_touch_interval())
    if match.last_used_at is None or match.last_used_at <= stale:
        # Conditional, so concurrent requests write once; skipped while recent to spare writes.
        ApiKey.objects.filter(pk=match.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale)
        ).update(last_used_at=now)
        match.last_used_at = now
    return match
