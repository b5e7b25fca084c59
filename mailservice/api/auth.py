"""`Authorization: Bearer <key>` on every API call except the docs and the schema; each call's
scope and the per-key rate limit (docs/api.md, "Authentication"; docs/security.md)."""

from __future__ import annotations

import logging

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django_ratelimit.core import get_usage
from ninja.security import HttpBearer

from failover.providers import RATE_PATTERN
from mailservice import conf
from mailservice.api.errors import UNAUTHORIZED, class_name
from mailservice.exceptions import AuthenticationFailed, FieldError, Forbidden, RateLimited
from mailservice.models import ApiKey
from mailservice.services.keys import api_key_authenticate

logger = logging.getLogger(__name__)

# Query parameters that look like someone put a key in the URL, where logs and proxies keep it.
KEY_PARAMETERS = frozenset({"key", "api_key", "apikey", "token", "access_token", "auth"})
RATE_GROUP = "mailservice.api"


def refuse_key_in_url(request: HttpRequest) -> None:
    if KEY_PARAMETERS & {name.lower() for name in request.GET}:
        raise AuthenticationFailed(
            [FieldError(None, "API keys are accepted only in the Authorization header, never in the URL.")]
        )


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None. Nothing is logged: a
    key sent with another scheme (`Basic smt_…`) is a secret too (docs/security.md, "Secrets")."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def require_scope(api_key: ApiKey, scopes: tuple[str, ...]) -> None:
    """Forbidden (403) unless the key has one of `scopes` (none given: any key will do)."""
    if scopes and not any(api_key.has_scope(scope) for scope in scopes):
        raise Forbidden(scopes)


def api_rate_limit() -> tuple[str, int] | None:
    """MAILSERVICE_API_RATE_LIMIT as (rate, requests), or None when it is off ("0", or a count of 0)."""
    # With no white space left, the failover backend's rate format is django-ratelimit's: a count
    # per period, the period with an optional multiple (5m).
    rate = "".join(conf.api_rate_limit().split()).lower()
    if rate in ("", "0"):
        return None
    match = RATE_PATTERN.fullmatch(rate)
    if not match:
        raise ImproperlyConfigured(
            f"MAILSERVICE_API_RATE_LIMIT is {rate!r}; use requests/period such as 600/m (s, m, h, d) "
            "or 0 (off)."
        )
    count = int(match["sends"])
    return (rate, count) if count else None


def check_rate_limit(request: HttpRequest, api_key: ApiKey) -> None:
    """Count this request against the key's limit; RateLimited (429) past it.

    django-ratelimit keeps one counter per key and period in the default cache, so every
    process sharing that cache counts together (fixed periods, atomic on Redis and memcached).
    If the cache cannot count (Redis down), the request goes through and a warning is logged:
    it fails open, because the limit guards capacity while the key itself was checked in the
    database, and accepting a message needs no cache; refusing every call instead would turn a
    cache outage into an outage of the whole API (docs/api.md, "When the gateway is unavailable").
    """
    limit = api_rate_limit()
    if limit is None:
        return
    rate, _ = limit
    try:
        usage = get_usage(
            request, group=RATE_GROUP, key=lambda group, request: str(api_key.pk), rate=rate, increment=True
        )
    except Exception as err:  # the cache's own errors (a Redis connection refused) vary by backend
        # One line, no traceback: during an outage every request logs it.
        error_class = class_name(err)
        logger.warning(
            "api rate limit not checked: the cache failed path=%s error=%s",
            request.path,
            error_class,
            extra={"path": request.path, "error_class": error_class, "prefix": api_key.prefix},
        )
        return
    if not usage or not usage["limit"]:  # the cache did not count (django-ratelimit's failure value)
        logger.warning(
            "api rate limit not checked: the cache did not count path=%s",
            request.path,
            extra={"path": request.path, "prefix": api_key.prefix},
        )
        return
    if usage["should_limit"]:
        logger.info("api rate limited prefix=%s", api_key.prefix, extra={"prefix": api_key.prefix})
        # `time_left` runs to the period's last second, which still counts: the next starts after it.
        raise RateLimited(limit=rate, retry_after=usage["time_left"] + 1)


class ApiKeyAuth(HttpBearer):
    """The API key of a ninja operation, which needs one of `scopes` (none: any valid key)."""

    def __init__(self, *scopes: str):
        super().__init__()
        self.scopes = scopes

    def __call__(self, request: HttpRequest) -> ApiKey | None:
        # Replaces HttpBearer's, which logs the whole header of another scheme with DEBUG on.
        refuse_key_in_url(request)
        token = bearer_token(request)
        return self.authenticate(request, token) if token else None

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        api_key = api_key_authenticate(raw_key=token.strip())
        if api_key is None:
            return None
        check_rate_limit(request, api_key)
        require_scope(api_key, self.scopes)
        return api_key


def authenticate_request(request: HttpRequest, *scopes: str) -> ApiKey:
    """For views outside ninja (the send URL): the API key, or AuthenticationFailed (401),
    Forbidden (403) without one of `scopes`, RateLimited (429)."""
    refuse_key_in_url(request)
    token = bearer_token(request)
    api_key = api_key_authenticate(raw_key=token) if token else None
    if api_key is None:
        raise AuthenticationFailed([FieldError(None, UNAUTHORIZED)])
    check_rate_limit(request, api_key)
    require_scope(api_key, scopes)
    return api_key


def messages_owner(api_key: ApiKey) -> ApiKey | None:
    """Whose messages this key may read: its own, or every message (None) with the manage scope."""
    return None if api_key.has_scope("manage") else api_key
