// Native CPU kernels for decode steps (built and loaded by kernels.py).
//
// paged_decode: attention of one new token per sequence, straight from the paged KV cache.
// Torch needs the sequences' blocks gathered into a padded copy first, which costs more than
// the attention itself. Here each (sequence, KV head) reads its blocks in place: keys are
// stored transposed per block, (head_dim, block_size), so the scores of a block's tokens for
// the query heads of the group are a few vector FMAs per dimension, with no horizontal sums.
//
// few_rows_linear: y = x @ W.T for a handful of rows x (float32) and bfloat16 weights W.
// Such products are bound by how fast W streams from memory; torch's bfloat16 kernels read it
// at ~11-14 GB/s on one core for one row. Here each thread takes a range of W's rows and
// widens 16 weights at a time to float32 for the dot products with every x row (AVX-512;
// elsewhere plain loops, left to the compiler).

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>


#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kMaxRows = 8;
constexpr int64_t kAhead = 1;

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

// Float32 copies of n cache values (bfloat16 is the top half of a float32).
inline void widen(const float* src, float* dst, int64_t n) { std::copy(src, src + n, dst); }

inline void widen(const at::BFloat16* src, float* dst, int64_t n) {
  int64_t i = 0;
#ifdef __AVX512F__
  for (; i + 16 <= n; i += 16) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16)));
  }
#endif
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

#ifdef __AVX512F__
inline __m512 load16(const float* src) { return _mm512_loadu_ps(src); }

inline __m512 load16(const at::BFloat16* src) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}
#endif

template <typename T>
inline void prefetch(const T* p, int64_t n) {
  const char* bytes = reinterpret_cast<const char*>(p);
  for (int64_t at = 0; at < n * static_cast<int64_t>(sizeof(T)); at += 64) __builtin_prefetch(bytes + at);
}

template <typename T>
inline void prefetch_l2(const T* p, int64_t n) {
  const char* bytes = reinterpret_cast<const char*>(p);
  for (int64_t at = 0; at < n * static_cast<int64_t>(sizeof(T)); at += 64) __builtin_prefetch(bytes + at, 0, 2);
}

struct Shape {
  int64_t num_seqs, n_heads, n_kv_heads, num_blocks, head_dim, block_size, table_width;
  float scale;
};

