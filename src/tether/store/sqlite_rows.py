"""Rows written to SQLite without SQLAlchemy's per-row parameter processing (span ingest's hot
path): values as the column types would bind them, in multi-row statements of 2^k rows.

An executemany steps once per row, and each step lets go of the GIL and takes it back, which
waits for whichever thread holds it (the next export being decoded): the writes then barely
overlap the decoding. A statement of 256 rows is stored in a single step, without the GIL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import sqlite

ROWS_PER_STATEMENT = 256  # x 22 columns (spans): 5,632 parameters (SQLite allows 32,766)
_DIALECT = sqlite.dialect()
_TWO = tuple(f"{i:02d}" for i in range(100))
_THREE = tuple(f"{i:03d}" for i in range(1000))


def timestamp(value: datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite DATETIME stores: "YYYY-MM-DD HH:MM:SS.ffffff" in UTC, built
    from digit tables (isoformat with its offset cut off costs twice as much; strftime more)."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime given; tether stores UTC-aware timestamps")
        value = value.astimezone(UTC)
    two, us, year = _TWO, value.microsecond, value.year
    return (
        f"{year if year >= 1000 else f'{year:04d}'}-{two[value.month]}-{two[value.day]} "
        f"{two[value.hour]}:{two[value.minute]}:{two[value.second]}."
        f"{_THREE[us // 1000]}{_THREE[us % 1000]}"
    )


def bound(value: Any) -> Any:
    """A str, int, float, bool, datetime or None as SQLite's column types bind it."""
    if isinstance(value, datetime):
        return timestamp(value)
    return int(value) if type(value) is bool else value


def execute(conn: Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    """`sql` (an INSERT of one `VALUES (?, …)` row) for each of `rows`, in multi-row statements;
    the first column of what a RETURNING clause returns."""
    out: list[Any] = []
    returns = " RETURNING " in sql
    done = 0
    while done < len(rows):
        n = ROWS_PER_STATEMENT
        while n > len(rows) - done:
            n //= 2
        params = tuple(chain.from_iterable(rows[done : done + n]))
        result = conn.exec_driver_sql(_multi_row_sql(sql, n), params)
        if returns:
            out.extend(result.scalars())
        done += n
    return out


def upsert(
    conn: Connection, table: Table, keys: tuple[str, ...], update_cols: tuple[str, ...],
    cols: tuple[str, ...], rows: Sequence[tuple[Any, ...]], returning: str | None = None,
) -> list[Any]:  # fmt: skip
    """INSERT … ON CONFLICT (`keys`) DO UPDATE `update_cols` (or DO NOTHING) of `rows`, their
    values in `cols` order (the table's); the `returning` column of the rows it inserted."""
    return execute(conn, _upsert_sql(table, keys, update_cols, cols, returning), rows)


@lru_cache(maxsize=16)
def _upsert_sql(
    table: Table, keys: tuple[str, ...], update_cols: tuple[str, ...], cols: tuple[str, ...],
    returning: str | None,
) -> str:  # fmt: skip
    insert = sqlite.insert(table)
    stmt: Any = (
        insert.on_conflict_do_update(
            index_elements=list(keys), set_={c: insert.excluded[c] for c in update_cols}
        )
        if update_cols
        else insert.on_conflict_do_nothing(index_elements=list(keys))
    )
    if returning is not None:
        stmt = stmt.returning(table.c[returning])
    compiled = stmt.compile(dialect=_DIALECT, column_keys=list(cols))
    if list(compiled.positiontup or ()) != list(cols):
        raise RuntimeError(f"{table.name} upsert parameters are not in column order")
    return str(compiled.string)


@lru_cache(maxsize=32)
def _multi_row_sql(sql: str, n: int) -> str:
    """`sql` with `n` rows of placeholders."""
    head, sep, rest = sql.partition(" VALUES (")
    group, close, tail = rest.partition(")")
    if not sep or not close or set(group.split(", ")) != {"?"}:
        raise RuntimeError(f"not a one-row INSERT … VALUES (?, …): {sql[:120]}")
    return f"{head} VALUES " + ", ".join([f"({group})"] * n) + tail
