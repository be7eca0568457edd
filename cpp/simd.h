// simd.h: one float vector type V for the ISA this translation unit is compiled for, and the
// vectorized exp / sigmoid / tanh the LSTM kernels use. lstm_kernels.cpp is compiled once per
// ISA (CMakeLists.txt): with -mavx512f V is __m512 (16 lanes), with -mavx2 -mfma __m256 (8),
// on plain x86-64 __m128 (SSE2, 4), elsewhere a scalar.
//
// NaN policy: min/max keep the *second* operand when either is NaN (x86 semantics), so every
// clamp below is written min_(limit, x) / max_(limit, x) and NaN inputs give NaN outputs.
//
// Accuracy (float32, measured against float64 by tests/test_native.py over [-20, 20]):
//   exp      relative error <= 2e-7 on [-87, 88] (Cephes polynomial, clamped outside)
//   sigmoid  absolute error <= 1.2e-7          (1 / (1 + exp(-x)))
//   tanh     absolute error <= 5e-7            (Eigen's 13/6 rational, exact ±1 beyond ±7.9)
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace fastlstm {
namespace FASTLSTM_ISA {

#if defined(__AVX512F__)
struct V { __m512 v; };
constexpr int W = 16;
inline V load(const float* p) { return {_mm512_loadu_ps(p)}; }
inline void store(float* p, V a) { _mm512_storeu_ps(p, a.v); }
inline V load_n(const float* p, int n) { return {_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p)}; }
inline void store_n(float* p, V a, int n) { _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), a.v); }
inline V set1(float x) { return {_mm512_set1_ps(x)}; }
inline V zero() { return {_mm512_setzero_ps()}; }
inline V add(V a, V b) { return {_mm512_add_ps(a.v, b.v)}; }
inline V sub(V a, V b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline V mul(V a, V b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline V div(V a, V b) { return {_mm512_div_ps(a.v, b.v)}; }
inline V fmadd(V a, V b, V c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }   // a·b + c
inline V fnmadd(V a, V b, V c) { return {_mm512_fnmadd_ps(a.v, b.v, c.v)}; } // c − a·b
inline V min_(V a, V b) { return {_mm512_min_ps(a.v, b.v)}; }
inline V max_(V a, V b) { return {_mm512_max_ps(a.v, b.v)}; }
inline V round_(V a) { return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
// 2^n for integral n in [-126, 127]
inline V pow2i(V n) {
  __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127)), 23);
  return {_mm512_castsi512_ps(e)};
}
inline float hsum(V a) { return _mm512_reduce_add_ps(a.v); }
// lanes >= n become +0 (a select, not a product: inf or NaN there still gives 0)
inline V first_n(V a, int n) { return {_mm512_maskz_mov_ps((__mmask16)((1u << n) - 1), a.v)}; }
// lane l of the result is lane idx[l] of a
inline V permute(V a, const int32_t* idx) { return {_mm512_permutexvar_ps(_mm512_loadu_si512(idx), a.v)}; }

