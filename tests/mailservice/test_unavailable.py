"""When the database or the cache is out of reach, the API and the send URL answer 503 with
Retry-After in the JSON error format, never a 500 (docs/api.md, "When the gateway is
unavailable"); a mistake in the code or the data (IntegrityError, DataError, ProgrammingError,
SQLite's "no such table") stays a 500.

The database fails at a chosen statement through an execute wrapper, raising what Django's error
wrapper raises in production: its own class, raised from the driver's error (psycopg's for
PostgreSQL, sqlite3's). The cache is Django's RedisCache on a loopback port nobody listens on.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from contextlib import contextmanager
from typing import Any
from unittest import mock

import psycopg
import psycopg.errors
from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    connection,
)
from django.test import SimpleTestCase, TestCase, TransactionTestCase
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mailservice import tasks
from mailservice.availability import (
    CACHE,
    DATABASE,
    RETRY_AFTER_SECONDS,
    is_database_unavailable,
    unavailable_dependency,
)
from mailservice.models import IdempotencyKey, Message, Recipient
from tests.e2e.processes import free_port
from tests.mailservice.helpers import VALID, GatewayMixin, gateway_settings

API_KEY_LOOKUP = 'FROM "mailservice_apikey"'
MESSAGE_INSERT = 'INSERT INTO "mailservice_message"'
MESSAGE_READ = 'FROM "mailservice_message"'


def driver_error(django_class: type[DatabaseError], error: Exception) -> DatabaseError:
    """`error` as Django's DatabaseErrorWrapper raises it: Django's class, raised from the driver's."""
    wrapped = django_class(*error.args)
    wrapped.__cause__ = error
    return wrapped


def refused() -> DatabaseError:
    return driver_error(
        OperationalError,
        psycopg.OperationalError(
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused'
        ),
    )


def admin_shutdown() -> DatabaseError:
    return driver_error(
        OperationalError, psycopg.errors.AdminShutdown("terminating connection due to administrator command")
    )


def closed_unexpectedly() -> DatabaseError:
    return driver_error(
        OperationalError,
        psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
    )


def sqlite_error(message: str) -> DatabaseError:
    return driver_error(OperationalError, sqlite3.OperationalError(message))


def unique_violation() -> DatabaseError:
    return driver_error(IntegrityError, psycopg.errors.UniqueViolation("duplicate key value"))


@contextmanager
def database_fails(sql_part: str, error: Exception):
    """Every statement containing `sql_part` raises `error`; the others run as usual."""

    def fail(execute, sql: str, params: Any, many: bool, context: dict):
        if sql_part in sql:
            raise error
        return execute(sql, params, many, context)

    with connection.execute_wrapper(fail):
        yield


def unreachable_redis() -> dict:
    """CACHES with Django's RedisCache on a loopback port with no server: connection refused."""
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }


class UnavailabilityAssertions:
    def assert_unavailable(self, response, dependency: str = DATABASE) -> None:
        """503, Retry-After in whole seconds, and the JSON error format naming the dependency."""
        self.assertEqual(response.status_code, 503, response.content)
        self.assertEqual(response["Retry-After"], str(RETRY_AFTER_SECONDS))
        self.assertEqual(response["Content-Type"], "application/json")
        errors = response.json()["errors"]
        self.assertEqual([error["field"] for error in errors], [None])
        self.assertIn(dependency, errors[0]["message"])

    def assert_bug(self, response) -> None:
        """The JSON 500 of a bug, not a 503."""
        self.assertEqual(response.status_code, 500, response.content)
        self.assertNotIn("Retry-After", response)
        self.assertEqual(response["Content-Type"], "application/json")


