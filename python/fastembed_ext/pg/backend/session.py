"""The per-backend state and the entry points the extension's SQL functions call.

One `Backend` lives in each PostgreSQL backend that used the extension (in PL/Python's GD). Every
public method is an `entry`: it takes ``plpy`` first and fails only with an SQL error.
"""

from __future__ import annotations

import os

import fastembed_ext

from ..vectors import vector_literal
from . import models
from .errors import entry, fail, from_engine
from .remote import Remote

# (no typing at import time: see errors.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .models import Model


def _tables():
    """The tables module, imported on first use: a backend that only embeds never needs it."""
    from . import tables

    return tables


class Backend:
    def __init__(self, version: str) -> None:
        self.library_version = version
        # model name (or "path:" + path) -> ((path, fingerprint), encoder), loaded once per backend
        self.encoders: dict[str, tuple[tuple[str, str | None], fastembed_ext.Encoder]] = {}
        self.plans: dict[str, Any] = {}
        self.threads: int | None = None
        self.max_threads = len(os.sched_getaffinity(0))
        # embed()'s last answer: (encoder, text, vector literal). A prepared statement's generic
        # plan cannot fold embed($1) into a constant, so `ORDER BY embedding <=> embed($1) LIMIT k`
        # calls it for the index scan and again for each of the k rows returned.
        self.last_embed: tuple[fastembed_ext.Encoder, str, str | None, str] | None = None
        self.forward_passes = 0  # diagnostics and tests
        # (server URL, timeout) -> keep-alive connection to the machine's embedding server
        self.connections: dict[tuple[str, float], Any] = {}
        # (server URL, timeout setting, model name, path, fingerprint) -> the model's Remote
        self.remotes: dict[tuple, Any] = {}
        # (fastembed_ext.server as this session last saw it,) once found equal to the database's
        # or cluster's setting (models._server)
        self.checked_server: tuple[str | None] | None = None
        # attachment id -> keys of rows whose text the running UPDATE changed (sync attachments)
        self.changed: dict[int, list[str]] = {}

    # ----------------------------------------------------------------------- helpers

    def apply_threads(self, setting: str | None) -> None:
        """fastembed_ext.threads: 1 unless set, at most the CPUs this backend may run on. Anyone
        may set it, so it is bounded: each thread stays in the backend once started."""
        if setting in (None, ""):
            n = 1
        else:
            try:
                n = int(setting)
            except ValueError:
                n = 0
            if not 1 <= n <= self.max_threads:
                fail(
                    f'invalid value for fastembed_ext.threads: "{setting}"',
                    sqlstate="22023",
                    detail=f"It must be a whole number from 1 to {self.max_threads} (the CPUs this "
                    "server may use).",
                    hint="RESET fastembed_ext.threads returns to the database's default (1).",
                )
        if n != self.threads:
            fastembed_ext.set_num_threads(n)
            self.threads = n

    def literals(self, plpy, model: Model, engine, texts: list[str], prompt_name: str | None = None) -> list[str]:
        """pgvector's text form of each text's vector, from the embedding server or from the
        encoder loaded in this backend; `prompt_name`: one of the model's prompts (None: its
        default prompt, if it has one)."""
        self.forward_passes += 1
        # (a server checks the name itself, against the bundle it serves)
        if prompt_name is not None and not isinstance(engine, Remote) and prompt_name not in engine.prompts:
            fail(f'model "{model.name}" has no prompt named "{prompt_name}"', sqlstate="22023",
                 detail=f"Its prompts: {', '.join(sorted(engine.prompts)) or 'none'}.",
                 hint="A model's prompts come from its config_sentence_transformers.json; "
                 "embed(text, model) uses its default prompt, if it has one.")
        if isinstance(engine, Remote):
            return engine.literals(self.connections, texts, prompt_name)
        import warnings

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", fastembed_ext.TruncationWarning)
                vectors = engine.encode(texts, prompt_name)
        except fastembed_ext.FastembedExtError as exc:
            raise from_engine(exc, f'model "{model.name}" failed to embed {len(texts)} text(s)') from None
        except ValueError as exc:  # e.g. a text that cannot be encoded as UTF-8
            fail(f'model "{model.name}" cannot embed this text', sqlstate="22021", detail=str(exc),
                 hint="Texts must be valid UTF-8.")
        for warning in caught:  # nothing is truncated silently
            if issubclass(warning.category, fastembed_ext.TruncationWarning):
                plpy.notice(f'fastembed_ext: model "{model.name}": {warning.message}',
                            hint="Split long documents into passages, and embed each passage.")
        return [vector_literal(v) for v in vectors]

    # ----------------------------------------------------------------------- entry points

    @entry
    def version(self, plpy) -> str:
        return self.library_version

    @entry
    def embed(self, plpy, content: str, model: str | None, prompt_name: str | None = None) -> str:
        found, enc = models.resolve(self, plpy, model)
        last = self.last_embed
        if last is not None and last[0] is enc and last[1] == content and last[2] == prompt_name:
            return last[3]
        (literal,) = self.literals(plpy, found, enc, [content], prompt_name)
        self.last_embed = (enc, content, prompt_name, literal)
        return literal

    @entry
    def embed_batch(self, plpy, contents: list[str | None], model: str | None,
                    prompt_name: str | None = None) -> list[str | None]:
        found, enc = models.resolve(self, plpy, model)
        return _tables()._embed_literals(self, plpy, found, enc, contents, prompt_name)

    @entry
    def register_model(self, plpy, name: str, path: str) -> dict[str, Any]:
        return models.register(self, plpy, name, path)

    @entry
    def unregister_model(self, plpy, name: str) -> bool:
        return models.unregister(self, plpy, name)

    @entry
    def set_default_model(self, plpy, name: str | None) -> str | None:
        return models.set_default(self, plpy, name)

    @entry
    def model_dependents(self, plpy, name: str) -> list[tuple[str, str, str]]:
        return models.dependents(plpy, name)

    @entry
    def attach_embedding(self, plpy, tbl, source_column, vector_column, model, key_column, mode,
                         chunking=None, backfill=True) -> int:
        return _tables().attach(self, plpy, tbl, source_column, vector_column, model, key_column, mode, chunking,
                                backfill is not False)

    @entry
    def backfill(self, plpy, tbl, vector_column, batch_rows) -> None:
        _tables().backfill(self, plpy, tbl, vector_column, batch_rows)

    @entry
    def note_changed(self, plpy, attachment_id: int, key: str) -> None:
        self.changed.setdefault(attachment_id, []).append(key)

    @entry
    def take_changed(self, plpy, attachment_id: int) -> list[str]:
        return self.changed.pop(attachment_id, [])

    @entry
    def detach_embedding(self, plpy, tbl, vector_column) -> bool:
        return _tables().detach(self, plpy, tbl, vector_column)

    @entry
    def embed_attached(self, plpy, attachment_id: int, texts: list[str | None]) -> list[str | None]:
        return _tables().embed_attached(self, plpy, attachment_id, texts)

    @entry
    def create_embedding_index(self, plpy, tbl, vector_column, model, m, ef_construction) -> str:
        return _tables().create_index(self, plpy, tbl, vector_column, model, m, ef_construction)

    @entry
    def search(self, plpy, tbl, vector_column, query, k, model) -> list[tuple[str, float]]:
        return _tables().search(self, plpy, tbl, vector_column, query, k, model)

    @entry
    def migrate_registry_0_2_0(self, plpy) -> None:
        models.migrate_from_0_1_0(self, plpy)