// G query heads per KV head, head size D, block size BS; 0: known only at run time. With G fixed,
// D = 64 and BS = 16, AVX-512 keeps a block's scores (G x 16) and the outputs (G x 64) in registers.
template <typename T, int G_, int D_, int BS_>
void paged(const float* q, const T* k_cache, const T* v_cache, const int64_t* tables, const int64_t* lens, float* out,
           const Shape& s) {
  const int64_t G = G_ ? G_ : s.n_heads / s.n_kv_heads, D = D_ ? D_ : s.head_dim, BS = BS_ ? BS_ : s.block_size;
  const int64_t block_elems = D * BS;
  at::parallel_for(0, s.num_seqs * s.n_kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> keys(block_elems), values(block_elems), queries(G * D), scores, acc(G * D);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t seq = item / s.n_kv_heads, head = item % s.n_kv_heads, len = lens[seq];
      const int64_t blocks = (len + BS - 1) / BS, stride = blocks * BS;  // scores: one padded row per query head
      const int64_t* table = tables + seq * s.table_width;
      const T* k_head = k_cache + head * s.num_blocks * block_elems;
      const T* v_head = v_cache + head * s.num_blocks * block_elems;
      const float* q_group = q + (seq * s.n_heads + head * G) * D;
      for (int64_t i = 0; i < G * D; ++i) queries[i] = q_group[i] * s.scale;
      // the blocks of the items AHEAD on into L2, read while this one runs (the first call takes them all)
      for (int64_t next = item == begin ? item : item + kAhead; next <= item + kAhead && next < end; ++next) {
        const int64_t next_seq = next / s.n_kv_heads, next_head = next % s.n_kv_heads;
        const int64_t next_blocks = (lens[next_seq] + BS - 1) / BS;
        for (int64_t b = 0; b < next_blocks; ++b) {
          const int64_t at = (next_head * s.num_blocks + tables[next_seq * s.table_width + b]) * block_elems;
          prefetch_l2(k_cache + at, block_elems);
          prefetch_l2(v_cache + at, block_elems);
        }
      }
      scores.resize(G * stride);
      for (int64_t b = 0; b < blocks; ++b) {
        const T* k_block = k_head + table[b] * block_elems;  // (D, BS)
        // blocks lie anywhere in the cache, beyond the hardware prefetcher's reach: ask for the
        // next key block and this block's values while this block's scores are computed
        if (b + 1 < blocks) prefetch(k_head + table[b + 1] * block_elems, block_elems);
        prefetch(v_head + table[b] * block_elems, block_elems);
#ifdef __AVX512F__
        if constexpr (G_ > 0 && BS_ == 16) {  // a block's 16 scores per query head: one register each
          __m512 acc[2][G_ ? G_ : 1];  // even and odd dimensions: twice the independent FMA chains
          for (int r = 0; r < G_; ++r) acc[0][r] = acc[1][r] = _mm512_setzero_ps();
          for (int64_t d = 0; d < D; d += 2) {
            const __m512 k0 = load16(k_block + d * 16), k1 = load16(k_block + (d + 1) * 16);
            for (int r = 0; r < G_; ++r) {
              acc[0][r] = _mm512_fmadd_ps(_mm512_set1_ps(queries[r * D + d]), k0, acc[0][r]);
              acc[1][r] = _mm512_fmadd_ps(_mm512_set1_ps(queries[r * D + d + 1]), k1, acc[1][r]);
            }
          }
          for (int r = 0; r < G_; ++r)
            _mm512_storeu_ps(scores.data() + r * stride + b * 16, _mm512_add_ps(acc[0][r], acc[1][r]));
          continue;
        }
#endif
        widen(k_block, keys.data(), block_elems);
        for (int64_t r = 0; r < G; ++r) {
          float* row = scores.data() + r * stride + b * BS;
          std::fill(row, row + BS, 0.f);
          for (int64_t d = 0; d < D; ++d) {
            const float qd = queries[r * D + d];
            for (int64_t t = 0; t < BS; ++t) row[t] += qd * keys[d * BS + t];
          }
        }
      }
      for (int64_t r = 0; r < G; ++r) {  // softmax over the len real tokens of each row
        float* row = scores.data() + r * stride;
        float top = row[0], sum = 0.f;
        for (int64_t t = 1; t < len; ++t) top = std::max(top, row[t]);
        for (int64_t t = 0; t < len; ++t) row[t] = std::exp(row[t] - top);
        for (int64_t t = 0; t < len; ++t) sum += row[t];
        const float inv = 1.f / sum;
        for (int64_t t = 0; t < len; ++t) row[t] *= inv;
      }
      float* o = out + (seq * s.n_heads + head * G) * D;
#ifdef __AVX512F__
      if constexpr (G_ > 0 && D_ == 64) {  // the group's outputs: G x 4 registers
        __m512 sums[G_ ? G_ : 1][4];
        for (int r = 0; r < G_; ++r)
          for (int c = 0; c < 4; ++c) sums[r][c] = _mm512_setzero_ps();
        for (int64_t b = 0; b < blocks; ++b) {
          const T* v_block = v_head + table[b] * block_elems;  // (BS, D)
          const int64_t n = std::min(BS, len - b * BS);
          for (int64_t t = 0; t < n; ++t) {
            __m512 vt[4];
            for (int c = 0; c < 4; ++c) vt[c] = load16(v_block + t * 64 + c * 16);
            for (int r = 0; r < G_; ++r) {
              const __m512 p = _mm512_set1_ps(scores[r * stride + b * BS + t]);
              for (int c = 0; c < 4; ++c) sums[r][c] = _mm512_fmadd_ps(p, vt[c], sums[r][c]);
            }
          }
        }
        for (int r = 0; r < G_; ++r)
          for (int c = 0; c < 4; ++c) _mm512_storeu_ps(o + r * 64 + c * 16, sums[r][c]);
        continue;
      }
#endif
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t n = std::min(BS, len - b * BS);
        widen(v_head + table[b] * block_elems, values.data(), n * D);  // (BS, D)
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t r = 0; r < G; ++r) {
            const float p = scores[r * stride + b * BS + t];
            for (int64_t d = 0; d < D; ++d) acc[r * D + d] += p * values[t * D + d];
          }
        }
      }
      std::copy(acc.begin(), acc.end(), o);
    }
  });
}

