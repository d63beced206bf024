"""The embedding server against models loaded in each PostgreSQL backend, side by side in one run
on a throwaway cluster, per model:

* a new connection's first embed() and the backend's RSS after it: through the server (cold, and
  warm from another request), in the backend, a backend that never embedded, and PL/Python's own
  start (connections alternate between them); and a server connection's second embed();
* one connection's single-query p50 (blocks of 10 calls alternate between the two);
* 8 connections issuing single-text queries for --seconds: queries/s, p50 and p99 (the backends
  with fastembed_ext.threads = 1, the server with every core);
* a bulk INSERT ... SELECT into an attached table through the server, against the Python API's
  docs/s on the same texts;
* the server's throughput on one large batch (Client.encode), against Encoder.encode in-process.

    .venv/bin/python bench/bench_server.py [--models minilm,roberta-large] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402
import models as bench_models  # noqa: E402

import fastembed_ext  # noqa: E402
from fastembed_ext.pg import cluster  # noqa: E402
from fastembed_ext.pg.install import install  # noqa: E402
from fastembed_ext.pg.local_server import LocalServer  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def first_calls(dsns: dict[str, str], model: str, n: int, warm_up=None) -> dict[str, tuple[list[float], list[float]]]:
    """Per side, each new connection's first call (embed(), or for "never embedded" SELECT 1, or
    for "PL/Python only" an empty PL/Python block: the interpreter's own start) and the backend's
    RSS after it; "server, second call" is a server connection's next embed(). `warm_up()` runs
    before each "server, warm" connection: a request from elsewhere, as when other backends use
    the server (otherwise the in-backend side's model load just before has pushed the server's
    weights out of the CPU's caches)."""
    sides = [*dsns, "server, second call"]
    out: dict[str, tuple[list[float], list[float]]] = {side: ([], []) for side in sides}
    for i in range(n):
        for side, dsn in dsns.items():
            if side == "server, warm" and warm_up is not None:
                warm_up()
            with psycopg.connect(dsn, autocommit=True) as conn:
                pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                t = time.perf_counter()
                if side == "never embedded":
                    conn.execute("SELECT 1")
                elif side == "PL/Python only":
                    conn.execute("DO LANGUAGE plpython3u 'pass'")
                else:
                    conn.execute("SELECT embed(%s, %s)", (f"the first call of connection {i}", model))
                out[side][0].append(time.perf_counter() - t)
                out[side][1].append(rss_mib(pid))
                if side == "server, warm":
                    t = time.perf_counter()
                    conn.execute("SELECT embed(%s, %s)", (f"the second call of connection {i}", model))
                    out["server, second call"][0].append(time.perf_counter() - t)
                    out["server, second call"][1].append(rss_mib(pid))
    return out


def single_query(dsns: dict[str, str], model: str, calls: int) -> dict[str, list[float]]:
    conns = {side: psycopg.connect(dsn, autocommit=True) for side, dsn in dsns.items()}
    lat: dict[str, list[float]] = {side: [] for side in dsns}
    try:
        for side, conn in conns.items():
            conn.execute("SELECT embed('warm up', %s)", (model,))
        for block in range(calls // 10):
            for side, conn in conns.items():
                for j in range(10):
                    t = time.perf_counter()
                    conn.execute("SELECT embed(%s, %s)", (f"query {block} {j} about bread and trains", model))
                    lat[side].append(time.perf_counter() - t)
    finally:
        for conn in conns.values():
            conn.close()
    return lat


def concurrent(dsn: str, model: str, clients: int, seconds: float) -> tuple[float, list[float]]:
    lat: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT embed('warm up', %s)", (model,))
            start.wait()
            end = time.perf_counter() + seconds
            i = 0
            mine = []
            while time.perf_counter() < end:
                t = time.perf_counter()
                conn.execute("SELECT embed(%s, %s)", (f"client {c} query {i} about a topic", model))
                mine.append(time.perf_counter() - t)
                i += 1
            with lock:
                lat.extend(mine)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    return len(lat) / (time.perf_counter() - began), lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="minilm,roberta-large")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--connections", type=int, default=6, help="new connections per side for first calls")
    ap.add_argument("--calls", type=int, default=200, help="single-query calls per side")
    ap.add_argument("--bulk", type=int, default=1000, help="rows of the bulk insert (MiniLM; a tenth for RoBERTa)")
    ap.add_argument("--large-rounds", type=int, default=5, help="alternating rounds of the one large batch")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")

    root = Path(tempfile.mkdtemp(prefix="fastembed_ext_bench_server_"))
    os.chmod(root, 0o755)
    c = cluster.Cluster(root / "data", cluster.free_port())
    c.init({"shared_buffers": "'256MB'", "max_connections": "60"})
    c.start()
    try:
        for name in args.models.split(","):
            run_model(args, c, root, name)
    finally:
        c.destroy()
        shutil.rmtree(root, ignore_errors=True)


def run_model(args, c: cluster.Cluster, root: Path, name: str) -> None:
    big = name == "roberta-large"
    print(f"\n## {name}")
    with psycopg.connect(c.dsn("postgres"), autocommit=True) as conn:
        for db in ("inbackend", "viaserver"):
            conn.execute(f"DROP DATABASE IF EXISTS {db}")
            conn.execute(f"CREATE DATABASE {db}")
    dsns = {"in backend": c.dsn("inbackend"), "server": c.dsn("viaserver")}
    report = install(dsns["in backend"], models=[(name, str(bench_models.model_path(name)))],
                     library_root=root / "lib", log=lambda *_: None)
    with psycopg.connect(dsns["in backend"], autocommit=True) as conn:
        bundle = conn.execute("SELECT path FROM fastembed_ext.models WHERE name = %s", (name,)).fetchone()[0]
        conn.execute("ALTER DATABASE inbackend SET fastembed_ext.threads = 1")
    server = LocalServer(root / f"server-{name}")
    server.start([(name, bundle)])
    try:
        with psycopg.connect(dsns["server"], autocommit=True) as conn:
            conn.execute("CREATE EXTENSION fastembed_ext CASCADE")
            conn.execute("SELECT fastembed_ext.register_model(%s, %s)", (name, bundle))
            conn.execute(f"ALTER DATABASE viaserver SET fastembed_ext.server = '{server.url}'")
        del report

        # first calls and RSS
        sides = {**dsns, "server, warm": dsns["server"], "never embedded": dsns["server"],
                 "PL/Python only": dsns["server"]}
        with fastembed_ext.Client(server.url, timeout=600) as other_backend:
            first = first_calls(sides, name, max(2, args.connections // (3 if big else 1)),
                                warm_up=lambda: other_backend.encode("a query from another backend"))
        base = statistics.median(first["never embedded"][1])
        print("| | first embed() of a new connection, p50 | backend RSS after it | above a backend that never embedded |")
        print("|---|---:|---:|---:|")
        for side in ("server", "server, warm", "server, second call", "in backend", "never embedded", "PL/Python only"):
            t, r = first[side]
            print(f"| {side} | {statistics.median(t) * 1000:.1f} ms | {statistics.median(r):.0f} MiB | "
                  f"{statistics.median(r) - base:+.0f} MiB |")
        print("(server: right after the in-backend side loaded its model; server, warm: right after another "
              "request reached the server; PL/Python only: an empty DO block, the interpreter's own start)")

        # one connection, single queries
        lat = single_query(dsns, name, args.calls // (10 if big else 1))
        p50 = {side: statistics.median(v) * 1000 for side, v in lat.items()}
        print(f"\nsingle query, one connection: server p50 {p50['server']:.2f} ms, in backend (1 thread) "
              f"{p50['in backend']:.2f} ms: {p50['server'] - p50['in backend']:+.2f} ms")

        # 8 concurrent connections
        seconds = args.seconds
        res = {side: concurrent(dsn, name, args.clients, seconds) for side, dsn in dsns.items()}
        print(f"\n{args.clients} connections, single-text queries for {seconds:g} s:")
        for side, (qps, l) in res.items():
            print(f"  {side}: {qps:.1f} queries/s, p50 {pct(l, 50):.1f} ms, p99 {pct(l, 99):.1f} ms")
        print(f"  ratio server / in backend: {res['server'][0] / res['in backend'][0]:.2f}")

        # bulk insert through the server vs the Python API
        n = args.bulk // (10 if big else 1)
        docs = corpus.texts(n, seed=3)
        fastembed_ext.set_num_threads(os.cpu_count() or 1)
        enc = fastembed_ext.Encoder(bundle)
        enc.encode(docs[:16])
        t = time.perf_counter()
        local = enc.encode(docs)
        py_rate = n / (time.perf_counter() - t)
        dim = enc.dim
        with psycopg.connect(dsns["server"], autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS src, att")
            conn.execute("CREATE TABLE src (id int PRIMARY KEY, body text)")
            with conn.cursor().copy("COPY src FROM STDIN") as cp:
                for i, d in enumerate(docs):
                    cp.write_row((i, d))
            conn.execute(f"CREATE TABLE att (id int PRIMARY KEY, body text, embedding vector({dim}))")
            conn.execute("SELECT fastembed_ext.attach_embedding('att', 'body', 'embedding', %s)", (name,))
            t = time.perf_counter()
            conn.execute("INSERT INTO att SELECT id, body FROM src")
            sql_rate = n / (time.perf_counter() - t)
            stored = np.asarray([v for (v,) in conn.execute("SELECT embedding::real[] FROM att ORDER BY id")], np.float32)
        print(f"\nbulk INSERT ... SELECT of {n} texts into an attached table through the server: {sql_rate:.1f} rows/s; "
              f"Python API {py_rate:.1f} docs/s; ratio {sql_rate / py_rate:.2f}; max |SQL - Python| "
              f"{np.abs(stored - local).max():.1e}")

        # the server's own throughput on one large batch
        client = fastembed_ext.Client(server.url, timeout=600)
        client.encode(docs[:16])
        rates = {"server": [], "in-process": []}
        # (alternating rounds: on a shared host either side's rate moves by 10% from one minute
        # to the next)
        for _ in range(args.large_rounds):
            t = time.perf_counter()
            got = client.encode(docs, batch_size=len(docs))
            rates["server"].append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            enc.encode(docs)
            rates["in-process"].append(n / (time.perf_counter() - t))
        s, p = max(rates["server"]), max(rates["in-process"])
        median = statistics.median(rates["server"]) / statistics.median(rates["in-process"])
        print(f"one batch of {n} texts: server {s:.1f} docs/s, Encoder.encode in-process {p:.1f} docs/s "
              f"(best of {args.large_rounds} alternating rounds): ratio {s / p:.2f} (of the medians {median:.2f}); "
              f"max |server - in-process| {np.abs(got - local).max():.1e}")
        client.close()
        del enc
    finally:
        server.stop()


if __name__ == "__main__":
    main()
