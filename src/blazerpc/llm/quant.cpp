// Weight-only quantized products for decode steps (built with kernels.cpp, loaded by kernels.py).
//
// quant_linear: y = x @ W.T for a few float32 rows x and W quantized in groups of 32 weights
// along K, each group w = scale * u + min with u unsigned: 8-bit (u = q + 128, min = -128 scale:
// GGUF's Q8_0, shifted) or 4-bit (u in 0..15: GGUF's Q4_1). Scales and mins are float16.
//
// A decode step reads every weight once, so it is bound by how many bytes W has: 4.5-5 bits a
// weight instead of bfloat16's 16. x is quantized per group to ~16 bits as two int8 parts,
// x ~ step * (256 * hi + lo) with step = max|x| / 127 / 256 (int8 alone, as llama.cpp's Q8
// activations, moved 10% of the default model's next tokens on near ties; two parts, under 2%).
// A group's product is then integer dot products,
//   sum_i w_i x_i = scale * step * sum_i u_i xq_i + min * step * sum_i xq_i,   xq = 256 hi + lo.
//
// Layout (quant.py packs it): rows in tiles of 16, a tile's group in one block where each 32-bit
// lane is one row. 8 bits: 8 vectors of 64 bytes, vector t holding bytes 4t..4t+3 of each row's
// group. 4 bits: 4 vectors, vector s holding in its low nibbles values 8s..8s+3, in its high
// nibbles 8s+4..8s+7. So one vpdpbusd (AVX-512 VNNI: u8 x s8 -> s32) with 4 values of x broadcast
// adds 4 products to each of 16 rows: no shuffles, no horizontal sums, one float conversion per
// group of 16 rows. AVX2 does the same in two halves of 8 rows (vpmaddubsw), plain loops elsewhere. Each path
// is compiled with its own target attribute; the caller picks the one its CPU has.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QUANT_X86 1
#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))
#define TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

namespace {

constexpr int64_t kGroup = 32;
constexpr int64_t kTile = 16;  // rows of W per block
constexpr int64_t kMaxRows = 64;

enum Isa : int64_t { kPortable = 0, kAvx2 = 1, kAvx512Vnni = 2 };

struct Weights {
  const uint8_t* u;       // (N / 16, G, 16 * 32 * bits / 8)
  const at::Half* scale;  // (N / 16, G, 16)
  const at::Half* min;    // (N / 16, G, 16)
  int64_t n, groups, bits;
  int64_t block() const { return kTile * kGroup * bits / 8; }  // bytes of one tile's group
  const uint8_t* at(int64_t tile, int64_t g) const { return u + (tile * groups + g) * block(); }
  int64_t lane(int64_t tile, int64_t g) const { return (tile * groups + g) * kTile; }
};

struct Activations {
  std::vector<int8_t> hi, lo;  // (M, Kp) each
  std::vector<float> step;     // (M, G): max|x| / 127 / 256 of the group
  std::vector<float> sum;      // (M, G): step * sum of the group's 256 hi + lo
  int64_t kp, groups;
};

Activations quantize_activations(const float* x, int64_t m, int64_t k, int64_t groups) {
  const int64_t kp = groups * kGroup;
  Activations a{std::vector<int8_t>(m * kp, 0), std::vector<int8_t>(m * kp, 0), std::vector<float>(m * groups, 0.f),
                std::vector<float>(m * groups, 0.f), kp, groups};
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t begin = g * kGroup, end = std::min(begin + kGroup, k);
      float amax = 0.f;
      for (int64_t e = begin; e < end; ++e) amax = std::max(amax, std::fabs(x[r * k + e]));
      const float inv = amax > 0.f ? 127.f / amax : 0.f;
      int32_t total = 0;
      for (int64_t e = begin; e < end; ++e) {
        const float t = x[r * k + e] * inv;  // in -127..127
        const float hi = std::nearbyint(t);  // half to even, as torch.round
        const float lo = std::min(127.f, std::max(-127.f, std::nearbyint((t - hi) * 256.f)));
        a.hi[r * kp + e] = static_cast<int8_t>(hi);
        a.lo[r * kp + e] = static_cast<int8_t>(lo);
        total += 256 * static_cast<int32_t>(hi) + static_cast<int32_t>(lo);
      }
      a.step[r * groups + g] = amax / 127.f / 256.f;
      a.sum[r * groups + g] = a.step[r * groups + g] * static_cast<float>(total);
    }
  }
  return a;
}

