"""fastembed_ext vs sentence-transformers vs ONNX Runtime: throughput, latency, memory, FLOP/s.

    .venv/bin/python bench/bench_encode.py                      # all models, defaults (~8 min on 2 cores)
    .venv/bin/python bench/bench_encode.py --models minilm --n 256 --rounds 5 --json out.json
    .venv/bin/python bench/bench_encode.py --no-int8 --no-memory   # skip the int8 side / memory subprocesses

For each model, in ONE process, on the same texts and the same thread count:

* fastembed  `fastembed_ext.Encoder(st_folder, threads=T).encode(texts)` (engine's own batching)
* st         `SentenceTransformer(st_folder).encode(texts, batch_size=32)`, torch.set_num_threads(T)
* ort        ONNX Runtime on the same backbone exported to ONNX (see onnx_side.py), batch 32
* int8       fastembed on a bundle exported with `quantize="int8"`, when the exporter supports it

Throughput is the median over `--rounds` alternating rounds (fastembed, st, ort, int8, fastembed,
...), each side encoding all texts once per round, after a short warm-up. Vectors of every side
are compared with sentence-transformers' (min cosine). Latency is one short text per call (as
`SELECT embed('query')` sees it), interleaved in blocks. Peak memory is ru_maxrss of a fresh
subprocess per side that loads the model and encodes the same texts.

FLOPs (useful work only, per text of s tokens after truncation, special tokens included, no
padding counted; L layers, hidden h, FFN width i):
    linear layers   2 * P * s      with P = L * (4*h*h + 2*h*i)   (Q, K, V, O and the FFN weights)
    attention       4 * L * h * s^2                              (Q.K^T and A.V)
Embeddings, LayerNorm, GELU, softmax and pooling are left out (a few % at most). GFLOP/s =
useful FLOPs / wall time, so padding and tokenisation count as time spent, not as work.
Peak = cores x clock x FLOP/cycle/core, with the clock from /proc/cpuinfo and FLOP/cycle = 32 for
AVX2+FMA (two 256-bit FMA pipes x 8 fp32 lanes x 2), 64 with AVX-512 (assumed two 512-bit FMA
units), 16 otherwise; the header prints the assumption and a measured 2048^3 sgemm for reference.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import corpus  # noqa: E402
import models  # noqa: E402
import onnx_side  # noqa: E402

# Large enough that batching by the engine and by its peers meets a realistic spread of lengths.
DEFAULT_N = {"minilm": 512, "distilbert": 192, "roberta-large": 48, "mpnet-base": 128, "xlm-r-base": 160}
QUERY = "how do I read a gzip-compressed file line by line?"
SIDES = ("fastembed", "st", "ort", "int8")


# --------------------------------------------------------------------------- machine


def cpu_info() -> dict[str, Any]:
    model, mhz, flags = platform.processor() or "?", 0.0, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key, val = key.strip(), val.strip()
            if key == "model name":
                model = val
            elif key == "cpu MHz" and not mhz:
                mhz = float(val)
            elif key == "flags" and not flags:
                flags = set(val.split())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    if "avx512f" in flags:
        fpc, why = 64, "AVX-512: 2 x 512-bit FMA units x 16 fp32 lanes x 2 flops (assumed)"
    elif "avx2" in flags and "fma" in flags:
        fpc, why = 32, "AVX2+FMA: 2 FMA pipes x 8 fp32 lanes x 2 flops"
    else:
        fpc, why = 16, "no FMA: 1 x 256-bit mul + add (assumed)"
    return {
        "model": model, "cores": cores, "mhz": mhz, "flops_per_cycle": fpc, "assumption": why,
        "peak_gflops": cores * mhz / 1e3 * fpc,
    }


def cpu_times() -> tuple[float, float, float]:
    """(total, busy, steal) CPU seconds of the machine from /proc/stat."""
    hz = os.sysconf("SC_CLK_TCK")
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0, 0.0
    steal = f[7] if len(f) > 7 else 0
    return sum(f) / hz, (sum(f) - f[3] - f[4] - steal) / hz, steal / hz


def own_cpu() -> float:
    """CPU seconds used by this process and its finished children."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def busy_others(interval: float = 1.0) -> list[str]:
    """Other processes using >= 20% of a core over `interval` s (timings are only fair on an idle box)."""

    def snap() -> dict[int, tuple[str, int]]:
        out = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    raw = (d / "stat").read_text()
                    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
                    f = raw[raw.rindex(")") + 2 :].split()
                    out[int(d.name)] = (comm, int(f[11]) + int(f[12]))
                except (OSError, ValueError, IndexError):
                    pass
        return out

    a = snap()
    time.sleep(interval)
    b = snap()
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (comm, t) in b.items():
        if pid != os.getpid() and pid in a:
            pct = 100 * (t - a[pid][1]) / hz / interval
            if pct >= 20:
                busy.append(f"{comm}({pid}) {pct:.0f}%")
    return busy


