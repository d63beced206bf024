"""The PostgreSQL subcommands of ``fastembed-ext``: db, pg install, ingest, search.

``add_subcommands(subparsers)`` adds them to the main parser; each sets ``func`` and the main
program calls ``args.func(args)``. Commands that take ``--dsn`` default to the local database.
"""

from __future__ import annotations

import argparse

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
    from . import db
    from .install import install

    install(
        db.ensure_running_dsn(args.dsn),
        copy_files=not args.no_copy,
        register_minilm=not args.no_minilm,
        cache_dir=args.cache_dir,
        system=args.system,
    )
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from . import db
    from .ingest import ingest

    ingest(
        db.ensure_running_dsn(args.dsn),
        args.file,
        args.table,
        args.column,
        model=args.model,
        vector_column=args.vector_column,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    return 0


def _search(args: argparse.Namespace) -> int:
    import psycopg

    from . import db
    from .errors import PgError
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
    except psycopg.Error as exc:  # the server's message and hint, without psycopg's decoration
        d = exc.diag
        raise PgError(" ".join(filter(None, [d.message_primary or str(exc), d.message_hint]))) from exc
    for rank, h in enumerate(hits, 1):
        text = "" if h.text is None else "  " + (h.text if len(h.text) <= 100 else h.text[:97] + "...")
        print(f"{rank:>3}  {h.score:.4f}  {h.key}{text}")
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("db", help="the local PostgreSQL database (start, stop, status)")
    p.add_argument("action", choices=["start", "stop", "status", "dsn"])
    p.set_defaults(func=_db)

    p = subparsers.add_parser("pg", help="PostgreSQL extension management")
    pg_sub = p.add_subparsers(dest="pg_command", required=True)
    pi = pg_sub.add_parser("install", help="install the fastembed_ext extension into a database")
    pi.add_argument("--dsn", help=_DSN_HELP)
    pi.add_argument("--no-copy", action="store_true", help="do not copy the extension files to the server")
    pi.add_argument("--no-minilm", action="store_true", help="do not register the bundled all-MiniLM-L6-v2")
    pi.add_argument("--cache-dir", help="where the server keeps models it exports (default: its data directory)")
    pi.add_argument("--system", action="store_true",
                    help="also record the import path cluster-wide (ALTER SYSTEM) for every database")
    pi.set_defaults(func=_pg_install)

    p = subparsers.add_parser("ingest", help="embed a file's texts and COPY them into a table")
    p.add_argument("file", help=".txt (a document per line), .jsonl or .csv")
    p.add_argument("--table", required=True)
    p.add_argument("--column", required=True, help="the text column (JSON field / CSV column)")
    p.add_argument("--model", help="registered model name or path (default: the database's default model)")
    p.add_argument("--vector-column", default="embedding")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--dsn", help=_DSN_HELP)
    p.set_defaults(func=_ingest)

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
