"""The SQL regression tests in tests/pg/regress (pgvector style), run by pg_regress against the
throwaway cluster, in a fresh database where a plain CREATE EXTENSION must work."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fastembed_ext.pg import cluster

HERE = Path(__file__).resolve().parent
PG_REGRESS = Path(f"/usr/lib/postgresql/{cluster.PG_MAJOR}/lib/pgxs/src/test/regress/pg_regress")
SCHEDULE = ["embed", "generated", "attach"]


def test_pg_regress(pg_cluster, dsn, pg_root, minilm_bundle_path):
    # `dsn` ran `pg install`, which recorded the library root for the whole cluster
    if not PG_REGRESS.exists():
        pytest.fail(f"{PG_REGRESS} missing (postgresql-server-dev-{cluster.PG_MAJOR})")
    out = pg_root / "regress"
    out.mkdir(exist_ok=True)
    cluster.give_to_server(out)
    env = dict(os.environ, FASTEMBED_EXT_MINILM=minilm_bundle_path, PGUSER=pg_cluster.user)
    r = subprocess.run(
        [str(PG_REGRESS), f"--inputdir={HERE / 'regress'}", f"--outputdir={out}",
         f"--bindir={cluster.PG_BIN}", f"--host={pg_cluster.socket_dir}", f"--port={pg_cluster.port}",
         f"--user={pg_cluster.user}", "--dbname=fe_regress", *SCHEDULE],
        capture_output=True, text=True, env=env,
    )
    diffs = out / "regression.diffs"
    keep = os.environ.get("FASTEMBED_EXT_REGRESS_KEEP")  # copy results/ there to review new output
    if keep:
        import shutil

        shutil.copytree(out / "results", keep, dirs_exist_ok=True)
    assert r.returncode == 0, r.stdout + r.stderr + (diffs.read_text() if diffs.exists() else "")
