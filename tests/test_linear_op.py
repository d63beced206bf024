"""`fastembed::packed_linear`, the operator the exported graphs call for their linear layers, on
weights packed by `fastembed::pack_linear_weight`: the same values as `aten::linear` in every case
it takes, whichever kernel runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fastembed_ext import _native  # registers torch.ops.fastembed

ops = torch.ops.fastembed
PANEL = 64  # kPanel in rust/core/csrc/packed.h


def linear(x, w, b=None, activation=None):
    return ops.packed_linear(x, ops.pack_linear_weight(w), w.shape[0], b, activation)


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


@pytest.mark.parametrize(("k", "n"), [(5, 64), (7, 65), (3, 1), (40, 130)])
def test_packed_layout_is_k_major_panels_of_64_columns_zero_padded(k: int, n: int) -> None:
    _, w, _ = _inputs(1, k, n)
    packed = ops.pack_linear_weight(w)
    panels = (n + PANEL - 1) // PANEL
    assert packed.shape == (panels, k, PANEL) and packed.is_contiguous()
    for column in range(panels * PANEL):
        want = w[column] if column < n else torch.zeros(k)
        assert torch.equal(packed[column // PANEL, :, column % PANEL], want)
    assert torch.equal(ops.unpack_linear_weight(packed, n), w)


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


@pytest.mark.parametrize("threads", [3, 8, 16])
# at most 64 rows: past them the AVX2 kernel hands the call to MKL, whose result depends on its
# own threads
@pytest.mark.parametrize(("rows", "k", "n"), [(64, 384, 384), (33, 96, 64), (48, 64, 130), (31, 384, 1536)])
def test_more_threads_than_panels_split_the_rows_bit_identically(threads: int, rows: int, k: int, n: int) -> None:
    """With fewer 64-column panels than threads the rows are split as well; every output is
    still computed the same way, so the result equals one thread's to the bit (GELU included)."""
    x, w, b = _inputs(rows, k, n)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.inference_mode():
            one = [linear(x, w, b), linear(x, w, b, "gelu")]
        torch.set_num_threads(threads)
        with torch.inference_mode():
            many = [linear(x, w, b), linear(x, w, b, "gelu")]
    finally:
        torch.set_num_threads(before)
    for a, m in zip(one, many):
        assert torch.equal(a, m)
    _assert_matches_float64(many[0], x, w, b)


@pytest.mark.parametrize("rows", [1, 5, 6, 7, 17, 64, 65, 200])
@pytest.mark.parametrize(
    ("k", "n"), [(768, 3072), (3072, 768), (1000, 7), (2001, 301), (7, 33), (1024, 1), (100, 72)]
)
def test_values_equal_float64_linear(rows: int, k: int, n: int) -> None:
    """Row tails (not a multiple of the 6-row tile), column tails (n not a multiple of the 64-column
    panel or of a vector), k not a multiple of the 96-step slice, and past 64 rows the inputs in
    chunks (3072 x 768 at 200 rows: four)."""
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


def test_unknown_activation_is_refused() -> None:
    x, w, b = _inputs(3, 64, 32)
    with pytest.raises(RuntimeError, match="unknown activation 'relu'; expected None or 'gelu'"):
        linear(x, w, b, "relu")


def test_batched_input_keeps_its_leading_dimensions() -> None:
    x, w, b = _inputs(2 * 9, 96, 40)
    got = linear(x.reshape(2, 9, 96), w, b)
    assert got.shape == (2, 9, 40)
    _assert_matches_float64(got.reshape(18, 40), x, w, b)


def test_non_contiguous_input_is_read_correctly() -> None:
    x, w, b = _inputs(12, 64, 48)
    wide = x.t().contiguous().t()  # column-major copy: same values, not contiguous
    assert not wide.is_contiguous() and torch.equal(wide, x)
    _assert_matches_float64(linear(wide, w, b), x, w, b)


def test_other_dtypes_go_to_aten() -> None:
    x, w, b = _inputs(8, 64, 32)
    got = linear(x.double(), w.double(), b.double())
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, F.linear(x.double(), w.double(), b.double()))


def test_gradients_flow_through_the_aten_path() -> None:
    x, w, b = _inputs(4, 32, 16)
    x.requires_grad_(True)
    linear(x, w, b).sum().backward()
    torch.testing.assert_close(x.grad, w.sum(dim=0).expand(4, 32), rtol=1e-5, atol=1e-5)


