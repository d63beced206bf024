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
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  // The first `count` floats (0 < count < 8).
  static __m256i mask(int count) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lane);
  }
  static V load_partial(const float* p, int count) { return _mm256_maskload_ps(p, mask(count)); }
  static void store_partial(float* p, V v, int count) { _mm256_maskstore_ps(p, mask(count), v); }
};

}  // namespace

void linear_avx2(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  panels<Avx2>(p, panel_begin, panel_end);
}

}  // namespace fastembed::packed
