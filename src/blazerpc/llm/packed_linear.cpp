// packed_linear: y = x @ W.T for float32 rows x and bfloat16 W packed once at load (linear.py),
// with AVX-512 BF16's vdpbf16ps (two bfloat16 products added into each float32 lane). Built with
// kernels.cpp; only called where the CPU has AVX512-BF16 (linear.py detects it).
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

#include <immintrin.h>

#define TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

namespace {

constexpr int64_t kBlock = 64;  // rows of W per block: 4 vectors of 16 lanes
constexpr int kRowsAtOnce = 6;  // rows of x per pass: 6 x 4 accumulators, 4 of W, 1 of x: 29 of 32 registers

// Prefetches of the next block's cache lines, a few per pair of columns, so they spread over a
// whole block's arithmetic instead of queueing up at its start.
struct Prefetch {
  const char* at;
  const char* end;
  int64_t lines_per_step;

  TARGET_BF16 void step() {
    if (at >= end) return;
    for (int64_t i = 0; i < lines_per_step; ++i) _mm_prefetch(at + 64 * i, _MM_HINT_T0);
    at += 64 * lines_per_step;
  }
};

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

}  // namespace

// x (M, K) float32 (rounded to bfloat16 here, as oneDNN's bfloat16 products round it);
// packed (N64 / 64, K2, 64) int32, linear.py's layout (K2 = K / 2 rounded up); n = N. -> (M, N) float32.
torch::Tensor packed_linear(torch::Tensor x, torch::Tensor packed, int64_t n) {
  TORCH_CHECK(x.dim() == 2 && x.dtype() == torch::kFloat32, "x: (rows, K) float32");
  TORCH_CHECK(packed.dim() == 3 && packed.dtype() == torch::kInt32 && packed.is_contiguous() &&
                  packed.size(2) == kBlock, "packed: contiguous (N / 64, K / 2, 64) int32");
  const int64_t m = x.size(0), k2 = packed.size(1), blocks = packed.size(0);
  TORCH_CHECK(n > (blocks - 1) * kBlock && n <= blocks * kBlock, "n = ", n, " does not fit ", blocks, " blocks of 64");
  TORCH_CHECK(x.size(1) == 2 * k2 || x.size(1) == 2 * k2 - 1, "x has ", x.size(1), " columns, W ", 2 * k2,
              " (padded to even)");
  auto pairs = x.to(torch::kBFloat16).contiguous();
  if (pairs.size(1) != 2 * k2) pairs = torch::constant_pad_nd(pairs, {0, 1});
  auto y = torch::empty({m, n}, x.options());
  if (m == 0) return y;
  const int32_t* xp = reinterpret_cast<const int32_t*>(pairs.data_ptr<at::BFloat16>());
  const int32_t* wp = packed.data_ptr<int32_t>();
  float* yp = y.data_ptr<float>();
  const int64_t block_ints = k2 * kBlock, lines = block_ints * 4 / 64;
  const int64_t steps = (m + kRowsAtOnce - 1) / kRowsAtOnce * k2;  // of one block: passes x pairs
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
      block(xp, m, k2, w, yp + b * kBlock, n, std::min(kBlock, n - b * kBlock), prefetch);
    }
  });
  return y;
}
