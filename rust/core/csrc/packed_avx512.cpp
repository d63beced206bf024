// The packed-weight GEMM for AVX-512 (compiled with -mavx512f -mfma; called only where the CPU
// has them).
#include "packed.h"
#include "packed_kernel.h"

namespace fastembed::packed {
namespace {

struct Avx512 {
  using V = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kVectors = 4;  // a whole panel: 6 rows × 4 vectors = 24 of 32 registers
  static constexpr int kRows = 6;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  // The first `count` floats (0 < count < 16).
  static __mmask16 mask(int count) { return static_cast<__mmask16>((1u << count) - 1); }
  static V load_partial(const float* p, int count) { return _mm512_maskz_loadu_ps(mask(count), p); }
  static void store_partial(float* p, V v, int count) { _mm512_mask_storeu_ps(p, mask(count), v); }
};

}  // namespace

void linear_avx512(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  panels<Avx512>(p, panel_begin, panel_end);
}

}  // namespace fastembed::packed
