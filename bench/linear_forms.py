"""Linear layers by row count: `aten::linear` (MKL, what sentence-transformers runs) on nn.Linear's
row-major weight against `fastembed::packed_linear`, the operator fastembed_ext's exported graphs
call (rust/core/csrc, python/fastembed_ext/linear.py), on the same weight packed at export.

    .venv/bin/python bench/linear_forms.py                  # all cores
    .venv/bin/python bench/linear_forms.py --threads 1 --rows 1,16,64

For each layer shape of the three bench models and each row count (the tokens of a batch: one
short query is about 8-20 rows, a full batch about 1024) it times one pass over enough distinct
copies of the weight to exceed the CPU caches, as a real forward pass meets them, and prints
microseconds per layer, the weight bytes streamed per second, GFLOP/s, and the ratio of the two
(below 1: the operator is faster). With FASTEMBED_EXT_LINEAR_KERNEL=avx2 and
MKL_ENABLE_INSTRUCTIONS=AVX2 it compares the AVX2 kernel with MKL's AVX2 code.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from fastembed_ext import _native  # registers torch.ops.fastembed

PACK = torch.ops.fastembed.pack_linear_weight


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.ops.fastembed.packed_linear(x, packed, bias.shape[0], bias)

# (model, in_features, out_features) of every distinct linear layer shape.
SHAPES = [
    ("minilm", 384, 384), ("minilm", 384, 1536), ("minilm", 1536, 384),
    ("distilbert", 768, 768), ("distilbert", 768, 3072), ("distilbert", 3072, 768),
    ("roberta-large", 1024, 1024), ("roberta-large", 1024, 4096), ("roberta-large", 4096, 1024),
]


def pass_s(op, x: torch.Tensor, weights: list[torch.Tensor], bias: torch.Tensor) -> float:
    start = time.perf_counter()
    for weight in weights:
        op(x, weight, bias)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--rows", default="1,17,64,256,1024")
    ap.add_argument("--mib", type=int, default=384, help="weight copies per shape, in MiB (> caches)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows_list = [int(r) for r in args.rows.split(",")]
    print(f"threads {args.threads}; {args.mib} MiB of weights per shape, best of {args.rounds}; "
          f"fastembed::packed_linear kernel: {_native.linear_kernel()}\n")
    print("| model | in x out | rows | MKL us | fastembed us | GB/s MKL / fastembed "
          "| GFLOP/s MKL / fastembed | fastembed / MKL |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    generator = torch.Generator().manual_seed(0)
    for model, k, n in SHAPES:
        copies = max(1, args.mib * 2**20 // (4 * k * n))
        row_major = [torch.randn(n, k, generator=generator) for _ in range(copies)]
        packed = [PACK(w) for w in row_major]
        bias = torch.randn(n, generator=generator)
        for rows in rows_list:
            x = torch.randn(rows, k, generator=generator)
            forms = [(F.linear, row_major), (packed_linear, packed)]
            for op, weights in forms:
                pass_s(op, x, weights[:2], bias)
            # Alternate the forms so drift in the machine's speed hits all alike.
            times: list[list[float]] = [[] for _ in forms]
            for _ in range(args.rounds):
                for form_times, (op, weights) in zip(times, forms):
                    form_times.append(pass_s(op, x, weights, bias))
            mkl, own = (min(t) / copies for t in times)
            gb = 4 * k * n / 1e9
            gflop = 2 * rows * k * n / 1e9
            print(f"| {model} | {k}x{n} | {rows} | {mkl * 1e6:.0f} | {own * 1e6:.0f} | "
                  f"{gb / mkl:.1f} / {gb / own:.1f} | {gflop / mkl:.0f} / {gflop / own:.0f} | "
                  f"{own / mkl:.2f} |", flush=True)


if __name__ == "__main__":
    main()
