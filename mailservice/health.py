"""Probes for load balancers and Prometheus: `/healthz`, `/readyz` and `/metrics` (docs/monitoring.md).

They answer over plain HTTP on the private network (SECURE_REDIRECT_EXEMPT) and without an API
key: a prober holds none. `/healthz` touches nothing, so a slow database never gets a healthy
process restarted. `/readyz` reaches each dependency the gateway needs to accept and deliver
mail, each bounded by a short timeout, so a dead Redis takes the process out of rotation within
a second or two instead of hanging the probe. `/metrics` takes a bearer token; without one it is
closed with DEBUG off unless MAILSERVICE_METRICS_PUBLIC says it is meant to be open, since its
figures (volumes, providers, failures) are the operator's business.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client.exposition import choose_encoder

from failover import conf as failover_conf
from failover.errors import error_class_name
from mailservice import conf, metrics
from mailservice.api.auth import bearer_token
from mailservice.api.errors import message_response

logger = logging.getLogger(__name__)

# Seconds a Redis probe may spend connecting, and again waiting for the reply; no retries.
CHECK_TIMEOUT = 1.0
CACHE_PROBE_KEY = "smtest:readyz"
RQ_BACKEND_PREFIX = "django_tasks_rq."
# `scheme://user:password@host`: the password of a connection URL never reaches a log line.
URL_PASSWORD = re.compile(r"(\w+://[^:/@\s]*:)[^@\s/]*@")
UNAUTHORIZED = "A valid metrics token is required in the header: Authorization: Bearer <token>."
# A 403, not a 401: no token exists that could open it, so asking for one would mislead.
METRICS_CLOSED = (
    "/metrics is closed: set MAILSERVICE_METRICS_TOKEN and scrape with Authorization: Bearer <token>, "
    "or set MAILSERVICE_METRICS_PUBLIC=1 to leave it open."
)
METRICS_UNAVAILABLE = "Metrics are unavailable: the database did not answer."


@dataclass(frozen=True, slots=True)
class Check:
    """One dependency: `role` is what the gateway uses it for (`database`, `cache`, `queue`),
    `kind` what it is, the name a 503 reports (`database`, `redis`, `cache`)."""

    role: str
    kind: str
    probe: Callable[[], None]  # returns when reachable, raises otherwise


@require_safe
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers HTTP. Nothing else is touched, on purpose."""
    return JsonResponse({"status": "ok"})


@require_safe
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when every dependency answers, else 503 naming what is down."""
    results = [(check, _run(check)) for check in readiness_checks()]
    down = sorted({check.kind for check, ok in results if not ok})
    body = {
        "status": "unavailable" if down else "ready",
        "down": down,
        "checks": {check.role: "ok" if ok else "down" for check, ok in results},
    }
    return JsonResponse(body, status=503 if down else 200)


@require_safe
@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition of mailservice.metrics, computed from the tables at each scrape."""
    token = conf.metrics_token()
    if token:
        if not _bearer_matches(request, token):
            return message_response(401, UNAUTHORIZED)
    elif not (settings.DEBUG or conf.metrics_public()):
        return message_response(403, METRICS_CLOSED)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    try:
        body = encoder(metrics.registry())
    except DatabaseError as err:
        # Prometheus records the failed scrape (`up` is 0); the log says why.
        _log_failure("metrics scrape failed", "metrics", "database", err)
        return message_response(503, METRICS_UNAVAILABLE)
    return HttpResponse(body, content_type=content_type)


def readiness_checks() -> list[Check]:
    """The database; the default cache and the failover memory's cache, when that is another;
    the RQ queues when delivery runs on RQ. The database task queue is the database itself."""
    checks = [Check("database", "database", _ping_database)]
    for alias in dict.fromkeys(["default", failover_conf.cache_alias()]):
        checks.append(_cache_check(alias))
    for alias, backend in getattr(settings, "TASKS", {}).items():
        if str(backend.get("BACKEND", "")).startswith(RQ_BACKEND_PREFIX):
            role = "queue" if alias == "default" else f"queue:{alias}"
            checks.append(Check(role, "redis", lambda backend=backend: _ping_rq(backend)))
    return checks


