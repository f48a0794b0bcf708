// Weight-only quantized products for decode steps (built with kernels.cpp, loaded by kernels.py).
//
// quant_linear: y = x @ W.T for a few float32 rows x and W quantized in groups of 32 weights
// along K, each group w = scale * u + min with u unsigned: 8-bit (u = q + 128, min = -128 scale,
// GGUF's Q8_0 shifted) or 4-bit (u in 0..15, GGUF's Q4_1 nibble order: byte i of a group holds
// weights i and i + 16). Scales and mins are float16, K is padded to a multiple of 64 (quant.py).
//
// A decode step reads every weight once, so it is bound by how many bytes W has: 4.5-5 bits a
// weight instead of bfloat16's 16. x is quantized per group to ~16 bits as two int8 parts,
// x ~ step * (256 * hi + lo) with step = max|x| / 127 / 256 (int8 alone, as llama.cpp's Q8
// activations, moved 10% of the default model's next tokens on near ties; two parts, under 2%).
// A group's product is then integer dot products,
//   sum_i w_i x_i = scale * step * sum_i u_i xq_i + min * step * sum_i xq_i,   xq = 256 hi + lo,
// done 64 bytes at a time with AVX-512 VNNI (vpdpbusd: u8 x s8 -> s32), 32 with AVX2 (vpmaddubsw),
// or plain loops. Each path is compiled with its own target attribute; the caller picks one.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <immintrin.h>

#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))
#define TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace {

constexpr int64_t kGroup = 32;
constexpr int64_t kChunk = 64;  // two groups: one 512-bit register of unpacked weights
constexpr int64_t kMaxRows = 64;

enum Isa : int64_t { kPortable = 0, kAvx2 = 1, kAvx512Vnni = 2 };

struct Weights {
  const uint8_t* u;       // (N, Kp) bytes for 8 bits, (N, Kp / 2) for 4
  const at::Half* scale;  // (N, Kp / 32)
  const at::Half* min;    // (N, Kp / 32)
  int64_t n, kp, bits;
  int64_t groups() const { return kp / kGroup; }
  int64_t row_bytes() const { return bits == 8 ? kp : kp / 2; }
};

// x quantized per group. ``q`` is in the order the path unpacks weights in: natural, or for 4 bits
// on AVX-512 each 64 values as [0..15, 32..47, 16..31, 48..63] (low nibbles of two groups, then
// high). ``lanes`` (AVX-512 only): per 64 values, dx of the group each 32-bit lane of q sums.
struct Activations {
  std::vector<int8_t> hi, lo;  // (M, Kp) each
  std::vector<float> step;     // (M, Kp / 32): the group's step (max|x| / 127 / 256)
  std::vector<float> sum;      // (M, Kp / 32): step * sum of the group's 256 hi + lo
  std::vector<float> lanes;    // (M, Kp / 64, 16): the step of the group each lane sums
};

inline int64_t interleaved(int64_t e) {  // position of value e (0..63) of a chunk in 4-bit order
  const int64_t g = e / kGroup, i = e % kGroup;
  return (i < 16 ? 0 : 32) + g * 16 + i % 16;
}

Activations quantize_activations(const float* x, int64_t m, int64_t k, int64_t kp, bool nibble_order, bool lanes) {
  const int64_t groups = kp / kGroup;
  Activations a{std::vector<int8_t>(m * kp, 0), std::vector<int8_t>(m * kp, 0), std::vector<float>(m * groups, 0.f),
                std::vector<float>(m * groups, 0.f), std::vector<float>(lanes ? m * kp / 4 : 0, 0.f)};
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t begin = g * kGroup, end = std::min(begin + kGroup, k);
      float amax = 0.f;
      for (int64_t e = begin; e < end; ++e) amax = std::max(amax, std::fabs(x[r * k + e]));
      const float step = amax / 127.f / 256.f, inv = amax > 0.f ? 127.f / amax : 0.f;
      int32_t total = 0;
      for (int64_t e = begin; e < end; ++e) {
        const float t = x[r * k + e] * inv;  // in -127..127
        const float hi = std::nearbyint(t);  // half to even, as cvtps
        const float lo = std::min(127.f, std::max(-127.f, std::nearbyint((t - hi) * 256.f)));
        const int64_t at = r * kp + (nibble_order ? e - e % kChunk + interleaved(e % kChunk) : e);
        a.hi[at] = static_cast<int8_t>(hi);
        a.lo[at] = static_cast<int8_t>(lo);
        total += 256 * static_cast<int32_t>(hi) + static_cast<int32_t>(lo);
      }
      a.step[r * groups + g] = step;
      a.sum[r * groups + g] = step * static_cast<float>(total);
    }
    if (lanes) {
      for (int64_t c = 0; c < kp / kChunk; ++c) {
        for (int64_t lane = 0; lane < 16; ++lane) {  // 4 bits: lanes 0-3, 8-11 first group; 8 bits: 0-7
          const int64_t g = 2 * c + (nibble_order ? (lane / 4) % 2 : lane / 8);
          a.lanes[(r * (kp / kChunk) + c) * 16 + lane] = a.step[r * groups + g];
        }
      }
    }
  }
  return a;
}

