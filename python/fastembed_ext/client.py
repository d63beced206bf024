"""`Client`: the `Encoder` interface over an embedding server (`fastembed-ext serve`), so that
workers and applications on any machine share one server's models."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Literal

from ._http import Connection, check_url
from .errors import ServerError

# Texts per request when the caller gives no batch size: well under the server's default limit
# (2,048), large enough for the server to batch them well.
_TEXTS_PER_REQUEST = 512


class Client:
    """Embeds with a model of the server at `url` (``unix:/path/to.sock`` or ``http://host:port``).

    `model` names one of the server's models (default: the server's first). The vectors equal an
    in-process `Encoder`'s of the same bundle: `fingerprint` tells which bundle that is. Safe to
    share between threads (each thread keeps its own connection).
    """

    def __init__(self, url: str, model: str | None = None, *, timeout: float = 30.0) -> None:
        self.url = check_url(url)
        self.timeout = timeout
        self._local = threading.local()
        models = self._connection().request("GET", "/models")[0]
        import json

        listed = json.loads(models)["models"]
        if not listed:
            raise ServerError(f"the embedding server at {url} has no model loaded")
        info = next((m for m in listed if m["name"] == model), None) if model else listed[0]
        if info is None:
            names = ", ".join(m["name"] for m in listed)
            raise ServerError(f"the embedding server at {url} has no model {model!r} (it has: {names})",
                              status=404, kind="unknown_model")
        self._info: dict[str, Any] = info

    def _connection(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = Connection(self.url, self.timeout)
        return conn

    def encode(
        self,
        texts: str | Iterable[str],
        prompt_name: str | None = None,
        *,
        batch_size: int | None = None,
        normalize: bool | None = None,
        show_progress_bar: bool = False,
    ) -> Any:
        """float32 vectors, as `Encoder.encode` gives them: `(n, dim)` for a list, `(dim,)` for a str.
        `prompt_name` is one of the model's prompts; with none, its default prompt applies."""
        import numpy as np

        if prompt_name is not None and not isinstance(prompt_name, str):
            raise TypeError(f"prompt_name must be a str, not {type(prompt_name).__name__}")

        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        for index, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] is {type(text).__name__}, expected str")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        step = batch_size or _TEXTS_PER_REQUEST
        out = np.empty((len(items), self.dim), dtype=np.float32)
        bar = None
        if show_progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc="Encoding", unit="text")
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            body: dict[str, Any] = {"inputs": chunk, "fingerprint": self.fingerprint}
            if normalize is not None:
                body["normalize"] = normalize
            if prompt_name is not None:
                body["prompt_name"] = prompt_name
            data, _ = self._connection().request("POST", "/embed", body, accept="application/octet-stream")
            out[start : start + len(chunk)] = np.frombuffer(data, dtype="<f4").reshape(len(chunk), self.dim)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        return out[0] if single else out

    @property
    def name(self) -> str:
        return self._info["name"]

    @property
    def dim(self) -> int:
        return int(self._info["dim"])

    @property
    def max_seq_length(self) -> int:
        return int(self._info["max_seq_length"])

    @property
    def similarity(self) -> Literal["cosine", "dot"]:
        return self._info["similarity"]

    @property
    def normalize(self) -> bool:
        return bool(self._info["normalize"])

    @property
    def fingerprint(self) -> str:
        return self._info["fingerprint"]

    def close(self) -> None:
        """Closes this thread's connection (others close when their threads' clients go)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return (f"Client(url={self.url!r}, model={self.name!r}, dim={self.dim}, "
                f"similarity={self.similarity!r})")
