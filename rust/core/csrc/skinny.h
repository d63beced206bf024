// Entry points of the per-instruction-set skinny GEMM builds (see skinny_kernel.h).
#pragma once

#include <cstdint>

namespace fastembed::skinny {

// y[r * ldy + c] = sum over i < k of x[r * k + i] * w[c * k + i], plus bias[c] unless it is null;
// x is [m, k] and w is [n, k], both contiguous.
struct Problem {
  const float* x;
  int64_t m;
  int64_t k;
  const float* w;
  const float* bias;
  float* y;
  int64_t ldy;
  // The dot products are summed k_slice at a time (k: all at once); see k_slice().
  int64_t k_slice;
};

// Each slice adds a horizontal sum per output: below this many floats of k (24 AVX-512 steps) that
// costs more than the slicing saves (bench/linear_forms.py: a 64-row slice of 112 was 1.4x slower).
constexpr int64_t kMinSlice = 384;

// The widest k slice (a multiple of 16 floats, about equal slices) whose m input rows take at
// most `budget` bytes; k itself when all of the input fits, or when slices would be too narrow.
inline int64_t k_slice(int64_t m, int64_t k, int64_t budget) {
  const int64_t bytes = m * k * 4;
  if (bytes <= budget) return k;
  const int64_t slices = (bytes + budget - 1) / budget;
  const int64_t slice = ((k + slices - 1) / slices + 15) / 16 * 16;
  return slice < kMinSlice ? k : slice;
}

// Output columns [col_begin, col_end) of p, on the calling thread.
void linear_avx512(const Problem& p, int64_t col_begin, int64_t col_end);
void linear_avx2(const Problem& p, int64_t col_begin, int64_t col_end);

}  // namespace fastembed::skinny