// Plain loops: any CPU, and the reference the vector paths are tested against.
void portable(const Weights& w, const Activations& a, int64_t m, float* y, int64_t begin, int64_t end) {
  const int64_t groups = w.groups();
  for (int64_t j = begin; j < end; ++j) {
    const uint8_t* row = w.u + j * w.row_bytes();
    for (int64_t r = 0; r < m; ++r) {
      const int8_t *hi = a.hi.data() + r * w.kp, *lo = a.lo.data() + r * w.kp;
      float total = 0.f;
      for (int64_t g = 0; g < groups; ++g) {
        int32_t dot = 0;
        for (int64_t i = 0; i < kGroup; ++i) {
          const int64_t e = g * kGroup + i;
          const int32_t u = w.bits == 8 ? row[e] : (row[g * 16 + i % 16] >> (i < 16 ? 0 : 4)) & 0x0F;
          dot += u * (256 * hi[e] + lo[e]);
        }
        const float scale = static_cast<float>(w.scale[j * groups + g]), min = static_cast<float>(w.min[j * groups + g]);
        total += scale * a.step[r * groups + g] * static_cast<float>(dot) + min * a.sum[r * groups + g];
      }
      y[r * w.n + j] = total;
    }
  }
}

// sum over groups of min * dx * sum(xq): the mins' share of one output, 16 groups at a time.
TARGET_AVX512 inline __m512 min_terms512(const at::Half* min, const float* sum, int64_t groups) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; g += 16) {
    const __mmask16 mask = groups - g >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (groups - g)) - 1);
    const __m512 mins = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, min + g));
    acc = _mm512_fmadd_ps(mins, _mm512_maskz_loadu_ps(mask, sum + g), acc);
  }
  return acc;
}

// RT rows of W by MT rows of x: RT * MT sums in registers while RT rows of W stream in.
template <int64_t BITS, int MT, int RT>
TARGET_AVX512 void tile512(const Weights& w, const Activations& a, int64_t j0, int64_t r0, float* y) {
  const int64_t chunks = w.kp / kChunk, groups = w.groups();
  const __m512i pattern = BITS == 4 ? _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0)
                                    : _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m256i low = _mm256_set1_epi8(0x0F);
  __m512 acc[RT][MT];
  for (int j = 0; j < RT; ++j)
    for (int r = 0; r < MT; ++r) acc[j][r] = _mm512_setzero_ps();
  for (int64_t c = 0; c < chunks; ++c) {
    __m512i u[RT];
    __m512 scale[RT];
    for (int j = 0; j < RT; ++j) {
      const uint8_t* p = w.u + (j0 + j) * w.row_bytes() + c * (BITS == 8 ? 64 : 32);
      if constexpr (BITS == 8) {
        u[j] = _mm512_loadu_si512(p);
      } else {  // 32 bytes: low nibbles of both groups, then high nibbles
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        const __m256i lo = _mm256_and_si256(raw, low), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
        u[j] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      }
      int32_t pair;  // the two groups' float16 scales
      std::memcpy(&pair, w.scale + (j0 + j) * groups + 2 * c, sizeof(pair));
      scale[j] = _mm512_permutexvar_ps(pattern, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(pair))));
    }
    for (int r = 0; r < MT; ++r) {
      const int64_t at = (r0 + r) * w.kp + c * kChunk;
      const __m512i hi = _mm512_loadu_si512(a.hi.data() + at), lo = _mm512_loadu_si512(a.lo.data() + at);
      const __m512 step = _mm512_loadu_ps(a.lanes.data() + ((r0 + r) * chunks + c) * 16);
      for (int j = 0; j < RT; ++j) {  // 256 * (u . hi) + u . lo: at most 4 * 255 * 127 * 257, no overflow
        const __m512i high = _mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u[j], hi), 8);
        const __m512 dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(high, u[j], lo));
        acc[j][r] = _mm512_fmadd_ps(dot, _mm512_mul_ps(scale[j], step), acc[j][r]);
      }
    }
  }
  for (int j = 0; j < RT; ++j)
    for (int r = 0; r < MT; ++r) {
      const __m512 mins = min_terms512(w.min + (j0 + j) * groups, a.sum.data() + (r0 + r) * groups, groups);
      y[(r0 + r) * w.n + j0 + j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[j][r], mins));
    }
}