template <typename T>
void paged_dispatch(const float* q, const T* k, const T* v, const int64_t* tables, const int64_t* lens, float* out,
                    const Shape& s) {
  const int64_t g = s.n_heads / s.n_kv_heads;
  if (s.head_dim == 64 && s.block_size == 16) {
    switch (g) {
      case 1: return paged<T, 1, 64, 16>(q, k, v, tables, lens, out, s);
      case 2: return paged<T, 2, 64, 16>(q, k, v, tables, lens, out, s);
      case 3: return paged<T, 3, 64, 16>(q, k, v, tables, lens, out, s);
      case 4: return paged<T, 4, 64, 16>(q, k, v, tables, lens, out, s);
      case 8: return paged<T, 8, 64, 16>(q, k, v, tables, lens, out, s);
    }
  }
  paged<T, 0, 0, 0>(q, k, v, tables, lens, out, s);
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

// q (B, H, D) float32; k_cache (KVH, num_blocks, D, BS) and v_cache (KVH, num_blocks, BS, D), float32
// or bfloat16; tables (B, W) int64 block ids; lens (B,) int64 >= 1 tokens to attend to.
// Returns (B, H, D) float32.
torch::Tensor paged_decode(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache, torch::Tensor tables,
                           torch::Tensor lens, double scale) {
  TORCH_CHECK(q.dim() == 3 && q.dtype() == torch::kFloat32, "q: (B, H, D) float32");
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.is_contiguous() && v_cache.is_contiguous(), "caches: contiguous, 4-d");
  TORCH_CHECK(k_cache.dtype() == v_cache.dtype(), "k and v caches differ in dtype");
  TORCH_CHECK(tables.dtype() == torch::kInt64 && lens.dtype() == torch::kInt64, "tables and lens: int64");
  q = q.contiguous();
  tables = tables.contiguous();
  lens = lens.contiguous();
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2), KVH = k_cache.size(0), BS = k_cache.size(3);
  TORCH_CHECK(H % KVH == 0, H, " query heads do not group over ", KVH, " KV heads");
  TORCH_CHECK(k_cache.size(2) == D && v_cache.sizes() == torch::IntArrayRef({KVH, k_cache.size(1), BS, D}),
              "k_cache must be (KVH, blocks, D, BS) and v_cache (KVH, blocks, BS, D)");
  TORCH_CHECK(H / KVH <= 8 && D <= 256 && BS <= 64, "at most 8 query heads per KV head, head_dim 256, block 64");
  TORCH_CHECK(tables.dim() == 2 && tables.size(0) == B && lens.numel() == B, "one table row and one length per sequence");
  if (B > 0) {
    const int64_t shortest = lens.min().item<int64_t>(), longest = lens.max().item<int64_t>();
    TORCH_CHECK(shortest >= 1 && longest <= tables.size(1) * BS, "lengths must be in 1..", tables.size(1) * BS);
  }
  auto out = torch::empty_like(q);
  const Shape shape{B, H, KVH, k_cache.size(1), D, BS, tables.size(1), static_cast<float>(scale)};
  if (k_cache.dtype() == torch::kBFloat16) {
    paged_dispatch(q.data_ptr<float>(), k_cache.data_ptr<at::BFloat16>(), v_cache.data_ptr<at::BFloat16>(),
                   tables.data_ptr<int64_t>(), lens.data_ptr<int64_t>(), out.data_ptr<float>(), shape);
  } else {
    TORCH_CHECK(k_cache.dtype() == torch::kFloat32, "caches: float32 or bfloat16");
    paged_dispatch(q.data_ptr<float>(), k_cache.data_ptr<float>(), v_cache.data_ptr<float>(),
                   tables.data_ptr<int64_t>(), lens.data_ptr<int64_t>(), out.data_ptr<float>(), shape);
  }
  return out;
}

