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
  static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static __mmask16 mask(int64_t count) {
    return count >= 16 ? static_cast<__mmask16>(0xffff)
                       : static_cast<__mmask16>(count <= 0 ? 0 : (1u << count) - 1);
  }
  // The first `count` (1 or more) floats at p, zero beyond.
  static V load_n(const float* p, int64_t count) {
    return count >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mask(count), p);
  }
  static void store_n(float* p, V v, int64_t count) {
    if (count >= 16)
      _mm512_storeu_ps(p, v);
    else
      _mm512_mask_storeu_ps(p, mask(count), v);
  }
};

}  // namespace

void linear_avx512(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  panels<Avx512>(p, panel_begin, panel_end);
}

}  // namespace fastembed::packed