TARGET_AVX2 inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 8 sums of 4 products of a group's weights (u, or q for 8 bits) and 32 int8 values x.
template <int64_t BITS>
TARGET_AVX2 inline __m256i dot256(__m256i u, __m256i x, __m256i ones) {
  const __m256i pairs = BITS == 8 ? _mm256_maddubs_epi16(_mm256_sign_epi8(u, u), _mm256_sign_epi8(x, u))
                                  : _mm256_maddubs_epi16(u, x);
  return _mm256_madd_epi16(pairs, ones);
}

// One group (32 weights) at a time. vpmaddubsw multiplies u8 by s8 into saturating int16 pairs:
// safe for 4-bit u (15 * 127 * 2 < 32767) but not for 8-bit u, so 8 bits multiply the signed
// weight q = u - 128 (its magnitude, x carrying its sign, as llama.cpp does) and drop the mins.
template <int64_t BITS, int MT, int RT>
TARGET_AVX2 void tile256(const Weights& w, const Activations& a, int64_t j0, int64_t r0, float* y) {
  const int64_t groups = w.groups();
  const __m128i low = _mm_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8(static_cast<char>(0x80));
  __m256 acc[RT][MT];
  for (int j = 0; j < RT; ++j)
    for (int r = 0; r < MT; ++r) acc[j][r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m256i u[RT];
    float scale[RT];
    for (int j = 0; j < RT; ++j) {
      const uint8_t* p = w.u + (j0 + j) * w.row_bytes() + g * (BITS == 8 ? 32 : 16);
      if constexpr (BITS == 8) {
        u[j] = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), flip);  // q, signed
      } else {
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        u[j] = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), low), _mm_and_si128(raw, low));
      }
      scale[j] = static_cast<float>(w.scale[(j0 + j) * groups + g]);
    }
    for (int r = 0; r < MT; ++r) {
      const int64_t at = (r0 + r) * w.kp + g * kGroup;
      const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.hi.data() + at));
      const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.lo.data() + at));
      const float step = a.step[(r0 + r) * groups + g];
      for (int j = 0; j < RT; ++j) {
        const __m256i high = _mm256_slli_epi32(dot256<BITS>(u[j], hi, ones), 8);
        const __m256 dot = _mm256_cvtepi32_ps(_mm256_add_epi32(high, dot256<BITS>(u[j], lo, ones)));
        acc[j][r] = _mm256_fmadd_ps(dot, _mm256_set1_ps(scale[j] * step), acc[j][r]);
      }
    }
  }
  for (int j = 0; j < RT; ++j)
    for (int r = 0; r < MT; ++r) {
      float mins = 0.f;
      if constexpr (BITS == 4)
        for (int64_t g = 0; g < groups; ++g)
          mins += static_cast<float>(w.min[(j0 + j) * groups + g]) * a.sum[(r0 + r) * groups + g];
      y[(r0 + r) * w.n + j0 + j] = hsum256(acc[j][r]) + mins;
    }
}