// A decode step's attention for a layer in one call: RoPE on q and k (half-split layout, sin
// signed as model.py's rope_tables), the new k and v written to the paged cache, then
// paged_decode. qkv (B, (H + 2 KVH) * D) float32, one row per decoding sequence; cos, sin (B, D);
// slot_blocks, slot_offsets (B,) where each new token goes. Returns (B, H * D) float32. In torch
// this is ~15 operators a layer, more time than the attention itself on a decode step.
torch::Tensor decode_attention(torch::Tensor qkv, torch::Tensor cos, torch::Tensor sin, torch::Tensor k_cache,
                               torch::Tensor v_cache, torch::Tensor slot_blocks, torch::Tensor slot_offsets,
                               torch::Tensor tables, torch::Tensor lens, int64_t n_heads, double scale) {
  const int64_t B = qkv.size(0), KVH = k_cache.size(0), D = k_cache.size(2), BS = k_cache.size(3), H = n_heads;
  TORCH_CHECK(qkv.dim() == 2 && qkv.dtype() == torch::kFloat32 && qkv.size(1) == (H + 2 * KVH) * D,
              "qkv: (B, (H + 2 KVH) * D) float32");
  TORCH_CHECK(cos.numel() == B * D && sin.numel() == B * D && cos.dtype() == torch::kFloat32, "cos, sin: (B, D) float32");
  TORCH_CHECK(slot_blocks.numel() == B && slot_offsets.numel() == B && slot_blocks.dtype() == torch::kInt64 &&
                  slot_offsets.dtype() == torch::kInt64, "slot_blocks, slot_offsets: (B,) int64");
  TORCH_CHECK(D % 2 == 0 && k_cache.is_contiguous() && v_cache.is_contiguous(), "caches: contiguous, even head_dim");
  qkv = qkv.contiguous();
  cos = cos.contiguous();
  sin = sin.contiguous();
  slot_blocks = slot_blocks.contiguous();
  slot_offsets = slot_offsets.contiguous();
  auto q = torch::empty({B, H, D}, qkv.options());
  const float *in = qkv.data_ptr<float>(), *c = cos.data_ptr<float>(), *sn = sin.data_ptr<float>();
  const int64_t *blocks = slot_blocks.data_ptr<int64_t>(), *offsets = slot_offsets.data_ptr<int64_t>();
  const int64_t NB = k_cache.size(1);
  float* qp = q.data_ptr<float>();
  auto write = [&](auto* k_out, auto* v_out) {
    using T = std::remove_pointer_t<decltype(k_out)>;
    const int64_t half = D / 2;
    at::parallel_for(0, B, 8, [&](int64_t first, int64_t last) {
      std::vector<float> rotated(D);
      for (int64_t b = first; b < last; ++b) {
        const float* row = in + b * (H + 2 * KVH) * D;
        const float *cb = c + b * D, *sb = sn + b * D;
        for (int64_t h = 0; h < H + KVH; ++h) {  // q heads, then k heads: rotated
          const float* x = row + h * D;
          float* r = h < H ? qp + (b * H + h) * D : rotated.data();
          for (int64_t i = 0; i < half; ++i) r[i] = x[i] * cb[i] + x[i + half] * sb[i];
          for (int64_t i = half; i < D; ++i) r[i] = x[i] * cb[i] + x[i - half] * sb[i];
          if (h < H) continue;
          T* k = k_out + ((h - H) * NB + blocks[b]) * D * BS + offsets[b];  // keys transposed per block: (D, BS)
          for (int64_t i = 0; i < D; ++i) k[i * BS] = static_cast<T>(r[i]);
        }
        for (int64_t h = 0; h < KVH; ++h) {  // values as they are: (BS, D)
          const float* x = row + (H + KVH + h) * D;
          T* v = v_out + (((h * NB + blocks[b]) * BS) + offsets[b]) * D;
          for (int64_t i = 0; i < D; ++i) v[i] = static_cast<T>(x[i]);
        }
      }
    });
  };
  if (k_cache.dtype() == torch::kBFloat16)
    write(k_cache.data_ptr<at::BFloat16>(), v_cache.data_ptr<at::BFloat16>());
  else
    write(k_cache.data_ptr<float>(), v_cache.data_ptr<float>());
  return paged_decode(q, k_cache, v_cache, tables, lens, scale).view({B, H * D});
}

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
  m.def("few_rows_linear", &few_rows_linear, "x @ w.T for a few float32 rows and bfloat16 weights");
}
