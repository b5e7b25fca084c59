"""Writing many rows whose new values differ row by row, in one prepared statement.

Django's `bulk_update()` builds one CASE expression per row and field, which costs it about a
millisecond per row before the database sees anything; a batch of 100 messages spent more time
there than sending them (docs/benchmarks.md). An UPDATE by primary key run with `executemany`
is one statement for the database driver: SQLite loops in C, psycopg pipelines it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model
from django.db.models.options import Options


def update_rows(objs: Sequence[Model], fields: Sequence[str], *, using: str | None = None) -> int:
    """Write `fields` of each object to its row, as `save(update_fields=fields)` would, without
    signals or per-row queries. Returns how many objects were written."""
    if not objs:
        return 0
    connection, opts = _target(objs, using)
    columns = [opts.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in columns)
    sql = f"UPDATE {quote(opts.db_table)} SET {assignments} WHERE {quote(opts.pk.column)} = %s"
    return _execute_many(
        connection,
        sql,
        [
            [field.get_db_prep_save(getattr(obj, field.attname), connection) for field in columns]
            + [opts.pk.get_db_prep_value(obj.pk, connection)]
            for obj in objs
        ],
    )


def insert_rows(objs: Sequence[Model], *, using: str | None = None) -> int:
    """Insert new objects of one model in one prepared statement, as `bulk_create()` would for
    objects that need no database-generated values back (their primary key is set, or unused
    afterwards) and no signals. Django builds an INSERT anew for every call, which costs the API
    more than the database does for a message and its few recipients (docs/benchmarks.md)."""
    if not objs:
        return 0
    connection, opts = _target(objs, using)
    fields = [
        field
        for field in opts.concrete_fields
        if not (field.primary_key and getattr(objs[0], field.attname) is None)
    ]
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(opts.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    return _execute_many(
        connection,
        sql,
        [[field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields] for obj in objs],
    )


def _target(objs: Sequence[Model], using: str | None) -> tuple[BaseDatabaseWrapper, Options]:
    """The connection that writes these objects' model, and the model's options."""
    model = type(objs[0])
    return connections[using or router.db_for_write(model)], model._meta


def _execute_many(connection: BaseDatabaseWrapper, sql: str, rows: list[list[Any]]) -> int:
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
    return len(rows)


def insert_new_rows(
    model: type[Model],
    columns: Sequence[str],
    rows: list[list[Any]],
    *,
    unique: Sequence[str],
    returning: Sequence[str],
    using: str | None = None,
) -> list[tuple]:
    """INSERT … ON CONFLICT (unique) DO NOTHING RETURNING …, one multi-row statement per
    parameter-limit chunk; returns the `returning` columns of the rows inserted now. `rows` hold
    values as the database takes them (`get_db_prep_save`), in `columns` order.

    Only a taken unique key skips a row: any other constraint (a JSON check) fails the statement,
    unlike INSERT OR IGNORE, which drops such rows without a word. Written as SQL because
    bulk_create adapts each value on its own, which for a 1,000-event webhook post cost more than
    everything else together (docs/benchmarks.md). SQLite 3.35+ and PostgreSQL have this
    statement; the system check mailservice.E105 refuses a database without it."""
    db = using or router.db_for_write(model)
    connection = connections[db]
    meta, quote = model._meta, connection.ops.quote_name
    fields = [meta.get_field(name) for name in columns]

    def names(of: Sequence[str]) -> str:
        return ", ".join(quote(meta.get_field(name).column) for name in of)

    head = f"INSERT INTO {quote(meta.db_table)} ({names(columns)}) VALUES "
    tail = f" ON CONFLICT ({names(unique)}) DO NOTHING RETURNING {names(returning)}"
    placeholders = f"({', '.join(['%s'] * len(fields))})"
    batch_size = max(connection.ops.bulk_batch_size(fields, rows), 1)
    inserted: list[tuple] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            params = [value for row in chunk for value in row]
            cursor.execute(head + ", ".join([placeholders] * len(chunk)) + tail, params)
            inserted.extend(cursor.fetchall())
    return inserted


def supports_insert_returning(using: str) -> bool:
    """INSERT … ON CONFLICT (columns) DO NOTHING RETURNING: SQLite 3.35+ and PostgreSQL."""
    features = connections[using].features
    return features.supports_update_conflicts_with_target and features.can_return_rows_from_bulk_insert
