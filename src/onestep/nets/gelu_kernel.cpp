// Vectorisable loops of the tanh-approximate GELU on float32 arrays (see gelu_kernel.h).
#include "onestep/nets/gelu_kernel.h"

#include <cstring>

namespace onestep::gelu_kernel {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

// exp(v) for float32 v: exact 0 below -87.3 (where expf's result leaves the normal range),
// +inf above 88 (expf's overflows at 88.72); NaN gives exp(-87.3) (the callers multiply by x,
// which is NaN then).
// n = round(v / ln 2), r = v - n ln 2 (ln 2 in two parts), exp(r) by Cephes' polynomial, times
// 2^n built in the exponent bits.
inline __attribute__((always_inline)) float exp_approx(float v) {
  const float huge = v > 88.0f ? __builtin_inff() : 1.0f;
  const float tiny = v < -87.3f ? 0.0f : 1.0f;
  v = v > 88.0f ? 88.0f : v;
  v = !(v >= -87.3f) ? -87.3f : v;
  // Round to nearest by adding and subtracting 1.5 * 2^23 (no -ffast-math here to undo it).
  const float n = (v * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (v - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n as a float, n in [-126, 127]: a normal float.
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale * huge * tiny;
}

// s = 1 / (1 + exp(-2u)) = 0.5 (1 + tanh(u)).
inline __attribute__((always_inline)) float half_one_plus_tanh(float x) {
  const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
  return 1.0f / (1.0f + exp_approx(-2.0f * u));
}

inline __attribute__((always_inline)) void forward_loop(const float* __restrict x, float* __restrict y,
                                                        int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * half_one_plus_tanh(x[i]);
}

inline __attribute__((always_inline)) void backward_loop(const float* __restrict g, const float* __restrict x,
                                                         float* __restrict dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float xi = x[i];
    const float s = half_one_plus_tanh(xi);
    // Beyond |x| = 10, s (1 - s) < 1e-37: the clamp changes nothing there but keeps x^2 finite.
    float xc = xi > 10.0f ? 10.0f : xi;
    xc = xi < -10.0f ? -10.0f : xc;
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kCubic * xc * xc);
    dx[i] = g[i] * (s + 2.0f * xc * s * (1.0f - s) * du);
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define ONESTEP_GELU_X86 1
__attribute__((target("avx2,fma"))) void forward_avx2(const float* x, float* y, int64_t n) {
  forward_loop(x, y, n);
}
__attribute__((target("avx2,fma"))) void backward_avx2(const float* g, const float* x, float* dx, int64_t n) {
  backward_loop(g, x, dx, n);
}
// GCC's generic tuning would keep AVX-512 code on 256-bit vectors; these loops gain from 512.
#define ONESTEP_AVX512_TARGET target("avx512f,avx2,fma,prefer-vector-width=512")
__attribute__((ONESTEP_AVX512_TARGET)) void forward_avx512(const float* x, float* y, int64_t n) {
  forward_loop(x, y, n);
}
__attribute__((ONESTEP_AVX512_TARGET)) void backward_avx512(const float* g, const float* x, float* dx, int64_t n) {
  backward_loop(g, x, dx, n);
}
#endif

}  // namespace

std::vector<Isa> supported_isas() {
  std::vector<Isa> isas = {Isa::Baseline};
#ifdef ONESTEP_GELU_X86
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    isas.push_back(Isa::Avx2);
    if (__builtin_cpu_supports("avx512f")) isas.push_back(Isa::Avx512);
  }
#endif
  return isas;
}

Isa best_isa() {
  static const Isa best = supported_isas().back();
  return best;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx2:
      return "AVX2";
    case Isa::Avx512:
      return "AVX-512";
    default:
      return "baseline";
  }
}

void forward(const float* x, float* y, int64_t n, Isa isa) {
#ifdef ONESTEP_GELU_X86
  if (isa == Isa::Avx2) return forward_avx2(x, y, n);
  if (isa == Isa::Avx512) return forward_avx512(x, y, n);
#endif
  (void)isa;
  forward_loop(x, y, n);
}

void backward(const float* g, const float* x, float* dx, int64_t n, Isa isa) {
#ifdef ONESTEP_GELU_X86
  if (isa == Isa::Avx2) return backward_avx2(g, x, dx, n);
  if (isa == Isa::Avx512) return backward_avx512(g, x, dx, n);
#endif
  (void)isa;
  backward_loop(g, x, dx, n);
}

}  // namespace onestep::gelu_kernel
