"""`fastembed::linear`, the operator the exported graphs call for their linear layers: the same
values as `aten::linear` in every case it takes, its own kernel only where it should."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fastembed_ext import _native  # registers torch.ops.fastembed

linear = torch.ops.fastembed.linear
MAX_SKINNY_ROWS = {"avx512": 64, "avx2": 24}  # kMaxRowsAvx512, kMaxRowsAvx2 in rust/core/csrc/linear.cpp


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _best_kernel() -> str:
    flags = _cpu_flags()
    if {"avx512f", "fma"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "aten"


def _inputs(rows: int, k: int, n: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=generator)
    w = torch.randn(n, k, generator=generator)
    b = torch.randn(n, generator=generator)
    return x, w, b


def _assert_matches_float64(got, x, w, b) -> None:
    want = F.linear(x.double(), w.double(), None if b is None else b.double())
    assert got.dtype == torch.float32 and got.shape == want.shape
    # float32 rounding of a k-term dot product of unit normals; a lost term would be off by ~1.
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-3)


def test_kernel_is_the_best_the_cpu_runs() -> None:
    if os.environ.get("FASTEMBED_EXT_LINEAR_KERNEL"):
        pytest.skip("FASTEMBED_EXT_LINEAR_KERNEL chooses the kernel in this run")
    assert _native.linear_kernel() == _best_kernel()


def test_gelu_under_inference_mode_on_all_threads() -> None:
    """The GELU runs on the operator's worker threads, which must see the caller's mode."""
    x, w, b = _inputs(17, 768, 3072)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            got = linear(x, w, b, "gelu")
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(got.double(), F.gelu(F.linear(x.double(), w.double(), b.double())),
                               rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("rows", [1, 5, 6, 7, 17, 64])
@pytest.mark.parametrize(("k", "n"), [(768, 3072), (3072, 768), (1000, 7), (2001, 301), (7, 33), (1024, 1)])
def test_values_equal_float64_linear(rows: int, k: int, n: int) -> None:
    """Row, column and k tails (k not a multiple of the vector width, n not of the column block)."""
    x, w, b = _inputs(rows, k, n)
    _assert_matches_float64(linear(x, w, b), x, w, b)
    _assert_matches_float64(linear(x, w, None), x, w, None)


@pytest.mark.parametrize("rows", [1, 17, 64, 65, 200])
def test_gelu_inside_equals_gelu_after(rows: int) -> None:
    """activation='gelu' is torch's exact GELU of the same product, whichever path runs it."""
    x, w, b = _inputs(rows, 768, 3072)
    got = linear(x, w, b, "gelu")
    want = F.gelu(F.linear(x.double(), w.double(), b.double()))
    assert got.shape == (rows, 3072)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-3)
    assert torch.equal(linear(x, w, b, None), linear(x, w, b))


def test_unknown_activation_is_refused() -> None:
    x, w, b = _inputs(3, 64, 32)
    with pytest.raises(RuntimeError, match="unknown activation 'relu'; expected None or 'gelu'"):
        linear(x, w, b, "relu")


def test_batched_input_keeps_its_leading_dimensions() -> None:
    x, w, b = _inputs(2 * 9, 96, 40)
    x3 = x.reshape(2, 9, 96)
    got = linear(x3, w, b)
    assert got.shape == (2, 9, 40)
    _assert_matches_float64(got.reshape(18, 40), x, w, b)


def test_non_contiguous_input_is_read_correctly() -> None:
    x, w, b = _inputs(12, 64, 48)
    wide = x.t().contiguous().t()  # column-major copy: same values, not contiguous
    assert not wide.is_contiguous() and torch.equal(wide, x)
    _assert_matches_float64(linear(wide, w, b), x, w, b)


@pytest.mark.skipif(_native.linear_kernel() == "aten", reason="every call is aten::linear here")
def test_own_kernel_for_few_rows_and_mkl_beyond() -> None:
    """Few rows are summed in another order than MKL's (bits differ); past the limit the call is
    aten::linear itself (bits equal)."""
    x, w, b = _inputs(MAX_SKINNY_ROWS[_native.linear_kernel()] + 1, 768, 768)
    assert torch.equal(linear(x, w, b), F.linear(x, w, b))
    few = x[:17]
    assert not torch.equal(linear(few, w, b), F.linear(few, w, b))


def test_other_dtypes_and_layouts_go_to_aten() -> None:
    x, w, b = _inputs(8, 64, 32)
    assert torch.equal(linear(x.double(), w.double(), b.double()), F.linear(x.double(), w.double(), b.double()))
    wt = w.t().contiguous().t()  # column-major weight: same matrix
    torch.testing.assert_close(linear(x, wt, b), F.linear(x, w, b), rtol=1e-5, atol=1e-4)


def test_gradients_flow_through_the_aten_path() -> None:
    x, w, b = _inputs(4, 32, 16)
    x.requires_grad_(True)
    linear(x, w, b).sum().backward()
    torch.testing.assert_close(x.grad, w.sum(dim=0).expand(4, 32), rtol=1e-5, atol=1e-5)


def test_shape_mismatch_is_aten_error() -> None:
    x, w, b = _inputs(3, 64, 32)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        linear(x[:, :60], w, b)


@pytest.mark.parametrize("wanted", ["avx2", "aten"])
def test_kernel_can_be_chosen_by_environment(wanted: str) -> None:
    """FASTEMBED_EXT_LINEAR_KERNEL picks a narrower kernel (tested here on a wider CPU), never one
    the CPU lacks; its values agree too."""
    flags = _cpu_flags()
    expected = wanted if wanted == "aten" or {"avx2", "fma"} <= flags else _best_kernel()
    script = """
import sys, torch, torch.nn.functional as F
from fastembed_ext import _native
g = torch.Generator().manual_seed(1)
error = 0.0
for rows, k, n in [(17, 1000, 301), (17, 2001, 301), (5, 1001, 7), (24, 100, 3), (1, 7, 33), (9, 768, 3072)]:
    x, w, b = torch.randn(rows, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n, generator=g)
    for act in (None, "gelu"):
        got = torch.ops.fastembed.linear(x, w, b, act).double()
        want = F.linear(x.double(), w.double(), b.double())
        want = F.gelu(want) if act else want
        error = max(error, float((got - want).abs().max()))
x, w, b = torch.randn(17, 1000, generator=g), torch.randn(301, 1000, generator=g), torch.randn(301, generator=g)
many = torch.randn(65, 1000, generator=g)  # past every kernel's row limit: aten::linear itself
print(_native.linear_kernel(), error,
      torch.equal(torch.ops.fastembed.linear(x, w, b), F.linear(x, w, b)),
      torch.equal(torch.ops.fastembed.linear(many, w, b), F.linear(many, w, b)))
"""
    env = {**os.environ, "FASTEMBED_EXT_LINEAR_KERNEL": wanted}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    kernel, error, few_bitwise_aten, many_bitwise_aten = out.stdout.split()
    assert kernel == expected
    assert float(error) < 1e-3
    assert (few_bitwise_aten == "True") == (expected == "aten")
    assert many_bitwise_aten == "True"