def test_mismatched_shapes_are_named() -> None:
    x, w, b = _inputs(3, 64, 32)
    packed = ops.pack_linear_weight(w)
    with pytest.raises(RuntimeError, match="the input has 60 features, the layer takes 64"):
        ops.packed_linear(x[:, :60], packed, 32, b)
    with pytest.raises(RuntimeError, match=r"the bias has shape \[31\], the layer has 32 outputs"):
        ops.packed_linear(x, packed, 32, b[:31])
    with pytest.raises(RuntimeError, match=r"the weight \[32, 64\] is not a packed weight of 32 outputs"):
        ops.packed_linear(x, w, 32, b)
    with pytest.raises(RuntimeError, match="is not a packed weight of 65 outputs"):
        ops.packed_linear(x, packed, 65, None)
    with pytest.raises(RuntimeError, match=r"the input is a scalar; expected \[\.\.\., 64\]"):
        ops.packed_linear(torch.tensor(1.0), packed, 32, b)
    with pytest.raises(RuntimeError, match="out_features must be positive, got 0"):
        ops.unpack_linear_weight(packed, 0)
    with pytest.raises(RuntimeError, match="expected a 2-D \\[out, in\\] weight, got 1 dimensions"):
        ops.pack_linear_weight(b)


@pytest.mark.parametrize("shape", [(3, 0), (0, 5), (2, 0, 5), (5,)])
def test_empty_and_one_dimensional_inputs_are_aten_linear(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    k = shape[-1]
    w, b = torch.randn(7, k), torch.randn(7)
    got = linear(x, w, b)
    assert got.shape == (*shape[:-1], 7)
    torch.testing.assert_close(got, F.linear(x, w, b))


def test_plain_weight_operator_of_revision_5_bundles_is_aten_linear() -> None:
    x, w, b = _inputs(17, 96, 40)
    assert torch.equal(ops.linear(x, w, b), F.linear(x, w, b))
    assert torch.equal(ops.linear(x, w, b, "gelu"), F.gelu(F.linear(x, w, b)))


@pytest.mark.parametrize("wanted", ["avx2", "aten"])
def test_kernel_can_be_chosen_by_environment(wanted: str) -> None:
    """FASTEMBED_EXT_LINEAR_KERNEL picks a narrower kernel (tested here on a wider CPU), never one
    the CPU lacks; its values agree too, on both sides of the AVX2 kernel's 64-row limit."""
    flags = _cpu_flags()
    expected = wanted if wanted == "aten" or {"avx2", "fma"} <= flags else _best_kernel()
    script = """
import torch, torch.nn.functional as F
from fastembed_ext import _native
ops = torch.ops.fastembed
g = torch.Generator().manual_seed(1)
error = 0.0
for rows, k, n in [(17, 1000, 301), (17, 2001, 301), (5, 1001, 7), (24, 100, 3), (1, 7, 33),
                   (9, 768, 3072), (64, 300, 72), (65, 300, 72), (130, 3072, 100)]:
    x, w, b = torch.randn(rows, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n, generator=g)
    for act in (None, "gelu"):
        got = ops.packed_linear(x, ops.pack_linear_weight(w), n, b, act).double()
        want = F.linear(x.double(), w.double(), b.double())
        want = F.gelu(want) if act else want
        error = max(error, float((got - want).abs().max()))
# The fallback is at::addmm on the unpacked wᵀ, bit for bit; the own kernel sums in another order.
def is_addmm(rows):
    x, w, b = torch.randn(rows, 300, generator=g), torch.randn(72, 300, generator=g), torch.randn(72, generator=g)
    packed = ops.pack_linear_weight(w)
    wt = packed.permute(1, 0, 2).reshape(300, -1)[:, :72]
    return torch.equal(ops.packed_linear(x, packed, 72, b), torch.addmm(b, x, wt))
print(_native.linear_kernel(), error, is_addmm(64), is_addmm(65))
"""
    env = {**os.environ, "FASTEMBED_EXT_LINEAR_KERNEL": wanted}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    kernel, error, addmm_at_64, addmm_at_65 = out.stdout.split()
    assert kernel == expected
    assert float(error) < 1e-3
    assert addmm_at_64 == str(expected == "aten")
    assert addmm_at_65 == "True"
