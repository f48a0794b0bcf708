// Native CPU kernels for decode steps (built and loaded by kernels.py, with paged_attention.cpp,
// packed_linear.cpp and quant.cpp, whose functions this module's bindings declare below).
//
// few_rows_linear: y = x @ W.T for a handful of rows x (float32) and bfloat16 weights W.
// Such products are bound by how fast W streams from memory; torch's bfloat16 kernels read it
// at ~11-14 GB/s on one core for one row. Here each thread takes a range of W's rows and
// widens a vector of weights at a time to float32 for the dot products with every x row
// (simd.h: AVX-512, AVX2, or plain loops).

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "simd.h"

namespace {

constexpr int64_t kMaxRows = 8;

// y[r][j..j+R) = x[r] . w[j..j+R) for M rows of x and R rows of W: R * M independent sums,
// enough to keep the FMA units busy while W streams in.
template <int M, int R>
inline void dots(const float* x, const at::BFloat16* w, float* y, int64_t n, int64_t k) {
  using simd::kWidth;
  float sums[R][M] = {};
  int64_t i = 0;
  if constexpr (kWidth > 1) {
    simd::Vec acc[R][M];
    for (int j = 0; j < R; ++j)
      for (int r = 0; r < M; ++r) acc[j][r] = simd::zero();
    for (; i + kWidth <= k; i += kWidth) {
      simd::Vec wv[R];
      for (int j = 0; j < R; ++j) wv[j] = simd::load(w + j * k + i);  // widened to float32
      for (int r = 0; r < M; ++r) {
        const simd::Vec xv = simd::load(x + r * k + i);
        for (int j = 0; j < R; ++j) acc[j][r] = simd::fmadd(xv, wv[j], acc[j][r]);
      }
    }
    for (int j = 0; j < R; ++j)
      for (int r = 0; r < M; ++r) sums[j][r] = simd::sum(acc[j][r]);
  }
  for (; i < k; ++i)
    for (int j = 0; j < R; ++j)
      for (int r = 0; r < M; ++r) sums[j][r] += x[r * k + i] * static_cast<float>(w[j * k + i]);
  for (int j = 0; j < R; ++j)
    for (int r = 0; r < M; ++r) y[r * n + j] = sums[j][r];
}

template <int M>
void few_rows(const float* x, const at::BFloat16* w, float* y, int64_t n, int64_t k) {
  constexpr int R = M <= 2 ? 4 : (simd::kRegisters >= 32 || M <= 4 ? 2 : 1);  // R * M accumulators in registers
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    int64_t j = begin;
    for (; j + R <= end; j += R) dots<M, R>(x, w + j * k, y + j, n, k);
    for (; j < end; ++j) dots<M, 1>(x, w + j * k, y + j, n, k);
  });
}

}  // namespace

// x (rows, K) float32, w (N, K) bfloat16 -> (rows, N) float32.
torch::Tensor few_rows_linear(torch::Tensor x, torch::Tensor w) {
  TORCH_CHECK(x.dim() == 2 && x.dtype() == torch::kFloat32, "x: (rows, K) float32");
  TORCH_CHECK(w.dim() == 2 && w.dtype() == torch::kBFloat16 && w.is_contiguous(), "w: contiguous (N, K) bfloat16");
  TORCH_CHECK(x.size(1) == w.size(1), "x has ", x.size(1), " columns, w ", w.size(1));
  TORCH_CHECK(x.size(0) <= kMaxRows, "at most ", kMaxRows, " rows, got ", x.size(0));
  x = x.contiguous();
  const int64_t rows = x.size(0), n = w.size(0), k = w.size(1);
  auto y = torch::empty({rows, n}, x.options());
  const float* xp = x.data_ptr<float>();
  const at::BFloat16* wp = w.data_ptr<at::BFloat16>();
  float* yp = y.data_ptr<float>();
  switch (rows) {
    case 1: few_rows<1>(xp, wp, yp, n, k); break;
    case 2: few_rows<2>(xp, wp, yp, n, k); break;
    case 3: few_rows<3>(xp, wp, yp, n, k); break;
    case 4: few_rows<4>(xp, wp, yp, n, k); break;
    case 5: few_rows<5>(xp, wp, yp, n, k); break;
    case 6: few_rows<6>(xp, wp, yp, n, k); break;
    case 7: few_rows<7>(xp, wp, yp, n, k); break;
    case 8: few_rows<8>(xp, wp, yp, n, k); break;
  }
  return y;
}

torch::Tensor paged_decode(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache, torch::Tensor tables,
                           torch::Tensor lens, double scale);  // paged_attention.cpp
