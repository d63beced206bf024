"""Linear layers by row count: `aten::linear` (MKL, what sentence-transformers runs) against
`fastembed::linear`, the operator fastembed_ext's exported graphs call (rust/core/csrc,
python/fastembed_ext/linear.py), on the same row-major nn.Linear weight. MKL on a column-major
copy of the weight (what the exporter stored before the operator existed) is shown as well.

    .venv/bin/python bench/linear_forms.py                  # all cores
    .venv/bin/python bench/linear_forms.py --threads 1 --rows 1,16,64

For each layer shape of the three bench models and each row count (the tokens of a batch: one
short query is about 8-20 rows) it times one pass over enough distinct copies of the weight to
exceed the CPU caches, as a real forward pass meets them, and prints microseconds per layer, the
weight bytes streamed per second, and the ratio to MKL on the row-major weight (below 1: faster).
The operator hands more than 64 rows to MKL itself, so its ratio there is about 1.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from fastembed_ext import _native  # registers torch.ops.fastembed

FASTEMBED_LINEAR = torch.ops.fastembed.linear

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
    ap.add_argument("--rows", default="1,17,64,65,512")
    ap.add_argument("--mib", type=int, default=384, help="weight copies per shape, in MiB (> caches)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows_list = [int(r) for r in args.rows.split(",")]
    print(f"threads {args.threads}; {args.mib} MiB of weights per shape, best of {args.rounds}; "
          f"fastembed::linear kernel: {_native.linear_kernel()}\n")
    print("| model | in x out | rows | MKL us | MKL column-major us | fastembed us | GB/s MKL / col / fastembed "
          "| col / MKL | fastembed / MKL |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    generator = torch.Generator().manual_seed(0)
    for model, k, n in SHAPES:
        copies = max(1, args.mib * 2**20 // (4 * k * n))
        row_major = [torch.randn(n, k, generator=generator) for _ in range(copies)]
        col_major = [w.t().contiguous().t() for w in row_major]
        bias = torch.randn(n, generator=generator)
        for rows in rows_list:
            x = torch.randn(rows, k, generator=generator)
            forms = [(F.linear, row_major), (F.linear, col_major), (FASTEMBED_LINEAR, row_major)]
            for op, weights in forms:
                pass_s(op, x, weights[:2], bias)
            # Alternate the forms so drift in the machine's speed hits all alike.
            times: list[list[float]] = [[] for _ in forms]
            for _ in range(args.rounds):
                for form_times, (op, weights) in zip(times, forms):
                    form_times.append(pass_s(op, x, weights, bias))
            mkl, col, own = (min(t) / copies for t in times)
            gb = 4 * k * n / 1e9
            print(f"| {model} | {k}x{n} | {rows} | {mkl * 1e6:.0f} | {col * 1e6:.0f} | {own * 1e6:.0f} | "
                  f"{gb / mkl:.1f} / {gb / col:.1f} / {gb / own:.1f} | {col / mkl:.2f} | {own / mkl:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
