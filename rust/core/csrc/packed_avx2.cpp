// The packed-weight GEMM for AVX2 (compiled with -mavx2 -mfma; called only where the CPU has
// them).
#include "packed.h"
#include "packed_kernel.h"

namespace fastembed::packed {
namespace {

struct Avx2 {
  using V = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kVectors = 2;  // a quarter panel: 6 rows × 2 vectors = 12 of 16 registers
  static constexpr int kRows = 6;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static __m256i mask(int64_t count) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const int clamped = static_cast<int>(count < 0 ? 0 : count > 8 ? 8 : count);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(clamped), lane);
  }
  // The first `count` (1 or more) floats at p, zero beyond.
  static V load_n(const float* p, int64_t count) {
    return count >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask(count));
  }
  static void store_n(float* p, V v, int64_t count) {
    if (count >= 8)
      _mm256_storeu_ps(p, v);
    else
      _mm256_maskstore_ps(p, mask(count), v);
  }
};

}  // namespace

void linear_avx2(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  panels<Avx2>(p, panel_begin, panel_end);
}

}  // namespace fastembed::packed
