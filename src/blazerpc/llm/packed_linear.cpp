// packed_linear: y = x @ W.T for float32 rows x and bfloat16 W packed once at load (linear.py).
// Two paths over one layout, picked by the caller (linear.py, from cpu.isa()):
// - AVX-512 BF16: vdpbf16ps adds two bfloat16 products into each float32 lane (x rounded to
//   bfloat16, as oneDNN's bfloat16 products round it);
// - AVX2 + FMA: each 32-bit lane's pair widens to two float32 weights (a shift, a mask), which
//   multiply float32 x: bfloat16 storage, float32 arithmetic, no bf16 instructions needed.
//
// Layout: W's rows in blocks of 64 (N padded with zero rows, K with a zero column to even), a
// block as (K / 2, 64, 2): for each pair of columns, the 64 rows' two values, i.e. 4 vectors
// whose 32-bit lane i holds row i's pair. One vdpbf16ps with x's pair broadcast adds 2 products
// to 16 rows: no shuffles, no horizontal sums. Threads take blocks one by one, so each core
// streams its own blocks of W; for every 6 rows of x it runs over the whole block (from L2).
//
// Why not oneDNN (what vLLM's CPU backend uses): on 2-core Zen VMs its products of 8..64 rows
// cost about the time to read W plus the time to compute, as if memory and arithmetic never
// overlapped. Here each block's arithmetic prefetches the thread's next block, spread over it:
// the 32-row step of the default model (30 layers, ~270 MB of W) 19-21 ms -> 12-13 ms, and
// 160 rows 71-85 -> 54-55 ms (measured in benchmarks/decode_step.py's conditions, W from DRAM).

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PACKED_X86 1
#define TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

namespace {

enum Isa : int64_t { kAvx512Bf16 = 0, kAvx2 = 1 };

constexpr int64_t kBlock = 64;  // rows of W per block: 4 vectors of 16 lanes
constexpr int kRowsAtOnce = 6;  // rows of x per pass: 6 x 4 accumulators, 4 of W, 1 of x: 29 of 32 registers

// Prefetches of the next block's cache lines, a few per pair of columns, so they spread over a
// whole block's arithmetic instead of queueing up at its start.
struct Prefetch {
  const char* at;
  const char* end;
  int64_t lines_per_step;

  inline __attribute__((always_inline)) void step() {
    if (at >= end) return;
    for (int64_t i = 0; i < lines_per_step; ++i) __builtin_prefetch(at + 64 * i, 0, 3);
    at += 64 * lines_per_step;
  }
};

#ifdef PACKED_X86
// Rows r..r+MT of x (bfloat16 pairs, k2 per row) times one block of W -> y's columns of the block.
template <int MT>
TARGET_BF16 void block_rows(const int32_t* x, int64_t k2, const int32_t* w, float* y, int64_t n, int64_t cols,
                            Prefetch& prefetch) {
  __m512 acc[MT][4];
  for (int r = 0; r < MT; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int64_t p = 0; p < k2; ++p) {
    const int32_t* pair = w + p * kBlock;
    __m512bh wv[4];
    for (int j = 0; j < 4; ++j) wv[j] = (__m512bh)_mm512_loadu_si512(pair + 16 * j);
    for (int r = 0; r < MT; ++r) {
      const __m512bh xv = (__m512bh)_mm512_set1_epi32(x[r * k2 + p]);
      for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], wv[j], xv);
    }
    prefetch.step();
  }
  for (int j = 0; j < 4 && 16 * j < cols; ++j) {
    const int64_t left = cols - 16 * j;
    const __mmask16 mask = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
    for (int r = 0; r < MT; ++r) _mm512_mask_storeu_ps(y + r * n + 16 * j, mask, acc[r][j]);
  }
}

