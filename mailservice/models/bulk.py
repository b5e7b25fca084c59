"""Writing many rows whose new values differ row by row, in one prepared statement.

Django's `bulk_update()` builds one CASE expression per row and field, which costs it about a
millisecond per row before the database sees anything; a batch of 100 messages spent more time
there than sending them (docs/benchmarks.md). An UPDATE by primary key run with `executemany`
is one statement for the database driver: SQLite loops in C, psycopg pipelines it.
"""
from __future__ import annotations

from collections.abc import Sequence

from django.db import connections, router
from django.db.models import Model


def update_rows(objs: Sequence[Model], fields: Sequence[str], *, using: str | None = None) -> int:
    """Write `fields` of each object to its row, as `save(update_fields=fields)` would, without
    signals or per-row queries. Returns how many objects were written."""
    if not objs:
        return 0
    model = type(objs[0])
    db = using or router.db_for_write(model)
    connection = connections[db]
    opts = model._meta
    columns = [opts.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in columns)
    sql = f"UPDATE {quote(opts.db_table)} SET {assignments} WHERE {quote(opts.pk.column)} = %s"
    rows = [
        [field.get_db_prep_save(getattr(obj, field.attname), connection) for field in columns]
        + [opts.pk.get_db_prep_value(obj.pk, connection)]
        for obj in objs
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
    return len(rows)


def insert_rows(objs: Sequence[Model], *, using: str | None = None) -> int:
    """Insert new objects of one model in one prepared statement, as `bulk_create()` would for
    objects that need no database-generated values back (their primary key is set, or unused
    afterwards) and no signals. Django builds an INSERT anew for every call, which costs the API
    more than the database does for a message and its few recipients (docs/benchmarks.md)."""
    if not objs:
        return 0
    model = type(objs[0])
    db = using or router.db_for_write(model)
    connection = connections[db]
    opts = model._meta
    fields = [field for field in opts.concrete_fields if not (field.primary_key and getattr(objs[0], field.attname) is None)]
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(opts.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    rows = [[field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields] for obj in objs]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
    return len(rows)
