"""What the client-side commands share about talking to PostgreSQL: connecting, and turning a
server error into the text a user reads (message, DETAIL, HINT)."""

from __future__ import annotations

import psycopg

from .errors import PgError


def connect(dsn: str, *, autocommit: bool = False) -> psycopg.Connection:
    """A connection, or a PgError naming the DSN and why it failed, on one line."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise PgError(f"cannot connect to {dsn}: " + " ".join(str(exc).split())) from None


def error_text(exc: psycopg.Error, *, one_line: bool = False) -> str:
    """The server's message, detail and hint."""
    diag = exc.diag
    parts = [diag.message_primary or " ".join(str(exc).split())]
    if diag.message_detail:
        parts.append("DETAIL: " + diag.message_detail)
    if diag.message_hint:
        parts.append("HINT: " + diag.message_hint)
    return (" " if one_line else "\n").join(parts)
