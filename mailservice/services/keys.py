"""API keys: created and shown once, stored as a hash, compared in constant time."""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from mailservice import conf
from mailservice.exceptions import ApiKeyError
from mailservice.models import ApiKey

logger = logging.getLogger(__name__)

KEY_PREFIX = "smt_"
PREFIX_LENGTH = 12  # "smt_" + 8 characters of the secret: enough to tell keys apart


def _hash(raw_key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is safe (no dictionary to attack).
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(*, name: str, rotate: bool = False, now: datetime | None = None) -> tuple[ApiKey, str]:
    """Create a key named `name`; return it with the raw key, which is never stored or shown again.

    With `rotate`, the active keys of that name are revoked first (used by `make run` for "dev").
    Without it, an active key of that name is an error: names tell keys apart in the admin.
    """
    name = name.strip()
    if not name:
        raise ApiKeyError("An API key needs a name.")
    now = now or timezone.now()
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        active = ApiKey.objects.active().filter(name=name)
        if active.exists():
            if not rotate:
                raise ApiKeyError(f"An active API key named {name!r} exists; revoke it or use --rotate.")
            api_keys_revoke(keys=active, now=now)
        api_key = ApiKey.objects.create(
            name=name, prefix=raw_key[:PREFIX_LENGTH], key_hash=_hash(raw_key), created_at=now
        )
    logger.info(
        "api key created name=%s prefix=%s", name, api_key.prefix, extra={"api_key_name": name, "prefix": api_key.prefix}
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
    for candidate in ApiKey.objects.active().filter(prefix=raw_key[:PREFIX_LENGTH]):
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
