// The skinny GEMM for AVX2 (compiled with -mavx2 -mfma; called only where the CPU has them).
#include "skinny.h"
#include "skinny_kernel.h"

namespace fastembed::skinny {
namespace {

struct Avx2 {
  using V = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kCols = 3;  // 3 weight rows × 4 input rows = 12 of 16 registers
  static constexpr int kRows = 4;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load_partial(const float* p, int n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane));
  }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float sum(V v) {
    return sum128(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
  }
};

}  // namespace

void linear_avx2(const Problem& p, int64_t col_begin, int64_t col_end) {
  columns<Avx2>(p, col_begin, col_end);
}

}  // namespace fastembed::skinny
