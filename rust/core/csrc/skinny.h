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
};

// Output columns [col_begin, col_end) of p, on the calling thread.
void linear_avx512(const Problem& p, int64_t col_begin, int64_t col_end);
void linear_avx2(const Problem& p, int64_t col_begin, int64_t col_end);

}  // namespace fastembed::skinny
