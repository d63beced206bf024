"""The extension's files as PostgreSQL reads them, built from the sources in ``sql/``.

The sources hold each thing once:

* ``migrations/<version>.sql``: run-once changes to the objects that hold state, one file per
  release, frozen once released. A ``-- @api`` line splits a file into what runs before
  ``api.sql`` and what runs after it (steps that need the new functions).
* ``api.sql``: everything replaceable in place (functions, views, grants, triggers). PL/Python
  bodies there are written ``$python$ name(args) $python$`` and expanded here into the lines that
  load the library once per backend and call ``name(plpy, args)`` on its backend.
* ``fastembed_ext.control``: everything but ``default_version``, which is this package's version.

The install script of version V runs every migration up to V, then ``api.sql``; the upgrade
script from an earlier release A runs the migrations after A, then ``api.sql``. The version is
written in one place, the package's (``Cargo.toml``); the newest migration must carry it.
"""

from __future__ import annotations

import re
from pathlib import Path

import fastembed_ext

from .errors import PgError

EXTENSION = "fastembed_ext"
SOURCE_DIR = Path(__file__).resolve().with_name("sql")
API_MARK = "-- @api"
GUARD = '\\echo Use "CREATE EXTENSION fastembed_ext CASCADE" to load this file. \\quit\n'

_PYTHON_CALL = re.compile(r"\$python\$\s*(\w+)\((.*?)\)\s*\$python\$", re.S)
# What every PL/Python function body runs: fetch the backend (loading it on first use), call it,
# and let an error surface as the error alone, not as the Python frames it passed through.
# The backend is kept in GD under a key with the version the functions were made for, and loaded
# from that version's library, so that after ALTER EXTENSION UPDATE the new functions never call a
# backend an older version left in the same session.
_PYTHON_BODY = """$$
fe = GD.get("fastembed_ext {version}") or plpy.execute("SELECT fastembed_ext._load('{version}')") and GD["fastembed_ext {version}"]
try:
    return fe.{name}(plpy{args})
except Exception as exc:
    raise exc.with_traceback(None) from None
$$"""


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def migrations() -> dict[str, Path]:
    """Every release's migration, oldest first."""
    files = {p.stem: p for p in (SOURCE_DIR / "migrations").glob("*.sql")}
    return dict(sorted(files.items(), key=lambda item: _version_key(item[0])))


def current_version() -> str:
    """This package's version, which the newest migration must carry."""
    version = fastembed_ext.__version__
    newest = list(migrations())[-1]
    if newest != version:
        raise PgError(
            f"the package is version {version} but its newest SQL migration is {newest}; "
            f"add sql/migrations/{version}.sql (it may be empty)"
        )
    return version


def expand_python(sql: str, version: str) -> str:
    """Expands every ``$python$ name(args) $python$`` body into the standard PL/Python body."""

    def body(match: re.Match[str]) -> str:
        args = match.group(2).strip()
        return _PYTHON_BODY.format(name=match.group(1), args=", " + args if args else "", version=version)

    return _PYTHON_CALL.sub(body, sql)


def _migration_parts(path: Path) -> tuple[str, str]:
    text = path.read_text(encoding="utf-8")
    before, _, after = text.partition(API_MARK + "\n")
    return before, after


def _script(versions: list[str]) -> str:
    files = migrations()
    before, after = [], []
    for version in versions:
        b, a = _migration_parts(files[version])
        before.append(f"-- ---- migration {version} ----\n{b}")
        if a.strip():
            after.append(f"-- ---- migration {version}, after api.sql ----\n{a}")
    api = (SOURCE_DIR / "api.sql").read_text(encoding="utf-8")
    parts = [GUARD, *before, "-- ---- api.sql ----\n" + api, *after]
    return expand_python("\n".join(parts), versions[-1])


def install_script(version: str | None = None) -> str:
    """``fastembed_ext--<version>.sql``."""
    version = version or current_version()
    releases = list(migrations())
    return _script(releases[: releases.index(version) + 1])


def upgrade_script(old: str, new: str | None = None) -> str:
    """``fastembed_ext--<old>--<new>.sql``."""
    new = new or current_version()
    releases = list(migrations())
    return _script(releases[releases.index(old) + 1 : releases.index(new) + 1])


def control_file(version: str | None = None) -> str:
    text = (SOURCE_DIR / f"{EXTENSION}.control").read_text(encoding="utf-8")
    return text.rstrip("\n") + f"\ndefault_version = '{version or current_version()}'\n"


def extension_files() -> dict[str, str]:
    """File name -> contents of everything the server's extension directory needs: the control
    file, this version's install script, and an upgrade script from every earlier release."""
    version = current_version()
    files = {
        f"{EXTENSION}.control": control_file(version),
        f"{EXTENSION}--{version}.sql": install_script(version),
    }
    for old in list(migrations())[:-1]:
        files[f"{EXTENSION}--{old}--{version}.sql"] = upgrade_script(old, version)
    return files