#elif defined(__AVX2__) && defined(__FMA__)
struct V { __m256 v; };
constexpr int W = 8;
inline __m256i tail_mask(int n) {
  alignas(32) static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + 8 - n));
}
inline V load(const float* p) { return {_mm256_loadu_ps(p)}; }
inline void store(float* p, V a) { _mm256_storeu_ps(p, a.v); }
// The first n lanes (the rest 0 / not written) by 4-, 2- and 1-lane moves: AVX2's masked
// vmaskmovps is slow on AMD (the store microcoded). Training on Zen 3, both builds in one
// process: (50,16,1,20) 1.09x, (24,32,1,50) 1.05-1.07x, (50,32,1,100) 1.02x; forward and
// shapes without partial vectors within ±2.5%.
inline V load_n(const float* p, int n) {
  if (n >= W) return {_mm256_loadu_ps(p)};
  const float* q = p + (n & 4);
  __m128 t = _mm_setzero_ps();
  if (n & 2) t = _mm_loadl_pi(t, reinterpret_cast<const __m64*>(q));
  if (n & 1) t = (n & 2) ? _mm_movelh_ps(t, _mm_load_ss(q + 2)) : _mm_load_ss(q);
  return {(n & 4) ? _mm256_set_m128(t, _mm_loadu_ps(p)) : _mm256_set_m128(_mm_setzero_ps(), t)};
}
inline V first_n(V a, int n) { return {_mm256_and_ps(a.v, _mm256_castsi256_ps(tail_mask(n)))}; }
inline V permute(V a, const int32_t* idx) {
  return {_mm256_permutevar8x32_ps(a.v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx)))};
}
inline void store_n(float* p, V a, int n) {
  if (n >= W) return _mm256_storeu_ps(p, a.v);
  __m128 x = _mm256_castps256_ps128(a.v);
  if (n & 4) { _mm_storeu_ps(p, x); x = _mm256_extractf128_ps(a.v, 1); p += 4; }
  if (n & 2) { _mm_storel_pi(reinterpret_cast<__m64*>(p), x); x = _mm_movehl_ps(x, x); p += 2; }
  if (n & 1) _mm_store_ss(p, x);
}
inline V set1(float x) { return {_mm256_set1_ps(x)}; }
inline V zero() { return {_mm256_setzero_ps()}; }
inline V add(V a, V b) { return {_mm256_add_ps(a.v, b.v)}; }
inline V sub(V a, V b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline V mul(V a, V b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline V div(V a, V b) { return {_mm256_div_ps(a.v, b.v)}; }
inline V fmadd(V a, V b, V c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline V fnmadd(V a, V b, V c) { return {_mm256_fnmadd_ps(a.v, b.v, c.v)}; }
inline V min_(V a, V b) { return {_mm256_min_ps(a.v, b.v)}; }
inline V max_(V a, V b) { return {_mm256_max_ps(a.v, b.v)}; }
inline V round_(V a) { return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
inline V pow2i(V n) {
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127)), 23);
  return {_mm256_castsi256_ps(e)};
}
inline float hsum(V a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
#elif defined(__SSE2__)
struct V { __m128 v; };
constexpr int W = 4;
inline V load(const float* p) { return {_mm_loadu_ps(p)}; }
inline void store(float* p, V a) { _mm_storeu_ps(p, a.v); }
inline V load_n(const float* p, int n) {
  alignas(16) float t[4] = {0, 0, 0, 0};
  std::memcpy(t, p, sizeof(float) * n);
  return {_mm_load_ps(t)};
}
inline void store_n(float* p, V a, int n) {
  alignas(16) float t[4];
  _mm_store_ps(t, a.v);
  std::memcpy(p, t, sizeof(float) * n);
}
inline V first_n(V a, int n) {
  alignas(16) static const int32_t m[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
  return {_mm_and_ps(a.v, _mm_castsi128_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(m + 4 - n))))};
}
inline V set1(float x) { return {_mm_set1_ps(x)}; }
inline V zero() { return {_mm_setzero_ps()}; }
inline V add(V a, V b) { return {_mm_add_ps(a.v, b.v)}; }
inline V sub(V a, V b) { return {_mm_sub_ps(a.v, b.v)}; }
inline V mul(V a, V b) { return {_mm_mul_ps(a.v, b.v)}; }
inline V div(V a, V b) { return {_mm_div_ps(a.v, b.v)}; }
inline V fmadd(V a, V b, V c) { return {_mm_add_ps(_mm_mul_ps(a.v, b.v), c.v)}; }  // no FMA on SSE2
inline V fnmadd(V a, V b, V c) { return {_mm_sub_ps(c.v, _mm_mul_ps(a.v, b.v))}; }
inline V min_(V a, V b) { return {_mm_min_ps(a.v, b.v)}; }
inline V max_(V a, V b) { return {_mm_max_ps(a.v, b.v)}; }
inline V round_(V a) { return {_mm_cvtepi32_ps(_mm_cvtps_epi32(a.v))}; }  // |a| < 2^31 here
inline V pow2i(V n) {
  __m128i e = _mm_slli_epi32(_mm_add_epi32(_mm_cvtps_epi32(n.v), _mm_set1_epi32(127)), 23);
  return {_mm_castsi128_ps(e)};
}
inline float hsum(V a) {
  __m128 s = _mm_add_ps(a.v, _mm_movehl_ps(a.v, a.v));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
#else
struct V { float v; };
constexpr int W = 1;
inline V load(const float* p) { return {*p}; }
inline void store(float* p, V a) { *p = a.v; }
inline V load_n(const float* p, int n) { return {n > 0 ? *p : 0.f}; }
inline void store_n(float* p, V a, int n) { if (n > 0) *p = a.v; }
inline V first_n(V a, int n) { return {n > 0 ? a.v : 0.f}; }
inline V set1(float x) { return {x}; }
inline V zero() { return {0.f}; }
inline V add(V a, V b) { return {a.v + b.v}; }
inline V sub(V a, V b) { return {a.v - b.v}; }
inline V mul(V a, V b) { return {a.v * b.v}; }
inline V div(V a, V b) { return {a.v / b.v}; }
inline V fmadd(V a, V b, V c) { return {a.v * b.v + c.v}; }
inline V fnmadd(V a, V b, V c) { return {c.v - a.v * b.v}; }
inline V min_(V a, V b) { return {a.v < b.v ? a.v : b.v}; }  // NaN in either -> b
inline V max_(V a, V b) { return {a.v > b.v ? a.v : b.v}; }
inline V round_(V a) { return {static_cast<float>(static_cast<int32_t>(a.v + (a.v >= 0 ? 0.5f : -0.5f)))}; }
inline V pow2i(V n) {
  int32_t e = (static_cast<int32_t>(n.v) + 127) << 23;
  float f;
  std::memcpy(&f, &e, 4);
  return {f};
}
inline float hsum(V a) { return a.v; }

#endif

// e^x, Cephes-style: x = n·ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial.
// Clamped to [-87, 88] so 2^n stays a normal float; NaN passes through (clamps keep it).
inline V exp_(V x) {
  x = min_(set1(88.0f), max_(set1(-87.0f), x));
  V n = round_(mul(x, set1(1.44269504088896341f)));
  V r = fnmadd(n, set1(0.693359375f), x);        // ln2 split in two for an exact first product
  r = fnmadd(n, set1(-2.12194440e-4f), r);
  V p = set1(1.9875691500e-4f);
  p = fmadd(p, r, set1(1.3981999507e-3f));
  p = fmadd(p, r, set1(8.3334519073e-3f));
  p = fmadd(p, r, set1(4.1665795894e-2f));
  p = fmadd(p, r, set1(1.6666665459e-1f));
  p = fmadd(p, r, set1(5.0000001201e-1f));
  p = fmadd(p, mul(r, r), add(r, set1(1.0f)));
  return mul(p, pow2i(n));
}

// 1/d. AVX-512: the 14-bit hardware estimate and one Newton step (error < 2^-27, exact for
// powers of two), several times cheaper than a zmm division, which is double-pumped on Zen 4.
// Elsewhere a division: AVX2's 12-bit estimate would lose the exact ±1 saturation.
inline V recip(V d) {
#if defined(__AVX512F__)
  V r = {_mm512_rcp14_ps(d.v)};
  return fmadd(r, fnmadd(d, r, set1(1.0f)), r);  // r + r(1 − d·r)
#else
  return div(set1(1.0f), d);
#endif
}

// σ(x) = 1 / (1 + e^{-x})
inline V sigmoid(V x) { return recip(add(set1(1.0f), exp_(sub(zero(), x)))); }

// tanh(x): odd/even rational approximation (Eigen's generic_fast_tanh_float). The clamp is
// where the rational reaches exactly ±1 in float32 (it differs with and without FMA).
#if defined(__FMA__)
constexpr float kTanhClamp = 7.99881172180175781f;
#else
constexpr float kTanhClamp = 7.90531110763549805f;
#endif
inline V tanh_(V x) {
  x = min_(set1(kTanhClamp), max_(set1(-kTanhClamp), x));
  V x2 = mul(x, x);
  V p = set1(-2.76076847742355e-16f);
  p = fmadd(x2, p, set1(2.00018790482477e-13f));
  p = fmadd(x2, p, set1(-8.60467152213735e-11f));
  p = fmadd(x2, p, set1(5.12229709037114e-08f));
  p = fmadd(x2, p, set1(1.48572235717979e-05f));
  p = fmadd(x2, p, set1(6.37261928875436e-04f));
  p = fmadd(x2, p, set1(4.89352455891786e-03f));
  p = mul(x, p);
  V q = set1(1.19825839466702e-06f);
  q = fmadd(x2, q, set1(1.18534705686654e-04f));
  q = fmadd(x2, q, set1(2.26843463243900e-03f));
  q = fmadd(x2, q, set1(4.89352518554385e-03f));
#if defined(__AVX512F__)
  return mul(p, recip(q));
#else
  return div(p, q);
#endif
}

}  // namespace FASTLSTM_ISA
}  // namespace fastlstm