// Plain loops: any CPU, and the reference the vector paths are tested against.
void portable(const Weights& w, const Activations& a, int64_t m, float* y, int64_t first, int64_t last) {
  for (int64_t tile = first; tile < last; ++tile) {
    for (int64_t i = 0; i < kTile && tile * kTile + i < w.n; ++i) {
      for (int64_t r = 0; r < m; ++r) {
        float total = 0.f;
        for (int64_t g = 0; g < w.groups; ++g) {
          const uint8_t* block = w.at(tile, g);
          int32_t dot = 0;
          for (int64_t e = 0; e < kGroup; ++e) {
            int32_t u;
            if (w.bits == 8) {
              u = block[(e / 4) * 64 + i * 4 + e % 4];
            } else {  // value e: vector e / 8, high nibble when e % 8 >= 4
              const uint8_t byte = block[(e / 8) * 64 + i * 4 + e % 4];
              u = e % 8 >= 4 ? byte >> 4 : byte & 0x0F;
            }
            const int64_t at = r * a.kp + g * kGroup + e;
            dot += u * (256 * a.hi[at] + a.lo[at]);
          }
          const float scale = static_cast<float>(w.scale[w.lane(tile, g) + i]);
          const float min = static_cast<float>(w.min[w.lane(tile, g) + i]);
          total += scale * a.step[r * w.groups + g] * static_cast<float>(dot) + min * a.sum[r * w.groups + g];
        }
        y[r * w.n + tile * kTile + i] = total;
      }
    }
  }
}

#ifdef QUANT_X86
TARGET_AVX512 inline __m512i broadcast4(const int8_t* p) {  // 4 values of x in every lane
  int32_t four;
  std::memcpy(&four, p, sizeof(four));
  return _mm512_set1_epi32(four);
}

// 16 rows of W (one tile) by MT rows of x.
template <int64_t BITS, int MT>
TARGET_AVX512 void tile512(const Weights& w, const Activations& a, int64_t tile, int64_t r0, float* y) {
  constexpr int V = 8;  // vectors of u per group: 8 loaded, or 4 loaded and split in two
  const __m512i low = _mm512_set1_epi8(0x0F);
  __m512 acc[MT];
  for (int r = 0; r < MT; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < w.groups; ++g) {
    const uint8_t* block = w.at(tile, g);
    __m512i u[V];  // u[v]: values 4v..4v+3 of the group, one row per lane
    if constexpr (BITS == 8) {
      for (int v = 0; v < 8; ++v) u[v] = _mm512_loadu_si512(block + v * 64);
    } else {
      for (int s = 0; s < 4; ++s) {
        const __m512i raw = _mm512_loadu_si512(block + s * 64);
        u[2 * s] = _mm512_and_si512(raw, low);
        u[2 * s + 1] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low);
      }
    }
    const __m512 scale = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.scale + w.lane(tile, g))));
    const __m512 min = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.min + w.lane(tile, g))));
    for (int r = 0; r < MT; ++r) {
      const int8_t* hi = a.hi.data() + (r0 + r) * a.kp + g * kGroup;
      const int8_t* lo = a.lo.data() + (r0 + r) * a.kp + g * kGroup;
      __m512i high = _mm512_setzero_si512(), rest = _mm512_setzero_si512();
      for (int v = 0; v < V; ++v) {
        high = _mm512_dpbusd_epi32(high, u[v], broadcast4(hi + 4 * v));
        rest = _mm512_dpbusd_epi32(rest, u[v], broadcast4(lo + 4 * v));
      }
      // 256 * (u . hi) + u . lo: at most 32 * 255 * 127 * 257, within int32
      const __m512 dot = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(high, 8), rest));
      const int64_t at = (r0 + r) * w.groups + g;
      acc[r] = _mm512_fmadd_ps(dot, _mm512_mul_ps(scale, _mm512_set1_ps(a.step[at])), acc[r]);
      acc[r] = _mm512_fmadd_ps(min, _mm512_set1_ps(a.sum[at]), acc[r]);
    }
  }
  const int64_t rows = std::min(kTile, w.n - tile * kTile);
  const __mmask16 mask = rows == kTile ? 0xFFFF : static_cast<__mmask16>((1u << rows) - 1);
  for (int r = 0; r < MT; ++r) _mm512_mask_storeu_ps(y + (r0 + r) * w.n + tile * kTile, mask, acc[r]);
}

TARGET_AVX2 inline __m256i broadcast4_256(const int8_t* p) {
  int32_t four;
  std::memcpy(&four, p, sizeof(four));
  return _mm256_set1_epi32(four);
}

