"""Several SQL statements in one round trip to PostgreSQL.

On a busy host every round trip costs two context switches, and the wait for
them, not the statements, dominates a batch's bookkeeping (measured for
issue 14: 4-15 ms per statement at load 8-14 on 2 cores). Django's psycopg
cursors bind parameters on the client, so one ``execute`` can carry several
``;``-separated statements; their results come back in order (``nextset``).
They run in the caller's transaction, in the order given.
"""
from __future__ import annotations

from django.db import connection
from django.db.models.sql import InsertQuery

Statement = tuple[str, list]


def run_together(statements: list[Statement]) -> list[list[tuple] | None]:
    """Execute the statements in one round trip; each one's rows (None for a statement returning none)."""
    if not statements:
        return []
    sql = ";\n".join(s for s, _ in statements)
    params = [p for _, ps in statements for p in ps]
    results: list[list[tuple] | None] = []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while True:
            results.append(cursor.fetchall() if cursor.description is not None else None)
            if not cursor.nextset():
                break
    if len(results) != len(statements):
        raise RuntimeError(f"{len(statements)} statements gave {len(results)} results")
    return results


def insert_returning_pks(objs: list) -> Statement:
    """A multi-row INSERT of unsaved model instances, ``RETURNING`` their primary keys in order.

    Built by Django's own insert compiler (the one ``bulk_create`` uses), so
    field defaults, ``auto_now_add`` and value preparation are the model's.
    Pass the returned keys to ``set_pks``.
    """
    model = type(objs[0])
    fields = [f for f in model._meta.concrete_fields if not f.primary_key and not f.generated]
    query = InsertQuery(model)
    query.insert_values(fields, objs)
    compiler = query.get_compiler(connection=connection)
    compiler.returning_fields = [model._meta.pk]
    (sql, params), = compiler.as_sql()
    return sql, list(params)


def set_pks(objs: list, rows: list[tuple]) -> None:
    """Give the instances inserted by ``insert_returning_pks`` their keys, as ``bulk_create`` does."""
    for obj, (pk, *_) in zip(objs, rows, strict=True):
        obj.pk = pk
        obj._state.adding = False
        obj._state.db = connection.alias