def sgemm_gflops(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, (time.perf_counter() - t) / 4)
    return 2 * 2048**3 / best / 1e9


# --------------------------------------------------------------------------- FLOPs


@dataclass
class Arch:
    layers: int
    hidden: int
    ffn: int

    @classmethod
    def of(cls, st_path: Path) -> Arch:
        c = json.loads((st_path / "config.json").read_text())
        if c.get("model_type") == "distilbert":
            return cls(c["n_layers"], c["dim"], c["hidden_dim"])
        return cls(c["num_hidden_layers"], c["hidden_size"], c["intermediate_size"])

    @property
    def params(self) -> int:  # non-embedding weights of the layer stack
        return self.layers * (4 * self.hidden**2 + 2 * self.hidden * self.ffn)

    def flops(self, lengths: list[int]) -> float:
        s = np.asarray(lengths, dtype=np.float64)
        return float(2 * self.params * s.sum() + 4 * self.layers * self.hidden * (s**2).sum())


# --------------------------------------------------------------------------- sides


@dataclass
class Side:
    name: str
    encode: Callable[[list[str]], np.ndarray]
    query: Callable[[str], np.ndarray]
    load_s: float
    mem_args: list[str]  # how a memory subprocess loads this side
    times: list[float] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)
    vecs: np.ndarray | None = None


def int8_bundle(st_path: Path, name: str) -> Path:
    """Export (once per checkpoint and export revision) an int8 bundle; raises if the exporter can't."""
    import importlib

    import fastembed_ext

    # The engine's own cache key: it changes with the checkpoint's files and the export revision.
    key = importlib.import_module("fastembed_ext.export").cache_key(st_path)
    dst = models.cache_root() / "int8" / f"{name}-{key}"
    if not (dst / "fastembed_ext.json").exists():
        fastembed_ext.export(str(st_path), str(dst), quantize="int8")
        for stale in dst.parent.glob(f"{name}-*"):  # older revisions' int8 bundles of this model
            if stale != dst:
                shutil.rmtree(stale, ignore_errors=True)
    return dst


def load_side(kind: str, st_path: Path, name: str, threads: int, bundle: Path | None = None) -> Side:
    """Load one side. `bundle` is the fastembed bundle (int8 side: made here)."""
    t0 = time.perf_counter()
    if kind in ("fastembed", "int8"):
        import fastembed_ext

        if kind == "int8":
            bundle = int8_bundle(st_path, name)
            t0 = time.perf_counter()
        enc = fastembed_ext.Encoder(str(bundle or st_path), threads=threads)
        side = Side(kind, lambda tx: enc.encode(tx), lambda q: enc.encode(q), 0.0,
                    ["fastembed", str(enc.path)])
        side.encoder = enc  # type: ignore[attr-defined]
    elif kind == "st":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        st = SentenceTransformer(str(st_path), device="cpu")
        side = Side(
            kind,
            lambda tx: st.encode(tx, batch_size=32, convert_to_numpy=True),
            lambda q: st.encode(q, convert_to_numpy=True),
            0.0, ["st", str(st_path)],
        )
        side.model = st  # type: ignore[attr-defined]
    elif kind == "ort":
        onnx_path = onnx_side.export_onnx(st_path, models.cache_root() / "onnx" / f"{name}.onnx")
        t0 = time.perf_counter()
        ort = onnx_side.OrtEncoder(st_path, onnx_path, threads)
        side = Side(kind, lambda tx: ort.encode(tx, 32), lambda q: ort.encode([q])[0], 0.0,
                    ["ort", str(st_path), str(onnx_path)])
    else:
        raise ValueError(kind)
    side.load_s = time.perf_counter() - t0
    return side


