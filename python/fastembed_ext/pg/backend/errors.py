"""How the backend reports problems: PostgreSQL errors with an SQLSTATE, a DETAIL and a HINT.

PL/Python prints an exception that escapes a function as ``<class name>: <message>``. The class
below is named ``fastembed_ext`` (in module ``builtins``, which PL/Python leaves out), so a user
reads ``ERROR:  fastembed_ext: unknown model "x"`` rather than ``plpy.Error: ...``; as a subclass
of ``plpy.Error`` its ``sqlstate``, ``detail`` and ``hint`` reach the client.
"""

from __future__ import annotations

import plpy  # PL/Python's module: this package runs inside PostgreSQL backends only

from fastembed_ext.errors import (
    BundleChangedError,
    FastembedExtError,
    ModelLoadError,
    UnsupportedModelError,
)

# Every new backend imports this package on its first embed(); typing, functools and
# collections.abc would take longer to import than that embed() takes. Hence no runtime imports
# of them here or in the modules beside this one.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])


class fastembed_ext(plpy.Error):  # noqa: N801 - the name is what users read
    def __init__(self, message: str, *, sqlstate: str, detail: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint


fastembed_ext.__module__ = "builtins"
SqlError = fastembed_ext


def fail(message: str, *, sqlstate: str, detail: str | None = None, hint: str | None = None) -> NoReturn:
    raise SqlError(message, sqlstate=sqlstate, detail=detail, hint=hint)


# Errors of the engine, as SQL sees them.
_ENGINE_SQLSTATES: tuple[tuple[type[Exception], str], ...] = (
    (BundleChangedError, "XX001"),  # data_corrupted: the files no longer match the registration
    (UnsupportedModelError, "0A000"),  # feature_not_supported
    (ModelLoadError, "58030"),  # io_error
    (FastembedExtError, "XX000"),
)


def from_engine(exc: FastembedExtError, what: str, hint: str | None = None) -> SqlError:
    sqlstate = next(code for cls, code in _ENGINE_SQLSTATES if isinstance(exc, cls))
    return SqlError(what, sqlstate=sqlstate, detail=str(exc), hint=hint)


def _from_spi(exc: Any) -> SqlError:
    """An SQL statement the backend ran failed: keep its message, code, detail and hint."""
    spidata = getattr(exc, "spidata", None) or ()
    detail = spidata[1] if len(spidata) > 1 else None
    hint = spidata[2] if len(spidata) > 2 else None
    sqlstate = getattr(exc, "sqlstate", None) or "XX000"
    query = spidata[3] if len(spidata) > 3 else None
    if query and sqlstate.startswith("42") and sqlstate != "42501":  # a statement of ours is wrong
        detail = "\n".join(filter(None, [detail, f"In the statement: {query}"]))
    return SqlError(str(exc), sqlstate=sqlstate, detail=detail, hint=hint)


def entry(fn: F) -> F:
    """Marks what SQL calls: every failure leaves it as an SqlError."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SqlError:
            raise
        except plpy.SPIError as exc:
            raise _from_spi(exc) from None
        except FastembedExtError as exc:
            raise from_engine(exc, "the embedding engine failed") from None
        except Exception as exc:  # noqa: BLE001 - a bug; say where, without a traceback dump
            import traceback  # only here: it imports the tokenizer, a few ms of every new backend

            frame = traceback.extract_tb(exc.__traceback__)[-1]
            raise SqlError(
                "internal error",
                sqlstate="XX000",
                detail=f"{type(exc).__name__}: {exc} (at {frame.filename}:{frame.lineno})",
                hint="This is a bug in fastembed_ext; please report it with this message.",
            ) from None

    # functools.wraps, without importing functools
    wrapper.__name__, wrapper.__qualname__, wrapper.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
