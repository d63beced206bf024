"""Install from a wheel, as a user would: `maturin build`, a fresh virtualenv, `pip install` the
wheel, `fastembed-ext pg install` from outside the source tree into a fresh cluster; then delete
the virtualenv and the database keeps working, because the server imports its own copy of the
library.

To spare CI's disk the fresh virtualenv reaches the dependencies (torch and its CUDA wheels above
all) through a .pth line onto this checkout's .venv instead of installing them again; fastembed_ext
itself comes only from the wheel, and the test checks that the extension's SQL and the server's
library were made from the wheel's files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
from conftest import connect
from pg_helpers import backend_notice

import fastembed_ext
from fastembed_ext.pg import cluster, scripts

ROOT = Path(__file__).resolve().parents[2]
SHARE = Path(f"/usr/share/postgresql/{cluster.PG_MAJOR}/extension")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ)
    # the Makefile's build settings, so that cargo reuses `make build`'s artefacts
    env.setdefault("CARGO_TARGET_DIR", str(Path.home() / ".cache" / "fastembed_ext" / "target"))
    env.update(LIBTORCH_USE_PYTORCH="1", PYO3_PYTHON=sys.executable, PYTHON_SYS_EXECUTABLE=sys.executable)
    build = subprocess.run([sys.executable, "-m", "maturin", "build", "--release", "--quiet", "-o", str(out)],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    (found,) = out.glob("fastembed_ext-*.whl")
    return found


@pytest.fixture
def fresh_venv(pg_root, wheel):
    """A virtualenv with the wheel installed (the dependencies reached through a .pth line)."""
    venv = pg_root / "wheel-venv"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    site = next((venv / "lib").glob("python3.*/site-packages"))
    (site / "deps-from-the-checkout.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    yield venv, site, started
    shutil.rmtree(venv, ignore_errors=True)


@pytest.fixture
def fresh_cluster(pg_root):
    """A cluster of its own, as a user's server would be: nothing installed in it yet."""
    c = cluster.Cluster(pg_root / "wheel-data", cluster.free_port())
    c.init({"max_connections": "20", "shared_buffers": "'64MB'"})
    c.start()
    yield c
    c.destroy()


def test_wheel_install_serves_a_database_after_its_virtualenv_is_gone(
    fresh_venv, fresh_cluster, wheel, pg_root, minilm_path
):
    venv, site, venv_started = fresh_venv
    version = fastembed_ext.__version__
    dsn = fresh_cluster.dsn("postgres")
    lib = pg_root / "wheel-lib"
    # the extension's files must come from this install, so take away what the tests wrote
    for f in SHARE.glob("fastembed_ext*"):
        f.unlink()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    started = time.perf_counter()
    try:
        run = subprocess.run(
            ["fastembed-ext", "pg", "install", "--dsn", dsn, "--model", f"minilm={minilm_path}",
             "--library-root", str(lib)],
            cwd=pg_root, env=env, capture_output=True, text=True,
        )
        wall = time.perf_counter() - started
        assert run.returncode == 0, run.stdout + run.stderr
        print(f"\nvenv + pip install of the wheel: {started - venv_started:.1f} s; "
              f"fastembed-ext pg install: {wall:.1f} s\n{run.stdout}")
        # the control file, the install script, and an upgrade script from each earlier release
        assert f"wrote {len(scripts.extension_files())} extension file(s) to {SHARE}" in run.stdout
        assert f"created extension fastembed_ext {version}" in run.stdout
        assert "registered model minilm" in run.stdout and "default model: minilm" in run.stdout

        # the SQL and the library were made from the wheel's files, not the checkout's
        with zipfile.ZipFile(wheel) as whl:
            native = next(n for n in whl.namelist() if n.startswith("fastembed_ext/_native"))
            api = whl.read("fastembed_ext/pg/sql/api.sql").decode()
            native_digest = _sha256(whl.read(native))
        assert _sha256((lib / version / native).read_bytes()) == native_digest
        assert (lib / version / "fastembed_ext.library.json").read_text().count(str(site / "fastembed_ext")) == 1
        rendered = (SHARE / f"fastembed_ext--{version}.sql").read_text()
        assert api.splitlines()[-1] in rendered and "$python$" not in rendered
        with connect(dsn) as c:
            before = c.execute("SELECT embed('the virtualenv is about to go')::text").fetchone()[0]
            assert c.execute("SELECT fastembed_ext.version()").fetchone() == (version,)

        shutil.rmtree(venv)
        with connect(dsn) as c:  # a new backend, after the virtualenv is gone
            assert c.execute("SELECT embed('the virtualenv is about to go')::text").fetchone()[0] == before
            where = backend_notice(c, "DO $$ import fastembed_ext; plpy.notice(fastembed_ext.__file__) $$ "
                                      "LANGUAGE plpython3u")
            assert where == str(lib / version / "fastembed_ext" / "__init__.py")
    finally:
        # the other tests' copy of the extension's files (the same, from the checkout)
        from fastembed_ext.pg.install import write_extension_files

        write_extension_files(SHARE.parent)


def test_pg_install_needs_a_superuser(roles):
    from fastembed_ext.pg.errors import PgError
    from fastembed_ext.pg.install import install

    with pytest.raises(PgError, match="connect as a superuser .connected as fe_admin."):
        install(roles["fe_admin"], log=lambda *_: None)


def test_pg_install_is_idempotent(dsn, library_root, minilm_path, distilbert_256k):
    from fastembed_ext.pg.install import install

    lines: list[str] = []
    report = install(dsn, models=[("minilm", str(minilm_path)), ("dot", str(distilbert_256k))],
                     library_root=library_root, log=lines.append)
    assert not report.written and not report.created and not report.registered
    assert report.library is not None and not report.library.changed
    assert lines[-1] == "default model: minilm"


def test_pg_install_reports_a_dead_server_on_one_line():
    from fastembed_ext.pg.errors import PgError
    from fastembed_ext.pg.install import install

    with pytest.raises(PgError) as ei:
        install("host=/nonexistent port=1 dbname=x", log=lambda *_: None)
    assert str(ei.value).startswith("cannot connect to host=/nonexistent port=1 dbname=x: ")
    assert "\n" not in str(ei.value)