class AvailabilityTests(SimpleTestCase):
    """Which errors mean "out of reach, retry" (mailservice.availability)."""

    def test_connection_refused_admin_shutdown_and_a_closed_connection_mean_the_database_is_unavailable(self):
        """What a PostgreSQL restart raises, through Django's wrapper."""
        for error in (refused(), admin_shutdown(), closed_unexpectedly()):
            with self.subTest(error=str(error)):
                self.assertEqual(unavailable_dependency(error), DATABASE)

    def test_sqlite_database_is_locked_is_the_database_being_unavailable(self):
        """A lock held past SQLite's busy timeout: retrying is the cure."""
        self.assertTrue(is_database_unavailable(sqlite_error("database is locked")))

    def test_sqlite_no_such_table_is_a_mistake(self):
        """An unmigrated database is an OperationalError too, but no retry mends it."""
        self.assertFalse(is_database_unavailable(sqlite_error("no such table: mailservice_message")))

    def test_a_closed_connection_interface_error_is_unavailability_a_closed_cursor_is_not(self):
        """InterfaceError counts only when it is about the connection."""
        self.assertTrue(is_database_unavailable(InterfaceError("connection already closed")))
        lost = driver_error(InterfaceError, psycopg.InterfaceError("the connection is lost"))
        cursor_closed = driver_error(InterfaceError, psycopg.InterfaceError("the cursor is closed"))
        self.assertTrue(is_database_unavailable(lost))
        self.assertFalse(is_database_unavailable(cursor_closed))

    def test_integrity_data_and_programming_errors_are_not_unavailability(self):
        """Bugs and bad data stay 500s (or the validation that should have caught them)."""
        errors = (
            unique_violation(),
            driver_error(DataError, psycopg.errors.NumericValueOutOfRange("integer out of range")),
            driver_error(ProgrammingError, psycopg.errors.UndefinedTable('relation "x" does not exist')),
        )
        for error in errors:
            with self.subTest(error=type(error).__name__):
                self.assertIsNone(unavailable_dependency(error))

    def test_an_error_raised_from_an_outage_is_unavailability(self):
        """An explicit cause (`raise ... from`) carries the outage through a wrapper."""
        try:
            raise RuntimeError("could not store") from admin_shutdown()
        except RuntimeError as error:
            self.assertEqual(unavailable_dependency(error), DATABASE)

    def test_a_bug_while_handling_an_outage_is_still_a_bug(self):
        """An error merely raised during the handling of an outage is not answered as one."""
        try:
            try:
                raise admin_shutdown()
            except OperationalError:
                raise TypeError("a bug in the except block") from None
        except TypeError as error:
            self.assertIsNone(unavailable_dependency(error))

    def test_redis_refused_or_timing_out_is_the_cache_being_unavailable(self):
        """The cache's own connection errors, as Django's RedisCache lets them through."""
        for error in (RedisConnectionError("Error 111 connecting"), RedisTimeoutError("Timeout reading")):
            with self.subTest(error=type(error).__name__):
                self.assertEqual(unavailable_dependency(error), CACHE)

    def test_other_errors_are_not_unavailability(self):
        """Anything else is left to the 500 handler."""
        for error in (ValueError("x"), KeyError("y"), ConnectionError("not the database's")):
            with self.subTest(error=type(error).__name__):
                self.assertIsNone(unavailable_dependency(error))


