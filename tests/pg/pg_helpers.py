"""Small helpers shared by the PostgreSQL tests."""

from __future__ import annotations

import numpy as np


def fetch_vector(conn, query: str, params=()) -> np.ndarray | None:
    row = conn.execute(f"SELECT ({query})::real[]", params).fetchone()
    return None if row[0] is None else np.asarray(row[0], dtype=np.float32)


def assert_same_vectors(got, want, atol: float = 1e-6) -> None:
    got = np.asarray(got, dtype=np.float32)
    want = np.asarray(want, dtype=np.float32)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= atol, np.abs(got - want).max()


def backend_notice(conn, statement: str) -> str:
    """The last NOTICE that ``statement`` (usually a DO block) raises in the connection's backend."""
    notices: list[str] = []

    def handler(diag) -> None:
        notices.append(diag.message_primary)

    conn.add_notice_handler(handler)
    try:
        conn.execute(statement)
    finally:
        conn.remove_notice_handler(handler)
    return notices[-1]