// 4 bits with AVX2, one row of x: both halves of the tile from each broadcast of x, and the
// products summed as int16 within the group (|u . x| <= 8 * 2 * 15 * 127 = 30,480 fits: vpmaddubsw
// never saturates here) before one vpmaddwd a half: ~7.6 operations per 32 products, where one
// vpmaddwd per vpmaddubsw took ~10.5 (30 layers of the default model, 1 row: 5.15 -> 3.89 ms).
TARGET_AVX2 void tile256_4bit(const Weights& w, const Activations& a, int64_t tile, int64_t r, float* y) {
  const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t g = 0; g < w.groups; ++g) {
    const uint8_t* block = w.at(tile, g);
    const int8_t* hi = a.hi.data() + r * a.kp + g * kGroup;
    const int8_t* lo = a.lo.data() + r * a.kp + g * kGroup;
    __m256i high[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()}, rest[2] = {high[0], high[1]};
    for (int s = 0; s < 4; ++s) {
      const __m256i raw[2] = {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + s * 64)),
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + s * 64 + 32))};
      for (int e = 0; e < 2; ++e) {  // value vector v = 2s + e: the low nibbles, then the high ones
        const int v = 2 * s + e;
        const __m256i xh = broadcast4_256(hi + 4 * v), xl = broadcast4_256(lo + 4 * v);
        for (int h = 0; h < 2; ++h) {
          const __m256i u = _mm256_and_si256(e ? _mm256_srli_epi16(raw[h], 4) : raw[h], low);
          high[h] = _mm256_add_epi16(high[h], _mm256_maddubs_epi16(u, xh));
          rest[h] = _mm256_add_epi16(rest[h], _mm256_maddubs_epi16(u, xl));
        }
      }
    }
    const int64_t at = r * w.groups + g;
    const __m256 step = _mm256_set1_ps(a.step[at]), sum = _mm256_set1_ps(a.sum[at]);
    for (int h = 0; h < 2; ++h) {
      const int64_t lane = w.lane(tile, g) + h * 8;
      const __m256 scale = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scale + lane)));
      const __m256 min = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.min + lane)));
      const __m256i dot = _mm256_add_epi32(_mm256_slli_epi32(_mm256_madd_epi16(high[h], ones), 8),
                                           _mm256_madd_epi16(rest[h], ones));
      acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(scale, step), acc[h]);
      acc[h] = _mm256_fmadd_ps(min, sum, acc[h]);
    }
  }
  const int64_t rows = std::min(kTile, w.n - tile * kTile);
  alignas(32) float out[kTile];
  _mm256_store_ps(out, acc[0]);
  _mm256_store_ps(out + 8, acc[1]);
  std::memcpy(y + r * w.n + tile * kTile, out, rows * sizeof(float));
}

// 4 bits with AVX2, several rows of x: each tile's group is unpacked once into 16 vectors of u
// (in L1), which every row then reads back with its own broadcasts of x.
TARGET_AVX2 void tile256_4bit_rows(const Weights& w, const Activations& a, int64_t tile, int64_t m, float* y) {
  const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  alignas(32) uint8_t unpacked[8][2][32];  // [v][half]: values 4v..4v+3 of the half's 8 rows
  alignas(32) float acc[kMaxRows][kTile];
  std::memset(acc, 0, sizeof(float) * kTile * m);
  for (int64_t g = 0; g < w.groups; ++g) {
    const uint8_t* block = w.at(tile, g);
    for (int s = 0; s < 4; ++s)
      for (int h = 0; h < 2; ++h) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + s * 64 + h * 32));
        _mm256_store_si256(reinterpret_cast<__m256i*>(unpacked[2 * s][h]), _mm256_and_si256(raw, low));
        _mm256_store_si256(reinterpret_cast<__m256i*>(unpacked[2 * s + 1][h]),
                           _mm256_and_si256(_mm256_srli_epi16(raw, 4), low));
      }
    __m256 scale[2], min[2];
    for (int h = 0; h < 2; ++h) {
      const int64_t lane = w.lane(tile, g) + h * 8;
      scale[h] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scale + lane)));
      min[h] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.min + lane)));
    }
    for (int64_t r = 0; r < m; ++r) {
      const int8_t* hi = a.hi.data() + r * a.kp + g * kGroup;
      const int8_t* lo = a.lo.data() + r * a.kp + g * kGroup;
      __m256i high[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()}, rest[2] = {high[0], high[1]};
      for (int v = 0; v < 8; ++v) {
        const __m256i xh = broadcast4_256(hi + 4 * v), xl = broadcast4_256(lo + 4 * v);
        for (int h = 0; h < 2; ++h) {
          const __m256i u = _mm256_load_si256(reinterpret_cast<const __m256i*>(unpacked[v][h]));
          high[h] = _mm256_add_epi16(high[h], _mm256_maddubs_epi16(u, xh));
          rest[h] = _mm256_add_epi16(rest[h], _mm256_maddubs_epi16(u, xl));
        }
      }
      const int64_t at = r * w.groups + g;
      const __m256 step = _mm256_set1_ps(a.step[at]), sum = _mm256_set1_ps(a.sum[at]);
      for (int h = 0; h < 2; ++h) {
        const __m256i dot = _mm256_add_epi32(_mm256_slli_epi32(_mm256_madd_epi16(high[h], ones), 8),
                                             _mm256_madd_epi16(rest[h], ones));
        __m256 total = _mm256_load_ps(acc[r] + 8 * h);
        total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(scale[h], step), total);
        _mm256_store_ps(acc[r] + 8 * h, _mm256_fmadd_ps(min[h], sum, total));
      }
    }
  }
  const int64_t rows = std::min(kTile, w.n - tile * kTile);
  for (int64_t r = 0; r < m; ++r) std::memcpy(y + r * w.n + tile * kTile, acc[r], rows * sizeof(float));
}