def _run(check: Check) -> bool:
    started = time.monotonic()
    try:
        check.probe()
    except Exception as err:  # whatever the driver raises, the dependency is not usable
        _log_failure("readiness check failed", check.role, check.kind, err, time.monotonic() - started)
        return False
    return True


def _log_failure(what: str, role: str, kind: str, err: BaseException, seconds: float | None = None) -> None:
    """One warning with the error's class and its text, connection passwords masked."""
    error_class = error_class_name(err)
    fields = {"check": role, "kind": kind, "error_class": error_class, "error": _without_passwords(err)}
    if seconds is not None:
        fields["duration"] = round(seconds, 3)
    logger.warning(f"{what} check=%s kind=%s error_class=%s", role, kind, error_class, extra=fields)


def _without_passwords(err: BaseException) -> str:
    text = URL_PASSWORD.sub(r"\1***@", " ".join(str(err).split()))[:300]
    password = str(settings.DATABASES.get(DEFAULT_DB_ALIAS, {}).get("PASSWORD") or "")
    return text.replace(password, "***") if password else text


def _ping_database() -> None:
    """One round trip on this process's own connection: what the next request would use. Its
    connect timeout is the driver's (`?connect_timeout=` in DATABASE_URL for PostgreSQL)."""
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _cache_check(alias: str) -> Check:
    role = "cache" if alias == "default" else f"cache:{alias}"
    backend = str(settings.CACHES.get(alias, {}).get("BACKEND", ""))
    kind = "redis" if "redis" in backend.lower() else "cache"
    return Check(role, kind, lambda: _ping_cache(alias))


def _ping_cache(alias: str) -> None:
    """Redis: PING every server on a connection of its own with short timeouts (the cache's
    own pool may wait longer, and retries). Another cache: write and read back a key."""
    cache = caches[alias]
    if not isinstance(cache, RedisCache):
        cache.set(CACHE_PROBE_KEY, "ok", 60)
        if cache.get(CACHE_PROBE_KEY) != "ok":
            raise RuntimeError(f"cache {alias!r} did not return the value just written")
        return
    import redis  # optional: with a Redis cache or queue (redis)

    config = settings.CACHES[alias]
    location = config.get("LOCATION", "")
    servers = re.split("[;,]", location) if isinstance(location, str) else list(location)
    # The options Django's RedisCache hands to redis-py's pool, without the cache client's own.
    options = {
        name: value
        for name, value in (config.get("OPTIONS") or {}).items()
        if name not in {"pool_class", "parser_class", "serializer"}
    }
    for server in servers:
        _ping_redis(redis.ConnectionPool.from_url(server, **{**options, **_bounded()}))


def _ping_rq(backend: dict[str, Any]) -> None:
    """PING the Redis server of each queue the RQ task backend uses, with short timeouts."""
    import django_rq  # optional: only with TASKS_BACKEND=rq (django-rq, django-tasks-rq)
    import redis  # optional: with a Redis cache or queue (redis)

    # As django-tasks-rq picks them: the backend's QUEUES, every RQ queue when that is empty.
    queues = list(backend.get("QUEUES", ["default"])) or list(getattr(settings, "RQ_QUEUES", {}))
    for name in queues:
        pool = django_rq.get_connection(name).connection_pool  # a new client and pool per call
        if type(pool) is redis.ConnectionPool:  # Sentinel and the like are pinged as configured
            pool = redis.ConnectionPool(
                connection_class=pool.connection_class, **{**pool.connection_kwargs, **_bounded()}
            )
        _ping_redis(pool)


def _bounded() -> dict[str, Any]:
    """redis-py connection options that bound a probe: short timeouts and no retry."""
    from redis.backoff import NoBackoff  # optional: with a Redis cache or queue (redis)
    from redis.retry import Retry

    return {
        "socket_connect_timeout": CHECK_TIMEOUT,
        "socket_timeout": CHECK_TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
    }


def _ping_redis(pool: Any) -> None:
    import redis  # optional: with a Redis cache or queue (redis)

    try:
        redis.Redis(connection_pool=pool).ping()
    finally:
        pool.disconnect()  # the probe's own pool: nothing else uses it


def _bearer_matches(request: HttpRequest, token: str) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    given = bearer_token(request)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
