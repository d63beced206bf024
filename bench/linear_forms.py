"""Linear layers by row count: torch's default row-major weight vs the column-major weight that
fastembed_ext's exported graphs carry (python/fastembed_ext/linear.py). Same `F.linear`, same
values; only the weight's memory layout differs.

    .venv/bin/python bench/linear_forms.py                  # all cores
    .venv/bin/python bench/linear_forms.py --threads 1 --rows 1,16,64

For each layer shape of the three bench models and each row count (the tokens of a batch: one
short query is about 8-20 rows) it times one pass over enough distinct copies of the weight to
exceed the CPU caches, as a real forward pass meets them, and prints microseconds per layer, the
weight bytes streamed per second, and the ratio column-major / row-major (below 1: faster).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from fastembed_ext.linear import column_major

# (model, in_features, out_features) of every distinct linear layer shape.
SHAPES = [
    ("minilm", 384, 384), ("minilm", 384, 1536), ("minilm", 1536, 384),
    ("distilbert", 768, 768), ("distilbert", 768, 3072), ("distilbert", 3072, 768),
    ("roberta-large", 1024, 1024), ("roberta-large", 1024, 4096), ("roberta-large", 4096, 1024),
]


def pass_s(x: torch.Tensor, weights: list[torch.Tensor], bias: torch.Tensor) -> float:
    start = time.perf_counter()
    for weight in weights:
        F.linear(x, weight, bias)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--rows", default="1,16,64,512")
    ap.add_argument("--mib", type=int, default=384, help="weight copies per shape, in MiB (> caches)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows_list = [int(r) for r in args.rows.split(",")]
    print(f"threads {args.threads}; {args.mib} MiB of weights per shape, best of {args.rounds}\n")
    print("| model | in x out | rows | row-major us | column-major us | GB/s row / col | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    generator = torch.Generator().manual_seed(0)
    for model, k, n in SHAPES:
        copies = max(1, args.mib * 2**20 // (4 * k * n))
        row_major = [torch.randn(n, k, generator=generator) for _ in range(copies)]
        col_major = [column_major(w) for w in row_major]
        bias = torch.randn(n, generator=generator)
        for rows in rows_list:
            x = torch.randn(rows, k, generator=generator)
            pass_s(x, row_major[:2], bias)
            pass_s(x, col_major[:2], bias)
            # Alternate the layouts so drift in the machine's speed hits both alike.
            a_s, b_s = [], []
            for _ in range(args.rounds):
                a_s.append(pass_s(x, row_major, bias))
                b_s.append(pass_s(x, col_major, bias))
            a, b = min(a_s) / copies, min(b_s) / copies
            gb = 4 * k * n / 1e9
            print(f"| {model} | {k}x{n} | {rows} | {a * 1e6:.0f} | {b * 1e6:.0f} | "
                  f"{gb / a:.1f} / {gb / b:.1f} | {b / a:.2f} |", flush=True)


if __name__ == "__main__":
    main()