// 8 bits with AVX2, any number of rows of x: each tile's group is unpacked once into the signed
// q = u - 128 and |q| (the mins drop out), which every row reads back; one broadcast of x serves
// both halves. vpmaddubsw takes |q| times x with q's sign (|q| x 127 x 2 fits int16 once, so each
// product pair goes to int32 at once). The LM head's 28 M weights at 16 rows: 6.9 ms, where
// taking |q| anew for each row and each broadcast of x for one half took 7.5.
TARGET_AVX2 void tile256_8bit_rows(const Weights& w, const Activations& a, int64_t tile, int64_t m, float* y) {
  const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8(static_cast<char>(0x80));
  alignas(32) int8_t q[8][2][32], magnitude[8][2][32];  // [v][half]: values 4v..4v+3 of the half's 8 rows
  alignas(32) float acc[kMaxRows][kTile];
  std::memset(acc, 0, sizeof(float) * kTile * m);
  for (int64_t g = 0; g < w.groups; ++g) {
    const uint8_t* block = w.at(tile, g);
    for (int v = 0; v < 8; ++v)
      for (int h = 0; h < 2; ++h) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + v * 64 + h * 32));
        const __m256i signed_q = _mm256_xor_si256(raw, flip);
        _mm256_store_si256(reinterpret_cast<__m256i*>(q[v][h]), signed_q);
        _mm256_store_si256(reinterpret_cast<__m256i*>(magnitude[v][h]), _mm256_abs_epi8(signed_q));
      }
    __m256 scale[2];
    for (int h = 0; h < 2; ++h)
      scale[h] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scale + w.lane(tile, g) + h * 8)));
    for (int64_t r = 0; r < m; ++r) {
      const int8_t* hi = a.hi.data() + r * a.kp + g * kGroup;
      const int8_t* lo = a.lo.data() + r * a.kp + g * kGroup;
      __m256i high[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()}, rest[2] = {high[0], high[1]};
      for (int v = 0; v < 8; ++v) {
        const __m256i xh = broadcast4_256(hi + 4 * v), xl = broadcast4_256(lo + 4 * v);
        for (int h = 0; h < 2; ++h) {
          const __m256i sq = _mm256_load_si256(reinterpret_cast<const __m256i*>(q[v][h]));
          const __m256i mq = _mm256_load_si256(reinterpret_cast<const __m256i*>(magnitude[v][h]));
          high[h] = _mm256_add_epi32(high[h], _mm256_madd_epi16(_mm256_maddubs_epi16(mq, _mm256_sign_epi8(xh, sq)), ones));
          rest[h] = _mm256_add_epi32(rest[h], _mm256_madd_epi16(_mm256_maddubs_epi16(mq, _mm256_sign_epi8(xl, sq)), ones));
        }
      }
      const __m256 step = _mm256_set1_ps(a.step[r * w.groups + g]);
      for (int h = 0; h < 2; ++h) {
        const __m256i dot = _mm256_add_epi32(_mm256_slli_epi32(high[h], 8), rest[h]);
        const __m256 total = _mm256_load_ps(acc[r] + 8 * h);
        _mm256_store_ps(acc[r] + 8 * h, _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(scale[h], step), total));
      }
    }
  }
  const int64_t rows = std::min(kTile, w.n - tile * kTile);
  for (int64_t r = 0; r < m; ++r) std::memcpy(y + r * w.n + tile * kTile, acc[r], rows * sizeof(float));
}

