// One float32 vector type for the kernels that are written once for every CPU class: 16 lanes
// with AVX-512, 8 with AVX2 + FMA, 1 (plain floats, left to the compiler) elsewhere, aarch64
// included. kernels.py compiles the sources with the flags of the class the engine runs as, so
// the #if below picks that class's width. bfloat16 loads widen to float32 (a bfloat16 is the top
// half of a float32), so bfloat16 caches and weights need no bf16 instructions.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace simd {

#if defined(__AVX512F__)
constexpr int kWidth = 16;
using Vec = __m512;
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec set1(float x) { return _mm512_set1_ps(x); }
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
inline Vec load(const c10::BFloat16* p) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}
inline void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline float sum(Vec v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__)
constexpr int kWidth = 8;
using Vec = __m256;
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec set1(float x) { return _mm256_set1_ps(x); }
inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
inline Vec load(const c10::BFloat16* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}
inline void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline float sum(Vec v) {
  const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)));
}
#else
constexpr int kWidth = 1;
using Vec = float;
inline Vec zero() { return 0.f; }
inline Vec set1(float x) { return x; }
inline Vec load(const float* p) { return *p; }
inline Vec load(const c10::BFloat16* p) { return static_cast<float>(*p); }
inline void store(float* p, Vec v) { *p = v; }
inline Vec fmadd(Vec a, Vec b, Vec c) { return a * b + c; }
inline Vec add(Vec a, Vec b) { return a + b; }
inline float sum(Vec v) { return v; }
#endif

// How many vectors' worth of registers a kernel may keep live: 32 with AVX-512, 16 otherwise.
constexpr int kRegisters = kWidth == 16 ? 32 : 16;

}  // namespace simd
