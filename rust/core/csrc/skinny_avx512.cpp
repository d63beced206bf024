// The skinny GEMM for AVX-512 (compiled with -mavx512f -mfma; called only where the CPU has them).
#include "skinny.h"
#include "skinny_kernel.h"

namespace fastembed::skinny {
namespace {

struct Avx512 {
  using V = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kCols = 4;  // 4 weight rows × 6 input rows = 24 of 32 registers
  static constexpr int kRows = 6;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load_partial(const float* p, int n) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
  }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  // [sum of a, sum of b, sum of c, sum of d].
  static __m128 sum4(V a, V b, V c, V d) {
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], and the same for c, d.
    const V ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    const V cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    // Per 128-bit lane: [a, b, c, d] over that lane's four elements; then add the four lanes.
    V t = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                        _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    t = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(1, 0, 3, 2)));
    t = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_castps512_ps128(t);
  }
  static float sum(V v) {
    v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
    v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(2, 3, 0, 1)));
    return sum128(_mm512_castps512_ps128(v));
  }
};

}  // namespace

void linear_avx512(const Problem& p, int64_t col_begin, int64_t col_end) {
  columns<Avx512>(p, col_begin, col_end);
}

}  // namespace fastembed::skinny