// Tiles first..last of W against every row of x: with AVX-512, 4 rows of x at a time (the
// weights of a group stay in registers for all 4); with AVX2, as the functions above say.
template <int64_t BITS, bool WIDE>
void tiles(const Weights& w, const Activations& a, int64_t m, float* y, int64_t first, int64_t last) {
  auto run = [&](auto mt, int64_t tile, int64_t r) { tile512<BITS, decltype(mt)::value>(w, a, tile, r, y); };
  for (int64_t tile = first; tile < last; ++tile) {
    if constexpr (!WIDE) {  // AVX2
      if constexpr (BITS == 4)
        m == 1 ? tile256_4bit(w, a, tile, 0, y) : tile256_4bit_rows(w, a, tile, m, y);
      else
        tile256_8bit_rows(w, a, tile, m, y);
      continue;
    }
    int64_t r = 0;
    for (; r + 4 <= m; r += 4) run(std::integral_constant<int, 4>{}, tile, r);
    switch (m - r) {
      case 3: run(std::integral_constant<int, 3>{}, tile, r); break;
      case 2: run(std::integral_constant<int, 2>{}, tile, r); break;
      case 1: run(std::integral_constant<int, 1>{}, tile, r); break;
    }
  }
}

#endif  // QUANT_X86

}  // namespace

// x (M, K) float32; u (N16 / 16, G, 16 * 32 * bits / 8) uint8; scale, min (N16 / 16, G, 16) float16
// (quant.py's layout, N16 = N rounded up to 16, G = K / 32 rounded up); n = N; bits 8 or 4; isa 0
// plain loops, 1 AVX2, 2 AVX-512 VNNI (the caller checks the CPU has it). -> (M, N) float32.
torch::Tensor quant_linear(torch::Tensor x, torch::Tensor u, torch::Tensor scale, torch::Tensor min, int64_t n,
                           int64_t bits, int64_t isa) {
  TORCH_CHECK(x.dim() == 2 && x.dtype() == torch::kFloat32, "x: (rows, K) float32");
  TORCH_CHECK(bits == 8 || bits == 4, "bits must be 8 or 4, got ", bits);
  TORCH_CHECK(isa >= kPortable && isa <= kAvx512Vnni, "isa must be 0, 1 or 2, got ", isa);
#ifndef QUANT_X86
  TORCH_CHECK(isa == kPortable, "isa ", isa, " needs an x86 CPU");
#endif
  TORCH_CHECK(u.dim() == 3 && u.dtype() == torch::kUInt8 && u.is_contiguous() && u.size(2) == kTile * kGroup * bits / 8,
              "u: contiguous (N / 16, K / 32, ", kTile * kGroup * bits / 8, ") uint8");
  TORCH_CHECK(scale.dtype() == torch::kFloat16 && min.dtype() == torch::kFloat16 && scale.is_contiguous() &&
                  min.is_contiguous(), "scale and min: contiguous float16");
  const int64_t tiles_n = u.size(0), groups = u.size(1), k = x.size(1), m = x.size(0);
  TORCH_CHECK(n > (tiles_n - 1) * kTile && n <= tiles_n * kTile, "n = ", n, " does not fit ", tiles_n, " tiles of 16");
  TORCH_CHECK(k <= groups * kGroup && k > (groups - 1) * kGroup, "x has ", k, " columns, W ", groups * kGroup,
              " (padded to 32)");
  TORCH_CHECK(scale.sizes() == torch::IntArrayRef({tiles_n, groups, kTile}) && min.sizes() == scale.sizes(),
              "scale and min must be (N / 16, K / 32, 16)");
  TORCH_CHECK(m <= kMaxRows, "at most ", kMaxRows, " rows, got ", m);
  x = x.contiguous();
  auto y = torch::empty({m, n}, x.options());
  const Activations a = quantize_activations(x.data_ptr<float>(), m, k, groups);
  const Weights w{u.data_ptr<uint8_t>(), scale.data_ptr<at::Half>(), min.data_ptr<at::Half>(), n, groups, bits};
  float* out = y.data_ptr<float>();
  // ~16 KB of W per task: enough work to be worth a thread, small enough to split N evenly
  const int64_t grain = std::max<int64_t>(1, 16384 / (w.block() * groups));
  at::parallel_for(0, tiles_n, grain, [&](int64_t first, int64_t last) {
    if (isa == kPortable) return portable(w, a, m, out, first, last);
#ifdef QUANT_X86
    if (isa == kAvx2)
      return bits == 8 ? tiles<8, false>(w, a, m, out, first, last) : tiles<4, false>(w, a, m, out, first, last);
    bits == 8 ? tiles<8, true>(w, a, m, out, first, last) : tiles<4, true>(w, a, m, out, first, last);
#endif
  });
  return y;
}