// Rows begin..end of W against every row of x, in tiles of 4 x 4 (1 x MT for the last rows of W).
template <int64_t BITS, bool WIDE>
void tiles(const Weights& w, const Activations& a, int64_t m, float* y, int64_t begin, int64_t end) {
  constexpr int RT = 4;
  auto run = [&](auto mt, auto rt, int64_t j, int64_t r) {
    if constexpr (WIDE)
      tile512<BITS, decltype(mt)::value, decltype(rt)::value>(w, a, j, r, y);
    else
      tile256<BITS, decltype(mt)::value, decltype(rt)::value>(w, a, j, r, y);
  };
  using One = std::integral_constant<int, 1>;
  using Four = std::integral_constant<int, RT>;
  for (int64_t j = begin; j < end;) {
    const bool full = end - j >= RT;
    for (int64_t r = 0; r < m;) {
      const int64_t left = m - r;
      if (left >= 4) {
        full ? run(std::integral_constant<int, 4>{}, Four{}, j, r) : run(std::integral_constant<int, 4>{}, One{}, j, r);
        r += 4;
      } else if (left == 3) {
        full ? run(std::integral_constant<int, 3>{}, Four{}, j, r) : run(std::integral_constant<int, 3>{}, One{}, j, r);
        r += 3;
      } else if (left == 2) {
        full ? run(std::integral_constant<int, 2>{}, Four{}, j, r) : run(std::integral_constant<int, 2>{}, One{}, j, r);
        r += 2;
      } else {
        full ? run(One{}, Four{}, j, r) : run(One{}, One{}, j, r);
        r += 1;
      }
    }
    j += full ? RT : 1;
  }
}

}  // namespace

// x (M, K) float32; u (N, Kp) or (N, Kp / 2) uint8; scale, min (N, Kp / 32) float16; bits 8 or 4;
// isa 0 plain loops, 1 AVX2, 2 AVX-512 VNNI (the caller checks the CPU has it). -> (M, N) float32.
torch::Tensor quant_linear(torch::Tensor x, torch::Tensor u, torch::Tensor scale, torch::Tensor min, int64_t bits,
                           int64_t isa) {
  TORCH_CHECK(x.dim() == 2 && x.dtype() == torch::kFloat32, "x: (rows, K) float32");
  TORCH_CHECK(bits == 8 || bits == 4, "bits must be 8 or 4, got ", bits);
  TORCH_CHECK(isa >= kPortable && isa <= kAvx512Vnni, "isa must be 0, 1 or 2, got ", isa);
  TORCH_CHECK(u.dim() == 2 && u.dtype() == torch::kUInt8 && u.is_contiguous(), "u: contiguous (N, bytes) uint8");
  TORCH_CHECK(scale.dtype() == torch::kFloat16 && min.dtype() == torch::kFloat16 && scale.is_contiguous() &&
                  min.is_contiguous(), "scale and min: contiguous float16");
  const int64_t n = u.size(0), kp = bits == 8 ? u.size(1) : u.size(1) * 2, k = x.size(1), m = x.size(0);
  TORCH_CHECK(kp % kChunk == 0 && k <= kp && kp - k < kChunk, "x has ", k, " columns, W ", kp, " (padded to 64)");
  TORCH_CHECK(scale.sizes() == torch::IntArrayRef({n, kp / kGroup}) && min.sizes() == scale.sizes(),
              "scale and min must be (N, Kp / 32)");
  TORCH_CHECK(m <= kMaxRows, "at most ", kMaxRows, " rows, got ", m);
  x = x.contiguous();
  auto y = torch::empty({m, n}, x.options());
  const bool nibble_order = isa == kAvx512Vnni && bits == 4;
  const Activations a = quantize_activations(x.data_ptr<float>(), m, k, kp, nibble_order, isa == kAvx512Vnni);
  const Weights w{u.data_ptr<uint8_t>(), scale.data_ptr<at::Half>(), min.data_ptr<at::Half>(), n, kp, bits};
  float* out = y.data_ptr<float>();
  // ~16 KB of W per task: enough work to be worth a thread, small enough to split N evenly
  const int64_t grain = std::max<int64_t>(4, 16384 / w.row_bytes() / 4 * 4);
  at::parallel_for(0, (n + 3) / 4, grain / 4, [&](int64_t begin, int64_t end) {
    const int64_t first = begin * 4, last = std::min(end * 4, n);
    if (isa == kPortable) return portable(w, a, m, out, first, last);
    if (isa == kAvx2) return bits == 8 ? tiles<8, false>(w, a, m, out, first, last) : tiles<4, false>(w, a, m, out, first, last);
    bits == 8 ? tiles<8, true>(w, a, m, out, first, last) : tiles<4, true>(w, a, m, out, first, last);
  });
  return y;
}
