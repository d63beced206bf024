"""``fastembed-ext worker``: embeds the rows that async attachments queue.

An attachment made with ``mode => 'async'`` runs no model when rows are written: its trigger
queues their keys (``fastembed_ext.queue_<id>``, jobs of up to 64 keys) and notifies
``fastembed_ext_queue``. A worker needs only a DSN, of a role that is a member of
``fastembed_ext_worker``; PostgreSQL is the one coordinator, so any number of workers run on any
number of machines. Each batch is one transaction:

1. claim due jobs up to a key budget (``FOR UPDATE SKIP LOCKED``: workers never take the same job),
   with the text each row holds at that moment;
2. embed those texts (in this process, or with the embedding server of ``--model-server``);
3. write each vector where the row still holds the text it was made from, and delete the jobs.

A worker that dies rolls its transaction back, so its jobs are claimable again. A row whose text
changed meanwhile was queued again by that change. A batch that fails is retried row by row in
savepoints: the rows that fail go back to the queue with their attempt counted and a growing
delay, and after ``max_attempts`` into ``fastembed_ext.failed_<id>`` with their error; the rest
are written. Nothing is dropped silently.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

import fastembed_ext

from .client import connect, error_text
from .errors import PgError
from .vectors import vector_literal

CHANNEL = "fastembed_ext_queue"
# A writing session sends at most one NOTIFY per quarter second (sql/api.sql, _enqueue_body), so a
# worker that was woken or found work within LINGER_SECONDS keeps polling: the writes that sent no
# NOTIFY came from sessions that had just sent one, and most commit within milliseconds. It polls
# every LINGER_POLL_SECONDS at first, then at a quarter of the time since (about 15 polls in 10 s).
LINGER_SECONDS = 10.0
LINGER_POLL_SECONDS = 0.25
# Bounds of the settings (each checked, with the bound in the message).
CONCURRENCY = (1, 64)
BATCH_TOKENS = (64, 1 << 20)
MAX_ATTEMPTS = (1, 1000)
RETRY_SECONDS = (0, 86400)
POLL_SECONDS = (0.05, 3600)
MAX_CLAIM = 4096  # keys per claim, whatever the token budget says
_CHARS_PER_TOKEN = 4.0  # a first guess, replaced by what the texts show


@dataclass
class WorkerOptions:
    dsn: str
    concurrency: int = 1
    threads: int | None = None  # libtorch threads for the models loaded here (None: every core)
    batch_tokens: int = 65536
    once: bool = False
    model_server: str | None = None
    model_paths: dict[str, str] = field(default_factory=dict)  # NAME -> bundle path on this machine
    max_attempts: int = 5
    retry_seconds: float = 10.0
    poll_seconds: float = 5.0
    log_seconds: float = 10.0

    def check(self) -> None:
        for name, value, (low, high) in (
            ("--concurrency", self.concurrency, CONCURRENCY),
            ("--batch-tokens", self.batch_tokens, BATCH_TOKENS),
            ("--max-attempts", self.max_attempts, MAX_ATTEMPTS),
            ("--retry-seconds", self.retry_seconds, RETRY_SECONDS),
            ("--poll-seconds", self.poll_seconds, POLL_SECONDS),
        ):
            if value is None or not low <= value <= high:
                raise PgError(f"{name} must be between {low} and {high}, not {value}")
        if self.threads is not None:
            cores = len(os.sched_getaffinity(0))
            if not 1 <= self.threads <= cores:
                raise PgError(f"--threads must be between 1 and {cores} (this machine's cores), not {self.threads}")
            if self.model_server:
                raise PgError("--threads sets the threads of models loaded in the worker; with --model-server "
                              "the server computes (its own --threads and --workers)")


@dataclass
class Attachment:
    id: int
    table: str
    vector_column: str
    model: str
    path: str | None
    fingerprint: str | None
    dim: int | None  # the column's dimension, when it has one
    chunking: dict | None = None  # {"window": tokens or None, "overlap": tokens}: also write chunks


@dataclass
class WorkerReport:
    embedded: int = 0  # vectors written
    batches: int = 0
    retried: int = 0  # rows sent back to the queue after a failure
    failed: int = 0  # rows moved to a failed table
    seconds: float = 0.0


class Engines:
    """The model of each attachment, loaded once per process and shared by its threads: the
    registered bundle (pinned to the database's fingerprint), from its registered path or the
    path given with --model, or the embedding server's model of that name."""

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._loaded: dict[str, Any] = {}

    def get(self, att: Attachment):
        with self._lock:
            engine = self._loaded.get(att.model)
            if engine is None:
                engine = self._loaded[att.model] = self._load(att)
            return engine

    def _load(self, att: Attachment):
        if att.fingerprint is None:
            raise PgError(f'{att.table}: model "{att.model}" is not registered in the database')
        if self.options.model_server:
            client = fastembed_ext.Client(self.options.model_server, att.model)
            if client.fingerprint != att.fingerprint:
                raise PgError(
                    f'the embedding server\'s model "{att.model}" is bundle {client.fingerprint[:12]}, but the '
                    f"database registered {att.fingerprint[:12]}: its vectors would differ from embed()'s"
                )
            return client
        path = self.options.model_paths.get(att.model, att.path)
        try:
            return fastembed_ext.Encoder(path, fingerprint=att.fingerprint, threads=self.options.threads)
        except FileNotFoundError:
            raise PgError(
                f'model "{att.model}" is registered at {path}, which this machine does not have; pass '
                f"--model {att.model}=PATH with a copy of the bundle, or --model-server URL"
            ) from None


class Worker:
    def __init__(self, options: WorkerOptions, *, log: Callable[[str], None] | None = None) -> None:
        options.check()
        self.options = options
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.engines = Engines(options)
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.active_at = time.monotonic()  # the last notification or claimed job
        self.report = WorkerReport()
        self._lock = threading.Lock()
        self._chars_per_row = 64.0 * _CHARS_PER_TOKEN
        self._refused: set[int] = set()  # attachments whose model cannot be had here (logged once)

    # ----------------------------------------------------------------------- attachments

    def attachments(self, conn: psycopg.Connection) -> list[Attachment]:
        rows = conn.execute(
            """SELECT a.id, a.tbl::text, a.vector_column, a.model, m.path, m.fingerprint,
                      (SELECT NULLIF(x.atttypmod, -1) FROM pg_catalog.pg_attribute x
                       WHERE x.attrelid = a.tbl AND x.attname = a.vector_column AND NOT x.attisdropped),
                      a.chunking, pg_catalog.has_function_privilege(p.oid, 'EXECUTE')
               FROM fastembed_ext.attachments a
               JOIN pg_catalog.pg_proc p ON p.pronamespace = 'fastembed_ext'::regnamespace
                                        AND p.proname = '_claim_' || a.id
               LEFT JOIN fastembed_ext.models m ON m.name = a.model
               WHERE a.mode = 'async' ORDER BY a.id"""
        ).fetchall()
        conn.rollback()
        allowed = [Attachment(*r[:8]) for r in rows if r[8]]
        if rows and not allowed:
            role = conn.execute("SELECT current_user").fetchone()[0]
            conn.rollback()
            raise PgError(
                f"role {role} may not run embedding workers: it is not a member of fastembed_ext_worker "
                f"(a superuser or the role's admin runs: GRANT fastembed_ext_worker TO {role};)"
            )
        return [a for a in allowed if a.id not in self._refused]

    # ----------------------------------------------------------------------- one batch

    def _claim_size(self) -> int:
        tokens_per_row = max(1.0, self._chars_per_row / _CHARS_PER_TOKEN)
        return int(max(1, min(MAX_CLAIM, self.options.batch_tokens // tokens_per_row)))

    def batch(self, conn: psycopg.Connection, att: Attachment) -> int:
        """Claims, embeds and writes one batch of `att`; returns the rows it claimed (0: none due)."""
        engine = self.engines.get(att)
        if att.chunking is not None and not hasattr(engine, "windows"):
            raise PgError(f"{att.table}.{att.vector_column} is chunked: its chunks are cut by the model's "
                          "tokenizer in this process; run a worker for it without --model-server")
        if att.dim is not None and engine.dim != att.dim:
            raise PgError(
                f'model "{att.model}" makes {engine.dim}-dimensional vectors but {att.table}.'
                f"{att.vector_column} holds {att.dim}"
            )
        opts = self.options
        with conn.transaction():
            row = conn.execute(f"SELECT * FROM fastembed_ext._claim_{att.id}(%s)", (self._claim_size(),)).fetchone()
            if row is None:
                return 0
            jobs, keys, contents, attempts = row
            done = f"SELECT fastembed_ext._done_{att.id}(%s::tid[], %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            try:
                with conn.transaction():
                    vectors, chunks = self._embed(engine, att, keys, contents)
                    written = conn.execute(done, (jobs, keys, contents, vectors, [], [], [], opts.max_attempts,
                                                  opts.retry_seconds, *chunks)).fetchone()[0]
                failed: list[tuple[str, str, int]] = []
            except (fastembed_ext.FastembedExtError, ValueError, psycopg.DataError, psycopg.IntegrityError,
                    psycopg.ProgrammingError, psycopg.errors.RaiseException, psycopg.InternalError) as exc:
                first_error = _message(exc)
                written, failed = 0, []
                for key, text, tries in zip(keys, contents, attempts):  # find the rows that fail
                    try:
                        with conn.transaction():
                            vectors, chunks = self._embed(engine, att, [key], [text])
                            written += conn.execute(done, ([], [key], [text], vectors, [], [], [], opts.max_attempts,
                                                           opts.retry_seconds, *chunks)).fetchone()[0]
                    except (fastembed_ext.FastembedExtError, ValueError, psycopg.DatabaseError) as row_exc:
                        if isinstance(row_exc, psycopg.OperationalError):
                            raise
                        failed.append((key, _message(row_exc), tries))
                if not failed:  # the batch failed, its rows one by one did not: count it against all
                    failed = [(k, first_error, t) for k, t in zip(keys, attempts)]
                conn.execute(done, (jobs, [], [], [], [f[0] for f in failed], [f[1] for f in failed],
                                    [f[2] for f in failed], opts.max_attempts, opts.retry_seconds, [], [], [], [], []))
        given_up = sum(1 for f in failed if f[2] + 1 >= opts.max_attempts)
        for key, message, tries in failed[:3]:
            self.log(f"worker: {att.table} key {key}: attempt {tries + 1} failed: {message}")
        chars = sum(len(t) for t in contents if t is not None) / max(1, len(contents))
        with self._lock:
            self._chars_per_row = 0.8 * self._chars_per_row + 0.2 * max(chars, 1.0)
            self.report.batches += 1
            self.report.embedded += written
            self.report.retried += len(failed) - given_up
            self.report.failed += given_up
        return len(keys)

    def _embed(self, engine, att: Attachment, keys: list[str], texts: list[str | None]):
        """The vector literal of each text (None for None) and, for a chunked attachment, the chunk
        arrays of `_done_<id>`: keys, indexes, character starts and ends, vector literals."""
        present = [i for i, t in enumerate(texts) if t is not None]
        out: list[str | None] = [None] * len(texts)
        chunk_keys: list[str] = []
        chunk_index: list[int] = []
        spans: list[tuple[int, int]] = []
        inputs = [texts[i] for i in present]  # the whole texts, then the chunks
        if att.chunking is not None:
            for i in present:
                for n, span in enumerate(engine.windows(texts[i], att.chunking.get("window"),
                                                        att.chunking.get("overlap") or 0)):
                    chunk_keys.append(keys[i])
                    chunk_index.append(n)
                    spans.append(span)
                    inputs.append(texts[i][span[0]:span[1]])
        if not inputs:
            return out, ([], [], [], [], [])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", fastembed_ext.TruncationWarning)
            vectors = engine.encode(inputs)
        if att.chunking is None:  # (a chunked text's whole vector is cut as expected; its chunks are not)
            for warning in caught:
                self.log(f"worker: {att.table}.{att.vector_column}: {warning.message}; attach with "
                         "chunking => fastembed_ext.token_windows() to embed whole documents")
        literals = [vector_literal(v) for v in vectors]
        for i, literal in zip(present, literals):
            out[i] = literal
        rest = literals[len(present):]
        return out, (chunk_keys, chunk_index, [a for a, _ in spans], [b for _, b in spans], rest)

    # ----------------------------------------------------------------------- the loop

    def _thread(self, errors: list[BaseException]) -> None:
        conn = None
        try:
            while not self.stop.is_set():
                if conn is None or conn.closed:
                    conn = connect(self.options.dsn)
                claimed = 0
                try:
                    for att in self.attachments(conn):
                        if self.stop.is_set():
                            break
                        try:
                            claimed += self.batch(conn, att)
                            self._log_rate()
                        except PgError as exc:  # this attachment's model cannot be had here
                            self.log(f"worker: skipping {att.table}.{att.vector_column}: {exc}")
                            self._refused.add(att.id)
                except psycopg.OperationalError as exc:
                    if self.options.once:
                        raise
                    self.log(f"worker: connection lost ({' '.join(str(exc).split())}); reconnecting")
                    conn = None
                    self.stop.wait(1.0)
                    continue
                if claimed:
                    self.active_at = time.monotonic()
                else:
                    if self.options.once:
                        return
                    idle = time.monotonic() - self.active_at
                    wait = max(LINGER_POLL_SECONDS, idle / 4) if idle < LINGER_SECONDS else self.options.poll_seconds
                    self.wake.wait(min(wait, self.options.poll_seconds))
                    self.wake.clear()
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            errors.append(exc)
            self.stop.set()
        finally:
            if conn is not None:
                conn.close()

    def _log_rate(self) -> None:
        """Every log_seconds, the rows written since the last line, as a rate."""
        with self._lock:
            now, rows = time.monotonic(), self.report.embedded
            last, last_rows = self._last_log
            if now - last < self.options.log_seconds:
                return
            self._last_log = (now, rows)
        if rows != last_rows:
            self.log(f"worker: {rows - last_rows} rows in {now - last:.1f} s "
                     f"({(rows - last_rows) / (now - last):.1f} rows/s); {rows} in all")

    def _listen(self) -> None:
        """Sets `wake` on each notification; the threads also poll (every quarter second for a
        while after one, then every poll_seconds), so a lost one costs a poll."""
        while not self.stop.is_set():
            try:
                with connect(self.options.dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self.stop.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self.active_at = time.monotonic()
                            self.wake.set()
            except (psycopg.OperationalError, PgError):
                self.stop.wait(1.0)

    def run(self) -> WorkerReport:
        started = time.monotonic()
        errors: list[BaseException] = []
        with connect(self.options.dsn) as conn:  # fail early: bad DSN, no extension, no membership
            try:
                found = self.attachments(conn)
            except psycopg.errors.UndefinedTable:
                raise PgError("the database has no fastembed_ext extension (or it is older than 0.3.0)") from None
        self.log(f"worker: {len(found)} async attachment(s); concurrency {self.options.concurrency}, "
                 f"batch {self.options.batch_tokens} tokens" + (", until the queue is empty" if self.options.once else ""))
        if not self.options.once:
            threading.Thread(target=self._listen, daemon=True, name="listen").start()
        self._last_log = (started, 0)
        if self.options.concurrency == 1:
            # In the main thread: libtorch's OpenMP pool is the main thread's, and a batch computed
            # from another thread ran 15-50% slower here.
            self._thread(errors)
        else:
            threads = [threading.Thread(target=self._thread, args=(errors,), daemon=True, name=f"worker-{i}")
                       for i in range(self.options.concurrency)]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=1.0)
                self._log_rate()
        self.stop.set()
        self.report.seconds = time.monotonic() - started
        if errors:
            exc = errors[0]
            if isinstance(exc, psycopg.Error):
                raise PgError(error_text(exc, one_line=True)) from None
            raise exc
        return self.report


def _message(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        return error_text(exc, one_line=True)
    return f"{type(exc).__name__}: {exc}"


def run_worker(options: WorkerOptions, *, log: Callable[[str], None] | None = None) -> WorkerReport:
    """Runs until SIGTERM or SIGINT (the batch in flight is finished), or with `once` until no job
    is due."""
    worker = Worker(options, log=log)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        def stop(signum, frame):  # noqa: ARG001
            worker.log("worker: stopping after the batches in flight")
            worker.stop.set()
            worker.wake.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, stop)
    try:
        report = worker.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    worker.log(f"worker: {report.embedded} rows embedded in {report.seconds:.1f} s"
               + (f" ({report.embedded / report.seconds:.1f} rows/s)" if report.seconds > 0 and report.embedded else "")
               + (f"; {report.retried} to retry" if report.retried else "")
               + (f"; {report.failed} failed (SELECT * FROM fastembed_ext.failures)" if report.failed else ""))
    return report


def queue_status(dsn: str) -> list[tuple]:
    with connect(dsn) as conn:
        return conn.execute(
            "SELECT tbl::text, vector_column, model, mode, backlog, oldest_pending, retrying, failed, "
            "done_last_minute FROM fastembed_ext.queue_status").fetchall()