def min_mean_cos(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(cos.min()), float(cos.mean())


# --------------------------------------------------------------------------- memory child


def mem_child(argv: list[str]) -> None:
    """`--_mem KIND PATH [ONNX] --threads T --n N`: load, encode, print peak RSS as JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="+")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--n", type=int, required=True)
    args = ap.parse_args(argv)
    kind, path = args.spec[0], Path(args.spec[1])
    texts = corpus.texts(args.n)
    if kind == "fastembed":
        import fastembed_ext

        enc = fastembed_ext.Encoder(str(path), threads=args.threads)
        enc.encode(texts)
    elif kind == "st":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(args.threads)
        SentenceTransformer(str(path), device="cpu").encode(texts, batch_size=32)
    else:
        onnx_side.OrtEncoder(path, Path(args.spec[2]), args.threads).encode(texts, 32)
    # VmHWM, not ru_maxrss: Linux carries the parent's ru_maxrss over fork+exec, so a child of a
    # big benchmark process would report the parent's peak; VmHWM belongs to this image alone.
    hwm_kib = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
    print(json.dumps({"maxrss_mib": hwm_kib / 1024}))


def measure_memory(side: Side, threads: int, n: int) -> float | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_mem", *side.mem_args,
           "--threads", str(threads), "--n", str(n)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("{"):
            return float(json.loads(line)["maxrss_mib"])
    print(f"[bench] memory child for {side.name} failed:\n{r.stderr[-2000:]}", file=sys.stderr)
    return None


# --------------------------------------------------------------------------- retrieval


def retrieval(enc: Callable[[list[str]], np.ndarray], n_docs: int) -> dict[str, float]:
    queries, docs, rel = corpus.retrieval_set(n_docs)
    q = enc(queries).astype(np.float64)
    d = enc(docs).astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    sims = q @ d.T
    target = sims[np.arange(len(rel)), rel][:, None]
    rank = (sims > target).sum(1) + 1  # 1-based rank of the relevant doc
    return {
        "n_queries": len(rel),
        "recall@1": float((rank <= 1).mean()),
        "recall@10": float((rank <= 10).mean()),
        "mrr@10": float(np.where(rank <= 10, 1.0 / rank, 0.0).mean()),
    }


# --------------------------------------------------------------------------- per model


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bench_model(name: str, n: int, args: argparse.Namespace, cpu: dict[str, Any]) -> dict[str, Any]:
    threads = args.threads
    st_path = models.model_path(name)
    arch = Arch.of(st_path)
    texts = corpus.texts(n)
    res: dict[str, Any] = {"model": name, "n": n, "layers": arch.layers, "hidden": arch.hidden,
                           "ffn": arch.ffn, "params_nonembedding": arch.params, "notes": []}

    sides: list[Side] = []
    log(f"{name}: loading sides")
    fe_err = None
    try:
        t = time.perf_counter()
        import fastembed_ext

        # First use of a checkpoint folder exports it into fastembed's cache; time that apart.
        probe = fastembed_ext.Encoder(str(st_path), threads=threads)
        res["fastembed_first_load_s"] = time.perf_counter() - t
        bundle = probe.path
        del probe
        gc.collect()
        sides.append(load_side("fastembed", st_path, name, threads, bundle))
    except Exception as e:  # noqa: BLE001 - report and go on with the other sides
        fe_err = f"{type(e).__name__}: {e}"
        res["notes"].append(f"fastembed side unavailable: {fe_err}")
        log(res["notes"][-1])
    sides.append(load_side("st", st_path, name, threads))
    sides.append(load_side("ort", st_path, name, threads))
    if args.int8 != "off" and fe_err is None:
        try:
            sides.append(load_side("int8", st_path, name, threads))
        except Exception as e:  # noqa: BLE001
            msg = f"int8 side unavailable: {type(e).__name__}: {e}"
            if args.int8 == "on":
                raise
            res["notes"].append(msg)
            log(msg)
    by = {s.name: s for s in sides}

    # Token counts as the model sees them (truncated, special tokens included).
    tok = by["st"].model.tokenizer  # type: ignore[attr-defined]
    max_len = by["st"].model.max_seq_length  # type: ignore[attr-defined]
    lengths = [min(len(x), max_len) for x in tok(texts, add_special_tokens=True, truncation=False)["input_ids"]]
    n_tokens = int(sum(lengths))
    flops = arch.flops(lengths)
    res.update(tokens=n_tokens, tokens_per_text=n_tokens / n, max_seq_length=max_len,
               truncated=int(sum(1 for x in lengths if x >= max_len)), gflop=flops / 1e9)

    # Warm-up: a few texts including the longest (TorchScript's profiling runs, allocator growth).
    longest = max(range(n), key=lambda i: lengths[i])
    warm = [texts[longest]] + texts[:7]
    for s in sides:
        s.encode(warm)

    log(f"{name}: {args.rounds} rounds x {len(sides)} sides x {n} texts ({n_tokens} tokens)")
    for r in range(args.rounds):
        for s in sides:
            time.sleep(0.2)  # let the previous side's spinning worker threads go idle
            t = time.perf_counter()
            v = s.encode(texts)
            s.times.append(time.perf_counter() - t)
            if s.vecs is None:
                s.vecs = np.asarray(v, dtype=np.float32)
        log(f"{name}: round {r + 1}: " + ", ".join(f"{s.name} {s.times[-1]:.2f}s" for s in sides))

    ref = by["st"].vecs
    assert ref is not None
    out_sides: dict[str, Any] = {}
    for s in sides:
        med = statistics.median(s.times)
        mn, mean = min_mean_cos(s.vecs, ref)  # type: ignore[arg-type]
        out_sides[s.name] = {
            "load_s": s.load_s, "times_s": s.times, "median_s": med, "docs_per_s": n / med,
            "tokens_per_s": n_tokens / med, "gflops": flops / med / 1e9,
            "pct_peak": 100 * flops / med / 1e9 / cpu["peak_gflops"],
            "min_cos_vs_st": mn, "mean_cos_vs_st": mean,
        }
    if "int8" in by and "fastembed" in by:
        mn, mean = min_mean_cos(by["int8"].vecs, by["fastembed"].vecs)  # type: ignore[arg-type]
        out_sides["int8"].update(min_cos_vs_fp32=mn, mean_cos_vs_fp32=mean)
    res["sides"] = out_sides

    # Single-query latency, interleaved in blocks of 10 calls.
    t = time.perf_counter()
    by["st"].query(QUERY)
    one = time.perf_counter() - t
    calls = int(min(args.latency_calls, max(30, args.latency_budget_s / max(one, 1e-4) / len(sides))))
    calls = max(10, calls // 10 * 10)
    for s in sides:
        for _ in range(3):
            s.query(QUERY)
    for _ in range(calls // 10):
        for s in sides:
            time.sleep(0.2)  # as above: no side's first call competes with the last side's spinners
            for _ in range(10):
                t = time.perf_counter()
                s.query(QUERY)
                s.lat.append(time.perf_counter() - t)
    for s in sides:
        out_sides[s.name]["latency_calls"] = calls
        out_sides[s.name]["p50_ms"] = 1e3 * float(np.percentile(s.lat, 50))
        out_sides[s.name]["p95_ms"] = 1e3 * float(np.percentile(s.lat, 95))
    log(f"{name}: latency ({calls} calls/side): "
        + ", ".join(f"{s.name} p50 {out_sides[s.name]['p50_ms']:.1f}ms" for s in sides))

    # Retrieval quality, fp32 vs int8 (real weights only: MiniLM).
    if name == "minilm" and "int8" in by and args.retrieval_docs > 0:
        res["retrieval"] = {k: retrieval(by[k].encode, args.retrieval_docs)
                            for k in ("st", "fastembed", "int8")}
        log(f"{name}: retrieval {res['retrieval']}")

    if args.memory:
        for s in sides:
            out_sides[s.name]["peak_rss_mib"] = measure_memory(s, threads, n)
        log(f"{name}: peak RSS " + ", ".join(f"{s.name} {out_sides[s.name]['peak_rss_mib']}" for s in sides))

    del sides, by
    gc.collect()
    return res


# --------------------------------------------------------------------------- report


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def fmt(x: Any, spec: str) -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "n/a"


def report(header: dict[str, Any], results: list[dict[str, Any]]) -> str:
    cpu = header["cpu"]
    L = [
        "# fastembed_ext encode benchmark",
        "",
        f"- Machine: {cpu['model']}, {cpu['cores']} cores @ {cpu['mhz']:.0f} MHz; "
        f"{header['threads']} threads on every side",
        f"- fp32 peak: {cpu['cores']} cores x {cpu['mhz'] / 1e3:.3f} GHz x {cpu['flops_per_cycle']} "
        f"FLOP/cycle ({cpu['assumption']}) = **{cpu['peak_gflops']:.0f} GFLOP/s**; "
        f"measured torch sgemm 2048^3: {header['sgemm_gflops']:.0f} GFLOP/s",
        f"- Versions: python {header['python']}, torch {header['torch']}, onnxruntime {header['onnxruntime']}, "
        f"sentence-transformers {header['sentence_transformers']}, transformers {header['transformers']}, "
        f"fastembed_ext {header['fastembed_ext']}",
        f"- Load average at start / end: {header['loadavg_start'][0]:.2f} / {header['loadavg_end'][0]:.2f}; "
        f"during the run, other processes used {header['others_pct']:.0f}% "
        f"of the machine's CPU time (hypervisor steal {header['steal_pct']:.0f}%)"
        + (f"; **busy at start: {', '.join(header['busy_at_start'])} (numbers are unreliable: other work "
           "shares the cores)**" if header["busy_at_start"] else ""),
        f"- Texts: bench/corpus.py (stdlib docstrings, shuffled, seed 0); {header['rounds']} alternating "
        "rounds, median; st and ort use batch 32 sorted by length, fastembed its own batching",
        f"- Command: `{header['command']}`",
        "",
        "## Throughput (median of rounds) and agreement with sentence-transformers",
        "",
        "| model | side | texts | tok/text | docs/s | tokens/s | GFLOP/s | % peak | min cos vs ST | load s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for k, s in r["sides"].items():
            L.append(
                f"| {r['model']} | {k} | {r['n']} | {r['tokens_per_text']:.0f} | {s['docs_per_s']:.2f} | "
                f"{s['tokens_per_s']:.0f} | {s['gflops']:.1f} | {s['pct_peak']:.1f}% | "
                f"{s['min_cos_vs_st']:.7f} | {s['load_s']:.1f} |"
            )
    L += ["", "## Ratios (issue 4 targets in brackets)", "",
          "| model | fastembed/ST docs/s [>=1.2] | fastembed/ORT docs/s [>1] | p50 fastembed/ST [<=0.5] "
          "| peak RSS fastembed/ST [<=1] | min cos fastembed vs ST [>0.99999] | int8/ST fp32 docs/s [>=1.7] |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        s = r["sides"]
        fe, st, ort, i8 = s.get("fastembed", {}), s["st"], s["ort"], s.get("int8", {})
        L.append(
            f"| {r['model']} | {ratio(fe.get('docs_per_s'), st['docs_per_s'])} | "
            f"{ratio(fe.get('docs_per_s'), ort['docs_per_s'])} | {ratio(fe.get('p50_ms'), st['p50_ms'])} | "
            f"{ratio(fe.get('peak_rss_mib'), st.get('peak_rss_mib'))} | {fmt(fe.get('min_cos_vs_st'), '.7f')} | "
            f"{ratio(i8.get('docs_per_s'), st['docs_per_s'])} |"
        )
    L += ["", "## Single-query latency (one short text per call) and peak memory", "",
          "| model | side | calls | p50 ms | p95 ms | peak RSS MiB |", "|---|---|---:|---:|---:|---:|"]
    for r in results:
        for k, s in r["sides"].items():
            L.append(f"| {r['model']} | {k} | {s['latency_calls']} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | "
                     f"{fmt(s.get('peak_rss_mib'), '.0f')} |")
    i8 = [r for r in results if "int8" in r["sides"]]
    if i8:
        L += ["", "## int8 quality", "", "| model | mean cos to fp32 | min cos to fp32 | min cos to ST |",
              "|---|---:|---:|---:|"]
        for r in i8:
            s = r["sides"]["int8"]
            L.append(f"| {r['model']} | {s['mean_cos_vs_fp32']:.5f} | {s['min_cos_vs_fp32']:.5f} | "
                     f"{s['min_cos_vs_st']:.5f} |")
    for r in results:
        if "retrieval" in r:
            n_q = next(iter(r["retrieval"].values()))["n_queries"]
            L += ["", f"Retrieval ({r['model']}, {n_q} queries = a paragraph's first sentence, "
                  f"corpus = the {n_q} paragraphs without it; bench/corpus.py retrieval_set):", "",
                  "| side | recall@1 | recall@10 | MRR@10 |", "|---|---:|---:|---:|"]
            for k, m in r["retrieval"].items():
                L.append(f"| {k} | {m['recall@1']:.3f} | {m['recall@10']:.3f} | {m['mrr@10']:.3f} |")
    notes = [f"- {r['model']}: {x}" for r in results for x in r["notes"]]
    notes += [f"- {r['model']}: first `Encoder(st_folder)` incl. export into fastembed's cache: "
              f"{r['fastembed_first_load_s']:.1f} s" for r in results if "fastembed_first_load_s" in r]
    if notes:
        L += ["", "Notes:", *notes]
    L += ["", "FLOPs per text of s tokens: 2*P*s + 4*L*h*s^2 with P = L*(4h^2 + 2*h*ffn) "
          "(no padding, embeddings/LayerNorm/GELU/softmax/pooling left out); GFLOP/s = FLOPs / wall time."]
    return "\n".join(L) + "\n"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod, key in (("torch", "torch"), ("onnxruntime", "onnxruntime"),
                     ("sentence_transformers", "sentence_transformers"), ("transformers", "transformers"),
                     ("fastembed_ext", "fastembed_ext")):
        try:
            out[key] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            out[key] = f"unavailable ({type(e).__name__})"
    return out


def parse_n(spec: str | None, names: list[str]) -> dict[str, int]:
    n = {k: DEFAULT_N[k] for k in names}
    if spec:
        for part in spec.split(","):
            if "=" in part:
                k, v = part.split("=", 1)
                n[k.strip()] = int(v)
            else:
                n = {k: int(part) for k in names}
    return n


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_mem"]:
        mem_child(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(models.MODELS),
                    help="comma-separated: " + ", ".join(models.MODELS))
    ap.add_argument("--n", help=f"texts per model: an int for all, or name=int,... (defaults {DEFAULT_N})")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timed rounds (median reported)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--latency-calls", type=int, default=200, help="max single-query calls per side")
    ap.add_argument("--latency-budget-s", type=float, default=20.0,
                    help="fewer latency calls (min 30) for slow models so each model's latency run takes about this long")
    ap.add_argument("--retrieval-docs", type=int, default=300)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--int8", dest="int8", action="store_const", const="on", default="auto",
                   help="require the int8 side (default: included when the exporter supports quantize='int8')")
    g.add_argument("--no-int8", dest="int8", action="store_const", const="off")
    ap.add_argument("--no-memory", dest="memory", action="store_false", help="skip the memory subprocesses")
    ap.add_argument("--wait-idle", type=float, default=60.0, metavar="S",
                    help="wait up to S seconds for other busy processes to finish before starting")
    ap.add_argument("--json", type=Path, help="also write all numbers as JSON here")
    args = ap.parse_args(argv)

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in names:
        if m not in models.MODELS:
            ap.error(f"unknown model {m!r}; choose from {', '.join(models.MODELS)}")
    ns = parse_n(args.n, names)
    cpu = cpu_info()
    header = {"cpu": cpu, "threads": args.threads, "rounds": args.rounds,
              "sgemm_gflops": sgemm_gflops(args.threads), **versions(),
              "command": " ".join([".venv/bin/python bench/bench_encode.py", *argv]).strip()}
    deadline = time.monotonic() + args.wait_idle
    while (busy := busy_others()) and time.monotonic() < deadline:
        log(f"waiting for an idle machine (busy: {', '.join(busy)})")
        time.sleep(4)
    header["loadavg_start"] = os.getloadavg()
    header["busy_at_start"] = busy
    c0, own0 = cpu_times(), own_cpu()
    t0 = time.perf_counter()
    results = [bench_model(m, ns[m], args, cpu) for m in names]
    header["total_s"] = time.perf_counter() - t0
    c1, own1 = cpu_times(), own_cpu()
    header["loadavg_end"] = os.getloadavg()
    total = max(1e-9, c1[0] - c0[0])
    header["steal_pct"] = 100 * (c1[2] - c0[2]) / total
    header["others_pct"] = max(0.0, 100 * ((c1[1] - c0[1]) - (own1 - own0)) / total)
    print(report(header, results))
    if args.json:
        args.json.write_text(json.dumps({"header": header, "results": results}, indent=2) + "\n")
    log(f"done in {header['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