@gateway_settings()
class DatabaseUnavailableApiTests(UnavailabilityAssertions, GatewayMixin, TestCase):
    """The JSON API with the database out of reach at each point of a request."""

    def test_an_outage_during_api_key_authentication_answers_503(self):
        """The key lookup fails: 503 with Retry-After, not 401 and not 500."""
        with database_fails(API_KEY_LOOKUP, refused()):
            response = self.post_message(VALID)
        self.assert_unavailable(response)
        self.assertEqual(Message.objects.count(), 0)

    def test_an_outage_while_accepting_answers_503_and_stores_nothing(self):
        """The message insert fails: 503, and neither message, recipient nor idempotency key remains."""
        with database_fails(MESSAGE_INSERT, admin_shutdown()):
            response = self.post_message(VALID, headers={"HTTP_IDEMPOTENCY_KEY": "order-1"})
        self.assert_unavailable(response)
        stored = (Message.objects.count(), Recipient.objects.count(), IdempotencyKey.objects.count())
        self.assertEqual(stored, (0, 0, 0))

    def test_sqlite_database_is_locked_answers_503(self):
        """SQLite's lock held past the busy timeout is an outage too."""
        with database_fails(MESSAGE_INSERT, sqlite_error("database is locked")):
            response = self.post_message(VALID)
        self.assert_unavailable(response)

    def test_listing_messages_answers_503_when_the_connection_is_cut(self):
        """GET /api/messages: the select fails after authentication."""
        with database_fails(MESSAGE_READ, closed_unexpectedly()):
            response = self.client.get("/api/messages", **self.auth)
        self.assert_unavailable(response)

    def test_reading_a_message_answers_503_when_the_connection_is_cut(self):
        """GET /api/messages/{id}: the select fails after authentication."""
        message_id = self.post_message(VALID).json()["id"]
        with database_fails(MESSAGE_READ, closed_unexpectedly()):
            response = self.client.get(f"/api/messages/{message_id}", **self.auth)
        self.assert_unavailable(response)

    def test_suppressions_answer_503_when_the_database_refuses(self):
        """Every route, not only the message ones."""
        with database_fails('"mailservice_suppression"', refused()):
            response = self.client.get("/api/suppressions", **self.auth)
        self.assert_unavailable(response)

    def test_an_integrity_error_is_still_a_500(self):
        """A constraint violation is a bug, not an outage: retrying would not help."""
        with database_fails(MESSAGE_INSERT, unique_violation()):
            with self.assertLogs("mailservice.api.errors", "ERROR"):
                response = self.post_message(VALID)
        self.assert_bug(response)

    def test_sqlite_no_such_table_is_still_a_500(self):
        """An unmigrated table is a deployment mistake, answered as a bug."""
        with database_fails(MESSAGE_INSERT, sqlite_error("no such table: mailservice_message")):
            with self.assertLogs("mailservice.api.errors", "ERROR"):
                response = self.post_message(VALID)
        self.assert_bug(response)

    def test_each_503_logs_one_warning_with_the_path_and_error_classes_and_no_body_or_key(self):
        """One structured warning line; neither the request body nor the API key appears in it."""
        body = {**VALID, "subject": "Confidential subject"}
        with database_fails(MESSAGE_INSERT, admin_shutdown()), self.assertNoLogs("django.request"):
            with self.assertLogs("mailservice.api.errors", "WARNING") as logs:
                self.post_message(body)
        self.assertEqual(len(logs.records), 1)
        record = logs.records[0]
        self.assertEqual(record.levelno, logging.WARNING)
        self.assertEqual(record.path, "/api/messages")
        self.assertEqual(record.dependency, DATABASE)
        self.assertEqual(record.error_class, "django.db.utils.OperationalError")
        self.assertEqual(record.cause_class, "psycopg.errors.AdminShutdown")
        logged = json.dumps({**record.__dict__, "msg": record.getMessage()}, default=str)
        self.assertNotIn("Confidential subject", logged)
        self.assertNotIn(self.raw_key, logged)

    def test_a_retry_with_the_same_idempotency_key_after_a_503_stores_the_message_once(self):
        """The contract a 503 offers: send the same request again, with the same key."""
        headers = {"HTTP_IDEMPOTENCY_KEY": "order-4711"}
        with database_fails(MESSAGE_INSERT, refused()):
            self.assert_unavailable(self.post_message(VALID, headers=headers))
        first = self.post_message(VALID, headers=headers)
        again = self.post_message(VALID, headers=headers)
        self.assertEqual((first.status_code, again.status_code), (202, 202))
        self.assertEqual(first.json()["id"], again.json()["id"])
        self.assertEqual(again["Idempotent-Replayed"], "true")
        self.assertEqual(Message.objects.count(), 1)


@gateway_settings()
class DatabaseUnavailableSendUrlTests(UnavailabilityAssertions, GatewayMixin, TestCase):
    """The send URL (`GET|POST /`) answers outages as the API does."""

    def test_an_outage_during_authentication_answers_503(self):
        """GET /?to=…: the key lookup fails."""
        with database_fails(API_KEY_LOOKUP, refused()):
            response = self.client.get("/?to=jane@example.com", **self.auth)
        self.assert_unavailable(response)

    def test_an_outage_while_accepting_answers_503_and_stores_nothing(self):
        """POST / with a JSON body: the message insert fails."""
        with database_fails(MESSAGE_INSERT, admin_shutdown()):
            response = self.client.post("/", json.dumps(VALID), content_type="application/json", **self.auth)
        self.assert_unavailable(response)
        self.assertEqual(Message.objects.count(), 0)

    def test_an_outage_logs_one_warning_with_the_send_url_path(self):
        """The same warning line as the API's."""
        with database_fails(MESSAGE_INSERT, refused()), self.assertNoLogs("django.request"):
            with self.assertLogs("mailservice.api.errors", "WARNING") as logs:
                self.client.post("/", {"to": "jane@example.com", "text": "Hello"}, **self.auth)
        self.assertEqual([(r.levelname, r.path) for r in logs.records], [("WARNING", "/")])

    def test_an_integrity_error_is_still_a_500(self):
        """A bug at the send URL stays a JSON 500."""
        self.client.raise_request_exception = False
        with database_fails(MESSAGE_INSERT, unique_violation()):
            response = self.client.get("/?to=jane@example.com", **self.auth)
        self.assert_bug(response)