torch::Tensor decode_attention(torch::Tensor qkv, torch::Tensor cos, torch::Tensor sin, torch::Tensor k_cache,
                               torch::Tensor v_cache, torch::Tensor slot_blocks, torch::Tensor slot_offsets,
                               torch::Tensor tables, torch::Tensor lens, int64_t n_heads, double scale);  // paged_attention.cpp
torch::Tensor packed_linear(torch::Tensor x, torch::Tensor packed, int64_t n, int64_t isa);  // packed_linear.cpp
torch::Tensor quant_linear(torch::Tensor x, torch::Tensor u, torch::Tensor scale, torch::Tensor min, int64_t n,
                           int64_t bits, int64_t isa);  // quant.cpp

// x (rows, D) float32, w (D,) float32: x / sqrt(mean(x^2) + eps) * w, row by row. Torch's CPU
// rms_norm is ~7 operators (~20 us a call on a decode step's rows); this is one pass.
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor w, double eps) {
  TORCH_CHECK(x.dim() == 2 && x.dtype() == torch::kFloat32 && w.dtype() == torch::kFloat32, "x: (rows, D), w: (D,) float32");
  TORCH_CHECK(w.numel() == x.size(1), "w has ", w.numel(), " values, x ", x.size(1), " columns");
  x = x.contiguous();
  w = w.contiguous();
  const int64_t rows = x.size(0), d = x.size(1);
  auto y = torch::empty_like(x);
  const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = xp + r * d;
      float sum = 0.f;
      for (int64_t i = 0; i < d; ++i) sum += row[i] * row[i];
      const float inv = 1.f / std::sqrt(sum / static_cast<float>(d) + static_cast<float>(eps));
      for (int64_t i = 0; i < d; ++i) yp[r * d + i] = row[i] * inv * wp[i];
    }
  });
  return y;
}

// gate_up (rows, 2F) float32 -> silu(gate) * up (rows, F): the feed-forward's middle in one pass.
torch::Tensor silu_mul(torch::Tensor gate_up) {
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.dtype() == torch::kFloat32 && gate_up.size(1) % 2 == 0,
              "gate_up: (rows, 2F) float32");
  gate_up = gate_up.contiguous();
  const int64_t rows = gate_up.size(0), f = gate_up.size(1) / 2;
  auto y = torch::empty({rows, f}, gate_up.options());
  const float* in = gate_up.data_ptr<float>();
  float* out = y.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      for (int64_t i = 0; i < f; ++i) {
        const float g = in[r * 2 * f + i];
        out[r * f + i] = g / (1.f + std::exp(-g)) * in[r * 2 * f + f + i];
      }
  });
  return y;
}

// x (rows, n) float32 -> (rows,) int64: the index of each row's largest value, the first of
// equals (as torch.argmax). Torch's CPU argmax tracks the index element by element, ~650 us for
// a 32-row step's logits (49,152 wide); a vectorised max, then a search for it, reads each row
// twice from cache instead.
torch::Tensor argmax_rows(torch::Tensor x) {
  TORCH_CHECK(x.dim() == 2 && x.dtype() == torch::kFloat32 && x.size(1) > 0, "x: (rows, n > 0) float32");
  x = x.contiguous();
  const int64_t rows = x.size(0), n = x.size(1);
  auto out = torch::empty({rows}, x.options().dtype(torch::kInt64));
  const float* xp = x.data_ptr<float>();
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = xp + r * n;
      float top = row[0];
      for (int64_t i = 1; i < n; ++i) top = std::max(top, row[i]);
      int64_t at = 0;
      while (row[at] != top) ++at;
      op[r] = at;
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("argmax_rows", &argmax_rows, "each row's argmax (the first of equals)");
  m.def("decode_attention", &decode_attention, "RoPE, cache writes and paged attention of a decode step");
  m.def("rms_norm", &rms_norm, "RMSNorm of float32 rows in one pass");
  m.def("silu_mul", &silu_mul, "silu(gate) * up of float32 rows [gate | up]");
  m.def("quant_linear", &quant_linear, "x @ w.T for a few float32 rows and 8- or 4-bit weights (quant.cpp)");
  m.def("paged_decode", &paged_decode, "decode attention over a paged KV cache");
  m.def("packed_linear", &packed_linear, "x @ w.T for float32 rows and bfloat16 w packed in blocks (packed_linear.cpp; isa 0 AVX-512 BF16, 1 AVX2)");
  m.def("few_rows_linear", &few_rows_linear, "x @ w.T for a few float32 rows and bfloat16 weights");
}