TARGET_BF16 void block(const int32_t* x, int64_t m, int64_t k2, const int32_t* w, float* y, int64_t n, int64_t cols,
                       Prefetch& prefetch) {
  int64_t r = 0;
  for (; r + kRowsAtOnce <= m; r += kRowsAtOnce) block_rows<kRowsAtOnce>(x + r * k2, k2, w, y + r * n, n, cols, prefetch);
  switch (m - r) {
    case 5: block_rows<5>(x + r * k2, k2, w, y + r * n, n, cols, prefetch); break;
    case 4: block_rows<4>(x + r * k2, k2, w, y + r * n, n, cols, prefetch); break;
    case 3: block_rows<3>(x + r * k2, k2, w, y + r * n, n, cols, prefetch); break;
    case 2: block_rows<2>(x + r * k2, k2, w, y + r * n, n, cols, prefetch); break;
    case 1: block_rows<1>(x + r * k2, k2, w, y + r * n, n, cols, prefetch); break;
  }
}

// AVX2: rows r..r+MT of x (float32, 2 k2 per row) times 16 rows (one quarter) of a block.
// Each 256-bit load is 8 rows' pairs: shifted left 16 bits, the even column's weights; masked,
// the odd column's. 2 MT accumulators, 4 weight vectors and 2 of x: 16 registers at MT = 5.
constexpr int kRowsAtOnce256 = 5;

template <int MT>
TARGET_AVX2 void quarter_rows(const float* x, int64_t k2, const int32_t* w, float* y, int64_t n, int64_t cols,
                              Prefetch& prefetch) {
  const __m256i high = _mm256_set1_epi32(static_cast<int32_t>(0xFFFF0000u));
  __m256 acc[MT][2];
  for (int r = 0; r < MT; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t p = 0; p < k2; ++p) {
    const int32_t* pair = w + p * kBlock;
    __m256 even[2], odd[2];
    for (int h = 0; h < 2; ++h) {
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pair + 8 * h));
      even[h] = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
      odd[h] = _mm256_castsi256_ps(_mm256_and_si256(raw, high));
    }
    for (int r = 0; r < MT; ++r) {
      const __m256 x0 = _mm256_broadcast_ss(x + r * 2 * k2 + 2 * p), x1 = _mm256_broadcast_ss(x + r * 2 * k2 + 2 * p + 1);
      for (int h = 0; h < 2; ++h) acc[r][h] = _mm256_fmadd_ps(odd[h], x1, _mm256_fmadd_ps(even[h], x0, acc[r][h]));
    }
    prefetch.step();
  }
  for (int h = 0; h < 2 && 8 * h < cols; ++h) {
    if (cols - 8 * h >= 8) {
      for (int r = 0; r < MT; ++r) _mm256_storeu_ps(y + r * n + 8 * h, acc[r][h]);
      continue;
    }
    for (int r = 0; r < MT; ++r) {
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, acc[r][h]);
      std::copy(lanes, lanes + (cols - 8 * h), y + r * n + 8 * h);
    }
  }
}

TARGET_AVX2 void block256(const float* x, int64_t m, int64_t k2, const int32_t* w, float* y, int64_t n, int64_t cols,
                          Prefetch& prefetch) {
  for (int64_t q = 0; q < 4 && 16 * q < cols; ++q) {  // quarters of 16 rows: 16 lanes of each pair's 64
    const int32_t* wq = w + 16 * q;
    float* yq = y + 16 * q;
    const int64_t left = std::min<int64_t>(16, cols - 16 * q);
    int64_t r = 0;
    for (; r + kRowsAtOnce256 <= m; r += kRowsAtOnce256)
      quarter_rows<kRowsAtOnce256>(x + r * 2 * k2, k2, wq, yq + r * n, n, left, prefetch);
    switch (m - r) {
      case 4: quarter_rows<4>(x + r * 2 * k2, k2, wq, yq + r * n, n, left, prefetch); break;
      case 3: quarter_rows<3>(x + r * 2 * k2, k2, wq, yq + r * n, n, left, prefetch); break;
      case 2: quarter_rows<2>(x + r * 2 * k2, k2, wq, yq + r * n, n, left, prefetch); break;
      case 1: quarter_rows<1>(x + r * 2 * k2, k2, wq, yq + r * n, n, left, prefetch); break;
    }
  }
}
#endif  // PACKED_X86

}  // namespace

