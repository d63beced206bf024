// Skinny float32 GEMM for the few rows of a short query: y = x · wᵀ + b.
//
// `w` is nn.Linear's own [n, k] row-major weight. Every output is a dot product over contiguous
// memory, so the weights stream once, front to back, while the few input rows stay in cache; a
// software prefetch runs ahead on the same stream so that reading the next weights overlaps the
// arithmetic on these. MKL's GEMM repacks `w` on each call and streams it at about half the
// machine's read speed for 10-60 rows.
//
// This header is compiled once per instruction set (skinny_avx512.cpp, skinny_avx2.cpp). It must
// not include or instantiate anything shared with other translation units (no ATen, no std
// templates): the linker would keep one copy of such an inline function, possibly the AVX-512 one.
#pragma once

#include <cstdint>
#include <immintrin.h>

#include "skinny.h"

namespace fastembed::skinny {
namespace {  // internal linkage: each instruction set's file keeps its own copy

// The sum of a vector's four lanes; the last step of every horizontal sum.
inline float sum128(__m128 s) {
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace

// The k range [kb, kb + kn) of the dot products; `accumulate` adds to y (later k slices) instead
// of storing sum + bias (the first).
template <class Isa, int NB, int RB>
inline void tile(const Problem& p, int64_t col, int64_t row, int64_t kb, int64_t kn,
                 bool accumulate, const char* prefetch, int64_t prefetch_lines) {
  using V = typename Isa::V;
  constexpr int L = Isa::kLanes;
  const int64_t k = p.k;
  const float* w = p.w + col * k + kb;
  const float* x = p.x + row * k + kb;
  V acc[NB][RB];
  for (int i = 0; i < NB; ++i)
    for (int j = 0; j < RB; ++j) acc[i][j] = Isa::zero();
  const int64_t steps = kn / L;
  int64_t issued = 0;
  int64_t kk = 0;
  for (int64_t step = 0; step < steps; ++step, kk += L) {
    V wv[NB];
    for (int i = 0; i < NB; ++i) wv[i] = Isa::load(w + i * k + kk);
    // Spread this tile's share of the prefetch evenly over its k loop.
    const int64_t upto = (step + 1) * prefetch_lines / steps;
    for (; issued < upto; ++issued) _mm_prefetch(prefetch + issued * 64, _MM_HINT_T1);
    for (int j = 0; j < RB; ++j) {
      const V xv = Isa::load(x + j * k + kk);
      for (int i = 0; i < NB; ++i) acc[i][j] = Isa::fma(wv[i], xv, acc[i][j]);
    }
  }
  if (kk < kn) {
    const int rest = static_cast<int>(kn - kk);
    V wv[NB];
    for (int i = 0; i < NB; ++i) wv[i] = Isa::load_partial(w + i * k + kk, rest);
    for (int j = 0; j < RB; ++j) {
      const V xv = Isa::load_partial(x + j * k + kk, rest);
      for (int i = 0; i < NB; ++i) acc[i][j] = Isa::fma(wv[i], xv, acc[i][j]);
    }
  }
  if constexpr (NB == 4) {
    // Four horizontal sums at once, stored as one vector: the reductions are a tenth of a tile.
    const __m128 bias = p.bias != nullptr ? _mm_loadu_ps(p.bias + col) : _mm_setzero_ps();
    for (int j = 0; j < RB; ++j) {
      float* out = p.y + (row + j) * p.ldy + col;
      const __m128 sums = Isa::sum4(acc[0][j], acc[1][j], acc[2][j], acc[3][j]);
      _mm_storeu_ps(out, _mm_add_ps(sums, accumulate ? _mm_loadu_ps(out) : bias));
    }
  } else {
    for (int j = 0; j < RB; ++j) {
      float* out = p.y + (row + j) * p.ldy + col;
      for (int i = 0; i < NB; ++i)
        out[i] = Isa::sum(acc[i][j]) +
                 (accumulate ? out[i] : p.bias != nullptr ? p.bias[col + i] : 0.0f);
    }
  }
}

// All rows against NB weight rows starting at `col`; the prefetch region [pf_begin, pf_end) is
// shared out among the row tiles, which all reread the same NB weight rows from L1.
template <class Isa, int NB>
inline void column_block(const Problem& p, int64_t col, int64_t kb, int64_t kn, bool accumulate,
                         const char* pf_begin, const char* pf_end) {
  constexpr int RB = Isa::kRows;
  const int64_t tiles = (p.m + RB - 1) / RB;
  const int64_t lines = (pf_end - pf_begin) / 64;
  // Every other block walks the row tiles backwards and so starts on the input rows the block
  // before ended on, still in L1.
  const bool backwards = ((col / NB) & 1) != 0;
  for (int64_t i = 0; i < tiles; ++i) {
    const int64_t row = (backwards ? tiles - 1 - i : i) * RB;
    const int64_t first = lines * i / tiles;
    const int64_t count = lines * (i + 1) / tiles - first;
    const char* pf = pf_begin + first * 64;
    switch (p.m - row < RB ? p.m - row : RB) {
      case 1: tile<Isa, NB, 1>(p, col, row, kb, kn, accumulate, pf, count); break;
      case 2: tile<Isa, NB, 2>(p, col, row, kb, kn, accumulate, pf, count); break;
      case 3: tile<Isa, NB, 3>(p, col, row, kb, kn, accumulate, pf, count); break;
      case 4: tile<Isa, NB, 4>(p, col, row, kb, kn, accumulate, pf, count); break;
      case 5: if constexpr (RB >= 5) tile<Isa, NB, 5>(p, col, row, kb, kn, accumulate, pf, count); break;
      case 6: if constexpr (RB >= 6) tile<Isa, NB, 6>(p, col, row, kb, kn, accumulate, pf, count); break;
      default: break;
    }
  }
}

// Weight rows per group of the sliced walk: about kGroupBytes of weights, whole blocks of nb.
constexpr int64_t kGroupBytes = 96 * 1024;
inline int64_t group_rows(int64_t k, int64_t nb) {
  const int64_t rows = kGroupBytes / (k * 4) / nb * nb;
  return rows < nb ? nb : rows;
}

template <class Isa>
inline void columns(const Problem& p, int64_t col_begin, int64_t col_end) {
  constexpr int NB = Isa::kCols;
  int64_t col = col_begin;
  const int64_t k = p.k;
  // Weight rows from `c` on, as bytes; clamped to this range first, so that no pointer past the
  // weights is ever formed.
  const auto row_bytes = [&](int64_t c) {
    return reinterpret_cast<const char*>(p.w + (c < col_end ? c : col_end) * k);
  };
  // The first two blocks have no block before them to prefetch them: ask for them at once.
  const char* head = row_bytes(col_begin);
  for (int64_t offset = 0; offset < row_bytes(col_begin + 2 * NB) - head; offset += 64)
    _mm_prefetch(head + offset, _MM_HINT_T1);
  if (p.k_slice >= k) {
    for (; col + NB <= col_end; col += NB) {
      // Prefetch the weight rows two blocks ahead, into L2.
      column_block<Isa, NB>(p, col, 0, k, false, row_bytes(col + 2 * NB), row_bytes(col + 3 * NB));
    }
  } else {
    // The input rows do not fit in L1 (and would be reread from L2 for every block, taking the
    // L1 miss slots the weight stream needs): walk a group of weight rows one k slice at a time,
    // so that the inputs' slice stays in L1 for the whole group, while the next group is
    // prefetched.
    const int64_t group = group_rows(k, NB);
    const int64_t slices = (k + p.k_slice - 1) / p.k_slice;
    while (col + NB <= col_end) {
      const int64_t blocks = (col_end - col < group ? col_end - col : group) / NB;
      const char* pf_begin = row_bytes(col + group);
      const int64_t pf_lines = (row_bytes(col + 2 * group) - pf_begin) / 64;
      const int64_t units = slices * blocks;
      int64_t unit = 0;
      for (int64_t s = 0; s < slices; ++s) {
        const int64_t kb = s * p.k_slice;
        const int64_t kn = kb + p.k_slice < k ? p.k_slice : k - kb;
        for (int64_t b = 0; b < blocks; ++b, ++unit) {
          const int64_t first = pf_lines * unit / units;
          const int64_t last = pf_lines * (unit + 1) / units;
          column_block<Isa, NB>(p, col + b * NB, kb, kn, s > 0, pf_begin + first * 64,
                                pf_begin + last * 64);
        }
      }
      col += blocks * NB;
    }
  }
  for (; col < col_end; ++col)
    column_block<Isa, 1>(p, col, 0, k, false, row_bytes(col_end), row_bytes(col_end));
}

}  // namespace fastembed::skinny
