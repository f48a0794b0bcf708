// Native CPU kernels for decode steps (built and loaded by kernels.py).
//
// few_rows_linear: y = x @ W.T for a handful of rows x (float32) and bfloat16 weights W.
// Such products are bound by how fast W streams from memory; torch's bfloat16 kernels read it
// at ~11-14 GB/s on one core for one row. Here each thread takes a range of W's rows and
// widens 16 weights at a time to float32 for the dot products with every x row (AVX-512;
// elsewhere plain loops, left to the compiler).

#include <torch/extension.h>

#include <ATen/Parallel.h>


#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kMaxRows = 8;

// y[r][j..j+R) = x[r] . w[j..j+R) for M rows of x and R rows of W: R * M independent sums,
// enough to keep the FMA units busy while W streams in.
template <int M, int R>
inline void dots(const float* x, const at::BFloat16* w, float* y, int64_t n, int64_t k) {
  float sums[R][M] = {};
  int64_t i = 0;
#ifdef __AVX512F__
  __m512 acc[R][M];
  for (int j = 0; j < R; ++j)
    for (int r = 0; r < M; ++r) acc[j][r] = _mm512_setzero_ps();
  for (; i + 16 <= k; i += 16) {
    __m512 wv[R];
    for (int j = 0; j < R; ++j) {  // 16 weights: a bfloat16 is the top half of a float32
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + j * k + i));
      wv[j] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
    }
    for (int r = 0; r < M; ++r) {
      const __m512 xv = _mm512_loadu_ps(x + r * k + i);
      for (int j = 0; j < R; ++j) acc[j][r] = _mm512_fmadd_ps(xv, wv[j], acc[j][r]);
    }
  }
  for (int j = 0; j < R; ++j)
    for (int r = 0; r < M; ++r) sums[j][r] = _mm512_reduce_add_ps(acc[j][r]);
#endif
  for (; i < k; ++i)
    for (int j = 0; j < R; ++j)
      for (int r = 0; r < M; ++r) sums[j][r] += x[r * k + i] * static_cast<float>(w[j * k + i]);
  for (int j = 0; j < R; ++j)
    for (int r = 0; r < M; ++r) y[r * n + j] = sums[j][r];
}

template <int M>
void few_rows(const float* x, const at::BFloat16* w, float* y, int64_t n, int64_t k) {
  constexpr int R = M <= 2 ? 4 : 2;
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("few_rows_linear", &few_rows_linear, "x @ w.T for a few float32 rows and bfloat16 weights");
}
