// The packed weight layout of `fastembed::packed_linear` and the entry points of its
// per-instruction-set kernels (packed_kernel.h).
#pragma once

#include <cstdint>

namespace fastembed::packed {

// nn.Linear's [n, k] weight, stored as ceil(n / kPanel) panels of kPanel output columns, each
// k-major: packed[p][i][c] = w[p * kPanel + c][i], zero past row n. One k step of a panel is
// kPanel contiguous floats, and a panel is one contiguous stream.
constexpr int64_t kPanel = 64;

inline int64_t panels(int64_t n) { return (n + kPanel - 1) / kPanel; }

// y[r * n + c] = sum over i < k of x[r * k + i] * w[c][i], plus bias[c] unless it is null;
// x is [m, k] and y [m, n], both contiguous; w is packed.
struct Problem {
  const float* x;
  int64_t m;
  int64_t k;
  const float* w;
  int64_t n;
  const float* bias;
  float* y;
};

// Panels [panel_begin, panel_end) of p, on the calling thread.
void linear_avx512(const Problem& p, int64_t panel_begin, int64_t panel_end);
void linear_avx2(const Problem& p, int64_t panel_begin, int64_t panel_end);

}  // namespace fastembed::packed