// x (M, K) float32; packed (N64 / 64, K2, 64) int32, linear.py's layout (K2 = K / 2 rounded up);
// n = N; isa 0 AVX-512 BF16 (x rounded to bfloat16), 1 AVX2 (x as it is; the caller checks the CPU
// has it). -> (M, N) float32.
torch::Tensor packed_linear(torch::Tensor x, torch::Tensor packed, int64_t n, int64_t isa) {
  TORCH_CHECK(x.dim() == 2 && x.dtype() == torch::kFloat32, "x: (rows, K) float32");
  TORCH_CHECK(packed.dim() == 3 && packed.dtype() == torch::kInt32 && packed.is_contiguous() &&
                  packed.size(2) == kBlock, "packed: contiguous (N / 64, K / 2, 64) int32");
  TORCH_CHECK(isa == kAvx512Bf16 || isa == kAvx2, "isa must be 0 (AVX-512 BF16) or 1 (AVX2), got ", isa);
  const int64_t m = x.size(0), k2 = packed.size(1), blocks = packed.size(0);
  TORCH_CHECK(n > (blocks - 1) * kBlock && n <= blocks * kBlock, "n = ", n, " does not fit ", blocks, " blocks of 64");
  TORCH_CHECK(x.size(1) == 2 * k2 || x.size(1) == 2 * k2 - 1, "x has ", x.size(1), " columns, W ", 2 * k2,
              " (padded to even)");
#ifndef PACKED_X86
  TORCH_CHECK(false, "packed_linear needs an x86 CPU with AVX2 or AVX-512 BF16");
#else
  auto rows = isa == kAvx2 ? x.contiguous() : x.to(torch::kBFloat16).contiguous();
  if (rows.size(1) != 2 * k2) rows = torch::constant_pad_nd(rows, {0, 1});
  auto y = torch::empty({m, n}, x.options());
  if (m == 0) return y;
  const int32_t* wp = packed.data_ptr<int32_t>();
  float* yp = y.data_ptr<float>();
  const int64_t block_ints = k2 * kBlock, lines = block_ints * 4 / 64;
  // steps of one block (passes of x pairs), over which the next block's prefetches spread
  const int64_t steps = isa == kAvx2 ? 4 * ((m + kRowsAtOnce256 - 1) / kRowsAtOnce256) * k2
                                     : (m + kRowsAtOnce - 1) / kRowsAtOnce * k2;
  const int64_t lines_per_step = (lines + steps - 1) / steps;
  // Threads claim blocks one at a time, each claiming its next before it starts the current one
  // (to prefetch it): a core the OS lends to another process for a while holds back only the
  // block it has, not a fixed share of W.
  std::atomic<int64_t> unclaimed{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    for (int64_t b = unclaimed++, next; b < blocks; b = next) {
      next = unclaimed++;
      const int32_t* w = wp + b * block_ints;
      const char* ahead = next < blocks ? reinterpret_cast<const char*>(wp + next * block_ints) : nullptr;
      Prefetch prefetch{ahead, ahead != nullptr ? ahead + block_ints * 4 : nullptr, lines_per_step};
      const int64_t cols = std::min(kBlock, n - b * kBlock);
      if (isa == kAvx2) {
        block256(rows.data_ptr<float>(), m, k2, w, yp + b * kBlock, n, cols, prefetch);
      } else {
        const int32_t* xp = reinterpret_cast<const int32_t*>(rows.data_ptr<at::BFloat16>());
        block(xp, m, k2, w, yp + b * kBlock, n, cols, prefetch);
      }
    }
  });
  return y;
#endif
}
