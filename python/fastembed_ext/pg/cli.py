"""The PostgreSQL subcommands of ``fastembed-ext``: db, pg (install, files, library), ingest, search,
worker, status.

``add_subcommands(subparsers)`` adds them to the main parser; each sets ``func`` and the main
program calls ``args.func(args)``. Commands that take ``--dsn`` default to the local database.
"""

from __future__ import annotations

import argparse

from .errors import PgError

_DSN_HELP = "libpq connection string or URL (default: the local database of `fastembed-ext db start`)"


# FastembedExtError (PgError, ClusterError) and OSError become one-line errors in cli.main.


def _db(args: argparse.Namespace) -> int:
    from . import db

    if args.action == "start":
        db.start()
    elif args.action == "stop":
        db.stop()
    elif args.action == "status":
        return 0 if db.status() else 3
    elif args.action == "dsn":
        print(db.default_dsn())
    return 0


def _pg_install(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import db
    from .install import install, parse_model

    install(
        db.ensure_running_dsn(args.dsn),
        models=[parse_model(spec) for spec in args.model],
        default_model=args.default_model,
        library_root=Path(args.library_root).resolve() if args.library_root else None,
        write_files=not args.no_files,
    )
    return 0


def _pg_files(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .install import write_extension_files

    share = Path(args.sharedir)
    if share.name == "extension":
        share = share.parent
    for path in write_extension_files(share) or ["(all files already up to date)"]:
        print(path)
    return 0


def _pg_library(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .library import DEFAULT_ROOT, install_library

    report = install_library(Path(args.root).resolve() if args.root else DEFAULT_ROOT)
    print(f"{'installed' if report.changed else 'up to date'}: {report.path}")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from . import db
    from .ingest import ingest

    if args.threads is not None and args.threads < 1:
        raise PgError(f"--threads must be a positive integer, not {args.threads}")
    ingest(
        db.ensure_running_dsn(args.dsn),
        args.file,
        args.table,
        args.column,
        model=args.model,
        vector_column=args.vector_column,
        id_field=args.id_field,
        append=args.append,
        rejects=args.rejects,
        threads=args.threads,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    return 0


def _search(args: argparse.Namespace) -> int:
    import psycopg

    from . import db
    from .client import error_text
    from .search import search

    try:
        hits = search(
            db.ensure_running_dsn(args.dsn),
            args.query,
            args.table,
            args.k,
            vector_column=args.vector_column,
            model=args.model,
            text_column=args.column,
            ef_search=args.ef_search,
        )
    except psycopg.Error as exc:  # the server's message, detail and hint, on one line
        raise PgError(error_text(exc, one_line=True)) from None
    for rank, h in enumerate(hits, 1):
        text = "" if h.text is None else "  " + (h.text if len(h.text) <= 100 else h.text[:97] + "...")
        print(f"{rank:>3}  {h.score:.4f}  {h.key}{text}")
    return 0


def _model_paths(pairs: list[str]) -> dict[str, str]:
    paths = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise PgError(f"--model takes NAME=PATH (a registered model and its bundle here), not {pair!r}")
        paths[name] = path
    return paths


def _worker(args: argparse.Namespace) -> int:
    from . import db
    from .worker import WorkerOptions, run_worker

    report = run_worker(WorkerOptions(
        dsn=db.ensure_running_dsn(args.dsn),
        concurrency=args.concurrency,
        threads=args.threads,
        batch_tokens=args.batch_tokens,
        once=args.once,
        model_server=args.model_server,
        model_paths=_model_paths(args.model),
        max_attempts=args.max_attempts,
        retry_seconds=args.retry_seconds,
        poll_seconds=args.poll_seconds,
    ))
    return 0 if report.failed == 0 else 4


def _status(args: argparse.Namespace) -> int:
    from . import db
    from .worker import queue_status

    rows = queue_status(db.ensure_running_dsn(args.dsn))
    if not rows:
        print("no attached tables")
        return 0
    header = ("table", "column", "model", "mode", "backlog", "oldest", "retrying", "failed", "done/min")
    cells = [[("" if v is None else str(v).split(".")[0] if i == 5 else str(v)) for i, v in enumerate(r)] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    for line in (header, *cells):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("db", help="the local PostgreSQL database (start, stop, status)")
    p.add_argument("action", choices=["start", "stop", "status", "dsn"])
    p.set_defaults(func=_db)

    p = subparsers.add_parser("pg", help="PostgreSQL extension management")
    pg_sub = p.add_subparsers(dest="pg_command", required=True)
    pi = pg_sub.add_parser("install", help="install or update the extension in a database")
    pi.add_argument("--dsn", help=_DSN_HELP)
    pi.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                    help="register a model (a bundle, or a checkpoint folder exported first); "
                    "`--model minilm` is all-MiniLM-L6-v2 from fastembed_ext[minilm]. Repeatable; the "
                    "first becomes the default when the database has none")
    pi.add_argument("--default-model", metavar="NAME", help="make this registered model the default")
    pi.add_argument("--library-root", metavar="DIR",
                    help="where the server's copy of the Python library goes (default "
                    "/usr/local/lib/fastembed_ext; recorded as the server setting fastembed_ext.library_root)")
    pi.add_argument("--no-files", action="store_true",
                    help="do not write the extension's files into the server's extension directory")
    pi.set_defaults(func=_pg_install)
    pf = pg_sub.add_parser("files", help="write the extension's control and SQL files into a directory")
    pf.add_argument("sharedir", help="the server's $(pg_config --sharedir) or its extension/ directory")
    pf.set_defaults(func=_pg_files)
    pl = pg_sub.add_parser("library", help="install the server's copy of the Python library on this machine")
    pl.add_argument("--root", help="default /usr/local/lib/fastembed_ext")
    pl.set_defaults(func=_pg_library)

    p = subparsers.add_parser("ingest", help="embed a file's texts and COPY them into a table")
    p.add_argument("file", help=".txt (a document per line), .jsonl (e.g. `encode` output) or .csv")
    p.add_argument("--table", required=True, help="an SQL name: docs, app.docs, '\"MyDocs\"'")
    p.add_argument("--column", required=True, help="the text column (JSON field / CSV column)")
    p.add_argument("--model", help="registered model name (default: the database's default model)")
    p.add_argument("--vector-column", default="embedding",
                   help="the vector column; a record's own vectors come from the field of this name")
    p.add_argument("--id-field", help="upsert by this field (the created table's primary key)")
    p.add_argument("--append", action="store_true", help="add rows to a table that already has some")
    p.add_argument("--rejects", metavar="FILE", help="write bad records here and ingest the rest")
    p.add_argument("--threads", type=int, metavar="N", help="libtorch intra-op threads")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--dsn", help=_DSN_HELP)
    p.set_defaults(func=_ingest)

    p = subparsers.add_parser("worker", help="embed the rows that async attachments queue (runs until stopped)")
    p.add_argument("--dsn", help=_DSN_HELP + "; its role must be a member of fastembed_ext_worker")
    p.add_argument("--concurrency", type=int, default=1, metavar="N",
                   help="batches in flight at once, each on its own connection (1 to 64)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="libtorch threads of the models this worker loads (default: every core); "
                   "several workers on one machine share its cores: give each cores / workers")
    p.add_argument("--batch-tokens", type=int, default=65536, metavar="N",
                   help="about this many tokens per claimed batch (64 to 1048576)")
    p.add_argument("--once", action="store_true", help="embed what is due, then exit")
    p.add_argument("--model-server", metavar="URL",
                   help="embed with this server (fastembed-ext serve: unix:/path or http://host:port) "
                   "instead of loading the models in this process")
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                   help="the bundle of registered model NAME on this machine, when it is not at the "
                   "registered path (it must have the registered fingerprint). Repeatable")
    p.add_argument("--max-attempts", type=int, default=5, metavar="N",
                   help="after N failed attempts a row goes to the failed table (1 to 1000)")
    p.add_argument("--retry-seconds", type=float, default=10.0, metavar="S",
                   help="delay before a failed row's first retry, doubled at each attempt (at most an hour)")
    p.add_argument("--poll-seconds", type=float, default=5.0, metavar="S",
                   help="look at the queue this often when no notification comes")
    p.set_defaults(func=_worker)

    p = subparsers.add_parser("status", help="the embedding queue of each attached table")
    p.add_argument("--dsn", help=_DSN_HELP)
    p.set_defaults(func=_status)

    p = subparsers.add_parser("search", help="top-k semantic search over a table")
    p.add_argument("query")
    p.add_argument("--table", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--vector-column", default="embedding")
    p.add_argument("--column", help="text column to show (default: the attached or first text column)")
    p.add_argument("--model", help="registered model name (default: the attached model, else the default)")
    p.add_argument("--ef-search", type=int, help="hnsw.ef_search for this query")
    p.add_argument("--dsn", help=_DSN_HELP)
    p.set_defaults(func=_search)
