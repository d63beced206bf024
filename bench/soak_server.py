"""The embedding server's memory over a long run: --texts texts of mixed lengths (single queries,
small batches and bulk requests from several clients at once) through one `fastembed-ext serve`,
printing the server's RSS as it goes. After --warmup texts the RSS must stay within --band MiB of
where it stood then; the last line says whether it did (exit status 1 if not).

    .venv/bin/python bench/soak_server.py [--model minilm] [--texts 1000000] [--clients 4]

Texts are the bench corpus cut at random word counts (most a few words, as queries are; some a
paragraph; some whole documents that the tokenizer truncates), so forward passes of every shape
run: that is what makes an allocator keep or return memory.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402
import models as bench_models  # noqa: E402

import fastembed_ext  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def mixed_texts(n: int, seed: int) -> list[str]:
    """`n` texts: 70% of 1-10 words, 25% of 10-50 words, 5% whole corpus texts."""
    pool = corpus.texts(4000, seed=seed)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = pool[rng.randrange(len(pool))].split()
        r = rng.random()
        k = rng.randint(1, 10) if r < 0.7 else rng.randint(10, 50) if r < 0.95 else len(words)
        start = rng.randrange(max(1, len(words) - k + 1))
        out.append(" ".join(words[start : start + k]) or "empty")
    return out


def request_sizes(seed: int):
    """Texts per request: 40% single queries, 55% batches of 2-32, 5% bulk requests of 256."""
    rng = random.Random(seed)
    while True:
        r = rng.random()
        yield 1 if r < 0.4 else rng.randint(2, 32) if r < 0.95 else 256


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="minilm", choices=bench_models.MODELS)
    ap.add_argument("--texts", type=int, default=1_000_000)
    ap.add_argument("--warmup", type=int, default=50_000, help="texts before the RSS baseline is taken")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--every", type=int, default=25_000, help="texts per round (a line of the curve)")
    ap.add_argument("--band", type=float, default=30.0, help="allowed RSS drift after warm-up, MiB")
    args = ap.parse_args()

    path = bench_models.model_path(args.model)
    root = Path(tempfile.mkdtemp(prefix="fastembed_ext_soak_"))
    bundle = root / "bundle"
    fastembed_ext.export(str(path), str(bundle))
    socket = root / "server.sock"
    log = open(root / "server.log", "wb")  # noqa: SIM115 (open for the server's whole life)
    server = subprocess.Popen(
        [sys.executable, "-m", "fastembed_ext.cli", "serve", "--socket", str(socket), "--model", f"{args.model}={bundle}"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        deadline = time.monotonic() + 120
        while not socket.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; see {root / 'server.log'}")
            time.sleep(0.1)
        texts = mixed_texts(20_000, seed=11)
        clients = [fastembed_ext.Client(f"unix:{socket}", timeout=600) for _ in range(args.clients)]
        sizes = [request_sizes(200 + i) for i in range(args.clients)]
        rngs = [random.Random(100 + i) for i in range(args.clients)]
        failures: list[BaseException] = []

        def client(index: int, quota: int) -> None:
            try:
                while quota > 0:
                    size = min(next(sizes[index]), quota)
                    quota -= size
                    start = rngs[index].randrange(len(texts) - size)
                    vectors = clients[index].encode(texts[start : start + size])
                    if vectors.shape[0] != size:
                        raise RuntimeError(f"{vectors.shape[0]} vectors for {size} texts")
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        print(f"{args.model}: {args.texts:,} texts of mixed lengths from {args.clients} clients; "
              f"server pid {server.pid}; CPUs {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
        print("RSS idle: after each round's requests are answered; peak: the most seen during the round")
        print("| texts | seconds | RSS idle MiB | idle since warm-up MiB | RSS peak MiB |")
        print("|---:|---:|---:|---:|---:|")
        began = time.monotonic()
        baseline = None
        drift: list[float] = []
        peaks: list[float] = []
        done = 0
        while done < args.texts:
            n = min(args.every, args.texts - done)
            threads = [threading.Thread(target=client, args=(i, n // args.clients + (i < n % args.clients)))
                       for i in range(args.clients)]
            for t in threads:
                t.start()
            peak = 0.0
            while any(t.is_alive() for t in threads):
                peak = max(peak, rss_mib(server.pid))
                time.sleep(0.2)
            if failures:
                raise failures[0]
            done += n
            time.sleep(0.5)  # the last worker hands free memory back after its replies are sent
            idle = rss_mib(server.pid)
            if baseline is None and done >= args.warmup:
                baseline = idle
            elif baseline is not None:
                drift.append(idle - baseline)
                peaks.append(peak)
            since = f"{idle - baseline:+.1f}" if baseline is not None else "(warm-up)"
            print(f"| {done:,} | {time.monotonic() - began:.0f} | {idle:.1f} | {since} | {peak:.1f} |", flush=True)
        for c in clients:
            c.close()
        if baseline is None or not drift:
            print("the run ended before the warm-up did: no verdict")
            return 1
        low, high = min(drift), max(drift)
        ok = -args.band <= low and high <= args.band
        print(f"\nafter warm-up ({args.warmup:,} texts, idle RSS {baseline:.1f} MiB): idle RSS moved between "
              f"{low:+.1f} and {high:+.1f} MiB, {'within' if ok else 'OUTSIDE'} ±{args.band:g} MiB; peaks "
              f"{min(peaks):.1f}-{max(peaks):.1f} MiB; {args.texts / (time.monotonic() - began):.0f} texts/s")
        return 0 if ok else 1
    finally:
        server.terminate()
        server.wait()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
