"""The error the PostgreSQL side raises in Python (SQL errors come from the server)."""

from fastembed_ext.errors import FastembedExtError


class PgError(FastembedExtError):
    """Setting up or talking to PostgreSQL failed; the message says what to do about it."""
