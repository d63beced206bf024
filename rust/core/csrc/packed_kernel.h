// Float32 GEMM on packed weights (packed.h): y = x · wᵀ + b, for any number of rows.
//
// A tile holds a few rows by one panel's columns in registers and walks k, adding at each step a
// broadcast input element times a contiguous row of the panel: no horizontal sums, and each
// thread reads its panels as one contiguous stream that a software prefetch runs ahead of. The
// panel's k slice stays in L1 while every row tile of the batch passes over it, and for many rows
// the batch is cut into chunks whose inputs stay in L2.
//
// This header is compiled once per instruction set (packed_avx512.cpp, packed_avx2.cpp). It must
// not include or instantiate anything shared with other translation units (no ATen, no std
// templates): the linker would keep one copy of such an inline function, possibly the AVX-512 one.
#pragma once

#include <cstdint>
#include <immintrin.h>

#include "packed.h"

namespace fastembed::packed {
namespace {  // internal linkage: each instruction set's file keeps its own copy

// Rows of k per slice: one slice of a panel (24 KiB) stays in L1 while the row tiles pass over it.
constexpr int64_t kSlice = 96;
// How far ahead of the slice being read the prefetch runs, in bytes of the stream (measured on
// 768 x 3072 at 17 rows from memory: 8 KiB reads 16 GB/s, 32 KiB 23, 64 KiB 21).
constexpr int64_t kPrefetchAhead = 32 * 1024;
// Past this many rows the inputs are taken in chunks of about kChunkBytes (at least this many
// rows), each chunk reading the weights anew: a few rows are bound by the weight stream and read
// it once; many rows are bound by the arithmetic, and their inputs must stay in L2.
constexpr int64_t kChunkRows = 64;
constexpr int64_t kChunkBytes = 256 * 1024;

inline int64_t chunk_rows(int64_t m, int64_t k) {
  if (m <= kChunkRows) return m;
  const int64_t rows = kChunkBytes / (4 * k);
  return rows > kChunkRows ? rows : kChunkRows;
}

// The first `count` (1 or more) floats at p: a whole vector, or the part of one that exists.
template <class Isa>
inline typename Isa::V load_n(const float* p, int64_t count) {
  return count >= Isa::kLanes ? Isa::load(p) : Isa::load_partial(p, static_cast<int>(count));
}
template <class Isa>
inline void store_n(float* p, typename Isa::V v, int64_t count) {
  if (count >= Isa::kLanes)
    Isa::store(p, v);
  else
    Isa::store_partial(p, v, static_cast<int>(count));
}

template <class Isa, int RB>
inline void tile(const Problem& p, const float* x, float* y, const float* w, int64_t col,
                 int64_t kn, bool first, const char* prefetch, int64_t prefetch_lines) {
  using V = typename Isa::V;
  constexpr int L = Isa::kLanes;
  constexpr int VB = Isa::kVectors;
  const int64_t k = p.k;
  const int64_t valid = p.n - col;  // columns of this tile that exist (the last panel is padded)
  // What the tile starts from (the bias on the first k slice, else the earlier slices' sums in
  // y) goes through a buffer: loaded into the accumulators behind a branch per vector, it made
  // GCC keep the accumulators of AVX2's 6-row tile in memory for the whole k loop.
  alignas(64) float start[RB][VB * L];
  for (int j = 0; j < RB; ++j)
    for (int i = 0; i < VB; ++i) {
      // Vectors wholly past column n are neither read nor written, nor is a pointer to them formed.
      const int64_t count = valid - i * L;
      V v = Isa::zero();
      if (count > 0 && !first)
        v = load_n<Isa>(y + j * p.n + i * L, count);
      else if (count > 0 && p.bias != nullptr)
        v = load_n<Isa>(p.bias + col + i * L, count);
      Isa::store(start[j] + i * L, v);
    }
  V acc[RB][VB];
  for (int j = 0; j < RB; ++j)
    for (int i = 0; i < VB; ++i) acc[j][i] = Isa::load(start[j] + i * L);
  // This tile's share of the prefetch, spread evenly over its k loop: a line each time `due`
  // passes kn (no division in the loop).
  int64_t due = 0;
  for (int64_t kk = 0; kk < kn; ++kk, w += kPanel) {
    V wv[VB];
    for (int i = 0; i < VB; ++i) wv[i] = Isa::load(w + i * L);
    for (due += prefetch_lines; due >= kn; due -= kn, prefetch += 64)
      _mm_prefetch(prefetch, _MM_HINT_T1);
    for (int j = 0; j < RB; ++j) {
      const V xv = Isa::broadcast(x + j * k + kk);
      for (int i = 0; i < VB; ++i) acc[j][i] = Isa::fma(wv[i], xv, acc[j][i]);
    }
  }
  for (int j = 0; j < RB; ++j)
    for (int i = 0; i < VB; ++i)
      if (valid - i * L > 0) store_n<Isa>(y + j * p.n + i * L, acc[j][i], valid - i * L);
}

template <class Isa>
inline void rows_tile(const Problem& p, int64_t row, int rows, const float* w, int64_t col,
                      int64_t kb, int64_t kn, const char* prefetch, int64_t lines) {
  const float* x = p.x + row * p.k + kb;
  float* y = p.y + row * p.n + col;
  const bool first = kb == 0;
  switch (rows) {
    case 1: tile<Isa, 1>(p, x, y, w, col, kn, first, prefetch, lines); break;
    case 2: tile<Isa, 2>(p, x, y, w, col, kn, first, prefetch, lines); break;
    case 3: tile<Isa, 3>(p, x, y, w, col, kn, first, prefetch, lines); break;
    case 4: tile<Isa, 4>(p, x, y, w, col, kn, first, prefetch, lines); break;
    case 5: if constexpr (Isa::kRows >= 5) tile<Isa, 5>(p, x, y, w, col, kn, first, prefetch, lines); break;
    case 6: if constexpr (Isa::kRows >= 6) tile<Isa, 6>(p, x, y, w, col, kn, first, prefetch, lines); break;
    default: break;
  }
}

}  // namespace

template <class Isa>
inline void panels(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  constexpr int RB = Isa::kRows;
  constexpr int64_t kTileCols = Isa::kLanes * Isa::kVectors;
  const int64_t k = p.k;
  const int64_t panel_floats = k * kPanel;
  const char* stream_end = reinterpret_cast<const char*>(p.w + panel_end * panel_floats);
  // The stream's first kPrefetchAhead bytes have no slice before them to prefetch them.
  const char* head = reinterpret_cast<const char*>(p.w + panel_begin * panel_floats);
  const int64_t head_bytes = stream_end - head < kPrefetchAhead ? stream_end - head : kPrefetchAhead;
  for (int64_t offset = 0; offset < head_bytes; offset += 64) _mm_prefetch(head + offset, _MM_HINT_T1);
  const int64_t chunk = chunk_rows(p.m, k);
  for (int64_t row0 = 0; row0 < p.m; row0 += chunk) {
    const int64_t rows = p.m - row0 < chunk ? p.m - row0 : chunk;
    const int64_t tiles = (rows + RB - 1) / RB;
    for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
      const float* w_panel = p.w + panel * panel_floats;
      for (int64_t kb = 0; kb < k; kb += kSlice) {
        const int64_t kn = k - kb < kSlice ? k - kb : kSlice;
        const float* w = w_panel + kb * kPanel;
        // This slice's share of the prefetch: as many bytes as it reads, kPrefetchAhead on,
        // never past this thread's panels (clamped before any pointer is formed).
        const int64_t ahead = stream_end - reinterpret_cast<const char*>(w);
        const int64_t from = ahead < kPrefetchAhead ? ahead : kPrefetchAhead;
        const int64_t bytes = kn * kPanel * 4;
        const int64_t to = ahead < kPrefetchAhead + bytes ? ahead : kPrefetchAhead + bytes;
        const char* prefetch = reinterpret_cast<const char*>(w) + from;
        const int64_t lines = (to - from) / 64;
        const int64_t units = tiles * (kPanel / kTileCols);
        int64_t unit = 0;
        for (int64_t sub = 0; sub < kPanel; sub += kTileCols) {
          const int64_t col = panel * kPanel + sub;
          if (col >= p.n) break;
          for (int64_t t = 0; t < tiles; ++t, ++unit) {
            const int64_t row = row0 + t * RB;
            const int rb = static_cast<int>(row0 + rows - row < RB ? row0 + rows - row : RB);
            const int64_t first_line = lines * unit / units;
            const int64_t count = lines * (unit + 1) / units - first_line;
            rows_tile<Isa>(p, row, rb, w + sub, col, kb, kn, prefetch + first_line * 64, count);
          }
        }
      }
    }
  }
}

}  // namespace fastembed::packed