@gateway_settings(MAILSERVICE_API_RATE_LIMIT="3/m")
class CacheUnavailableTests(UnavailabilityAssertions, GatewayMixin, TestCase):
    """A Redis cache that refuses connections: the rate limit fails open, the failover memory 503s."""

    def test_the_rate_limit_check_fails_open_and_the_message_is_accepted(self):
        """The limit is skipped with a warning naming the path and the error class; the key was
        checked in the database, and accepting needs no cache."""
        with self.settings(CACHES=unreachable_redis()):
            with self.assertLogs("mailservice.api.auth", "WARNING") as logs:
                responses = [self.post_message(VALID) for _ in range(5)]  # past the limit of 3
        self.assertEqual([response.status_code for response in responses], [202] * 5)
        self.assertEqual(Message.objects.count(), 5)
        record = logs.records[0]
        self.assertEqual(record.path, "/api/messages")
        self.assertEqual(record.error_class, "redis.exceptions.ConnectionError")

    def test_the_send_url_fails_open_too(self):
        """The send URL shares the key's limit and its failure mode."""
        with self.settings(CACHES=unreachable_redis()), self.assertLogs("mailservice.api.auth", "WARNING"):
            response = self.client.get("/?to=jane@example.com", **self.auth)
        self.assertEqual(response.status_code, 202, response.content)

    def test_reading_messages_needs_no_cache(self):
        """GET /api/messages answers from the database alone."""
        with self.settings(CACHES=unreachable_redis()), self.assertLogs("mailservice.api.auth", "WARNING"):
            response = self.client.get("/api/messages", **self.auth)
        self.assertEqual(response.status_code, 200, response.content)

    def test_provider_states_answer_503_naming_the_cache(self):
        """GET /api/providers reads the failover memory, which lives in the cache."""
        with self.settings(CACHES=unreachable_redis()), self.assertLogs("mailservice", "WARNING"):
            response = self.client.get("/api/providers", **self.auth)
        self.assert_unavailable(response, CACHE)


@gateway_settings()
class CommittedAcceptTests(GatewayMixin, TransactionTestCase):
    """Once the accept transaction commits, the answer is 202 whatever the wake-up does: it runs
    on commit, inside the request, and never raises (mailservice/tasks.py, wake_delivery)."""

    def test_a_wake_up_whose_enqueue_fails_after_commit_still_answers_202(self):
        """The task queue's database write fails after the message committed: 202, the message kept."""
        deliver_due = mock.Mock()
        deliver_due.enqueue.side_effect = admin_shutdown()
        with mock.patch("mailservice.tasks.deliver_due", deliver_due):
            with self.assertLogs("mailservice.tasks", "WARNING"):
                response = self.post_message(VALID)
            tasks.forget_owed_wake_up()  # no retry of the failed wake-up after this test
        self.assertEqual(response.status_code, 202, response.content)
        deliver_due.enqueue.assert_called()  # the wake-up really ran, inside the request
        self.assertTrue(Message.objects.filter(pk=response.json()["id"]).exists())

    def test_a_cache_outage_in_the_wake_up_still_answers_202_and_wakes_anyway(self):
        """The wake-up's coalescing marker cannot be set: it enqueues anyway, and the answer is 202."""
        from django_tasks_db.models import DBTaskResult

        with self.settings(CACHES=unreachable_redis()), self.assertLogs("mailservice", "WARNING"):
            response = self.post_message(VALID)
        self.assertEqual(response.status_code, 202, response.content)
        self.assertTrue(Message.objects.filter(pk=response.json()["id"]).exists())
        self.assertEqual(DBTaskResult.objects.count(), 1)
