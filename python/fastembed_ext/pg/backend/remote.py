"""Embedding through the machine's embedding server (`fastembed-ext serve`), when the database
sets fastembed_ext.server: the backend loads no model, and no libtorch.

The backend asks for the bundle its registry pinned, by fingerprint, and checks the fingerprint
the server answers with, so the vectors are those the backend would compute itself. It asks for
pgvector's text form and hands it to PostgreSQL as it is.
"""

from __future__ import annotations

from fastembed_ext._http import Connection
from fastembed_ext.errors import ServerError

from .errors import fail

TYPE_CHECKING = False  # (typing costs every new backend milliseconds)
if TYPE_CHECKING:
    from .models import Model

# Texts per request (the server takes up to 2,048 by default).
_TEXTS_PER_REQUEST = 1024
TIMEOUT_MS = (100, 600_000)
DEFAULT_TIMEOUT_MS = 30_000


class Remote:
    """A model served by the embedding server at `url` (timeout in seconds)."""

    __slots__ = ("url", "timeout", "model", "dim", "similarity")

    def __init__(self, url: str, timeout: float, model: Model, dim: int, similarity: str) -> None:
        self.url, self.timeout, self.model, self.dim, self.similarity = url, timeout, model, dim, similarity

    def literals(self, connections: dict, texts: list[str], prompt_name: str | None = None) -> list[str]:
        conn = connections.get((self.url, self.timeout))
        if conn is None:
            conn = connections[(self.url, self.timeout)] = Connection(self.url, self.timeout)
        out: list[str] = []
        for start in range(0, len(texts), _TEXTS_PER_REQUEST):
            chunk = texts[start : start + _TEXTS_PER_REQUEST]
            body = {"inputs": chunk, "fingerprint": self.model.fingerprint}
            if prompt_name is not None:
                body["prompt_name"] = prompt_name
            try:
                data, headers = conn.request("POST", "/embed", body, accept="text/x-pgvector")
            except ServerError as exc:
                self._fail(exc)
            if headers.get("x-fastembed-fingerprint") != self.model.fingerprint:
                fail(
                    f'the embedding server at {self.url} answered with another bundle than model '
                    f'"{self.model.name}"',
                    sqlstate="XX001",
                    detail=f"Registered: {self.model.fingerprint}; answered: "
                    f"{headers.get('x-fastembed-fingerprint')}.",
                    hint="Serve the registered bundle, or check which server fastembed_ext.server names.",
                )
            lines = data.decode().splitlines()
            if len(lines) != len(chunk):
                fail(f"the embedding server at {self.url} answered {len(lines)} vectors for {len(chunk)} texts",
                     sqlstate="XX000", detail="The answer is incomplete.", hint="Check the server's log.")
            out.extend(lines)
        return out

    def _fail(self, exc: ServerError) -> None:
        name, path = self.model.name, self.model.path
        start = f"fastembed-ext serve --model {name}={path} --socket /path/to/server.sock"
        if exc.status is None:
            fail(
                f"cannot reach the embedding server at {self.url}",
                sqlstate="08006",
                detail=str(exc),
                hint=f"Start it on this machine ({start}), or embed in the backend instead: "
                "ALTER DATABASE ... RESET fastembed_ext.server. The wait is bounded by "
                "fastembed_ext.server_timeout (milliseconds).",
            )
        if exc.status == 404:
            fail(
                f'the embedding server at {self.url} does not serve model "{name}"',
                sqlstate="42704",
                detail=str(exc),
                hint=f"Start it with the bundle registered as {name}: {start}.",
            )
        if exc.status == 422:
            fail(f'the embedding server at {self.url} refused the request for model "{name}"',
                 sqlstate="22023", detail=str(exc), hint="The detail names the argument it refused.")
        if exc.status in (429, 503):
            fail(f"the embedding server at {self.url} is overloaded", sqlstate="53000", detail=str(exc),
                 hint="Try again shortly, or raise the server's --max-concurrent-requests / --max-queued-texts.")
        fail(f"the embedding server at {self.url} failed", sqlstate="XX000", detail=str(exc),
             hint="Check the server's log.")


def timeout_seconds(setting: str | None) -> float:
    if setting in (None, ""):
        return DEFAULT_TIMEOUT_MS / 1000
    try:
        ms = int(setting)
    except ValueError:
        ms = -1
    if not TIMEOUT_MS[0] <= ms <= TIMEOUT_MS[1]:
        fail(f'invalid value for fastembed_ext.server_timeout: "{setting}"', sqlstate="22023",
             detail=f"It is in milliseconds, from {TIMEOUT_MS[0]} to {TIMEOUT_MS[1]}.",
             hint=f"RESET fastembed_ext.server_timeout returns to {DEFAULT_TIMEOUT_MS}.")
    return ms / 1000
