"""Which errors mean "a service the gateway needs is out of reach for a moment" rather than "a bug".

A restarting PostgreSQL refuses connections and cuts the ones it had; SQLite answers "database is
locked" once another process held the lock past the busy timeout; a stopped Redis refuses the
cache's connections. None of these is the request's fault or the code's: the client should retry
shortly, so the API and the send URL answer 503 with Retry-After (docs/api.md, "When the gateway
is unavailable") instead of a 500, which the docs call a bug. One function decides for every entry
point (`api/errors.py` for ninja's routes, `middleware.py` for the send URL), so both read an
outage alike.

Errors are recognized by class, as PEP 249 names them for every database driver and Django's
wrappers, and by the driver's own error the wrapper was raised from: Django's OperationalError
also wraps SQLite's "no such table" (a deployment left unmigrated), which retrying never mends.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

DATABASE = "database"
CACHE = "cache"

# Seconds a 503 asks the client to wait (Retry-After). A fast PostgreSQL restart is over in about
# a second, after which each process's next request reconnects (DATABASE_CONN_HEALTH_CHECKS); a
# retry after two seconds usually lands on a working database, without keeping a client waiting
# long when the outage was a lock held past SQLite's busy timeout.
RETRY_AFTER_SECONDS = 2

# PEP 249's error classes by name, which every driver's classes and Django's wrappers derive from.
DB_API_ERRORS = (
    "IntegrityError",
    "DataError",
    "ProgrammingError",
    "NotSupportedError",
    "InternalError",
    "OperationalError",
    "InterfaceError",
)
# SQLite's OperationalErrors that say "not now": a lock held past the busy timeout, a file that
# cannot be opened (a volume not mounted yet). Its others ("no such table") are mistakes.
SQLITE_UNAVAILABLE = ("database is locked", "database table is locked", "unable to open database file")
# The cache's connection refused, cut or timed out (a Redis AuthenticationError is a
# ConnectionError too: a wrong password also leaves the cache out of reach until it is fixed).
CACHE_ERRORS = (RedisConnectionError, RedisTimeoutError)


def unavailable_dependency(error: BaseException) -> str | None:
    """`DATABASE` or `CACHE` when `error` says that dependency is out of reach, else None."""
    if is_database_unavailable(error):
        return DATABASE
    if is_cache_unavailable(error):
        return CACHE
    return None


def is_database_unavailable(error: BaseException) -> bool:
    """True when the database could not be reached or cut the connection: connection refused,
    "server closed the connection unexpectedly", "terminating connection due to administrator
    command", a closed connection used again, SQLite's "database is locked". False for
    IntegrityError, DataError, ProgrammingError and the rest, which a retry does not mend.

    The deepest database error of the explicit cause chain decides: it is the driver's own, which
    Django's wrapper was raised from and which says most. Only `raise ... from` causes count, not
    an error merely raised while another was being handled: a bug in an `except` block stays a bug.
    """
    errors = [(link, kind) for link in _causes(error) if (kind := _db_api_kind(link))]
    if not errors:
        return False
    link, kind = errors[-1]
    if kind == "OperationalError":
        if isinstance(link, sqlite3.Error):
            return any(text in str(link).lower() for text in SQLITE_UNAVAILABLE)
        return True
    if kind == "InterfaceError":
        # "connection already closed", "the connection is in status BAD"; not "the cursor is
        # closed" or SQLite's refusal to bind a value, which are mistakes in the code.
        return not isinstance(link, sqlite3.Error) and "connection" in str(link).lower()
    return False


def is_cache_unavailable(error: BaseException) -> bool:
    """True when the cache server (Redis) refused, cut or timed out the connection."""
    return any(isinstance(link, CACHE_ERRORS) for link in _causes(error))


def _causes(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what it was explicitly raised from, outermost first (cycles cut)."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__


def _db_api_kind(error: BaseException) -> str | None:
    """The PEP 249 class `error` is an instance of (the most specific), or None."""
    for cls in type(error).__mro__:
        if cls.__name__ in DB_API_ERRORS:
            return cls.__name__
    return None
