// Paged attention on CPU: rows that each attend straight from the paged KV cache (built with
// kernels.cpp, loaded by kernels.py).
//
// paged_decode: each row is one query position of a sequence: a decode token, or a row of a
// short prompt chunk; it attends to its sequence's first lens[row] tokens. Torch needs the
// sequences' blocks gathered into a padded copy first, which costs more than the attention
// itself. Here each (rows of one sequence, KV head) reads its blocks in place: keys are stored
// transposed per block, (head_dim, block_size), so the scores of a block's tokens for a query
// are a few vector FMAs per dimension, with no horizontal sums. Written once over simd.h's
// vectors: 16 lanes with AVX-512, 8 with AVX2, plain loops elsewhere.
//
// Consecutive rows of one sequence (same block table, lengths one apart: a prompt chunk) are
// attended together, up to kGroupRows of them: each key and value block is read once for all
// their queries (rows x query heads per KV head) instead of once per row, and the FMAs of
// several queries run side by side. A decode token is a group of one.
//
// decode_attention: RoPE, the new keys and values written to the cache, then paged_decode:
// the attention of a step's paged rows in one call a layer.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "simd.h"

namespace {

using simd::kWidth;
using simd::Vec;

constexpr int64_t kGroupRows = 8;  // rows of one sequence attended together
constexpr int64_t kBlockTokens = 16;  // the block size the vector paths take (the engine's default)
constexpr int kPass = 6;              // queries per pass over a block or a value row
// Vectors of output columns per pass over the values: N queries x kValueVecs accumulators, the
// value row's kValueVecs and a probability fit in the registers (29 of 32 with AVX-512, 15 of 16
// with AVX2).
constexpr int kValueVecs = kWidth == 16 ? 4 : 2;
constexpr bool kVectors = kWidth > 1;  // elsewhere, the plain loops below
constexpr int64_t kAhead = 1;          // items whose blocks are prefetched ahead

// Float32 copies of n cache values.
template <typename T>
inline void widen(const T* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; kVectors && i + kWidth <= n; i += kWidth) simd::store(dst + i, simd::load(src + i));
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

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

struct Group {  // rows first .. first + rows - 1: one sequence, each attending to one more token
  int64_t first, rows;
};

std::vector<Group> row_groups(const int64_t* tables, const int64_t* lens, int64_t num_rows, int64_t width) {
  std::vector<Group> groups;
  for (int64_t r = 0; r < num_rows; ++r) {
    if (!groups.empty()) {
      Group& g = groups.back();
      const int64_t last = g.first + g.rows - 1;
      if (g.rows < kGroupRows && lens[r] == lens[last] + 1 &&
          std::memcmp(tables + r * width, tables + last * width, width * sizeof(int64_t)) == 0) {
        ++g.rows;
        continue;
      }
    }
    groups.push_back({r, 1});
  }
  return groups;
}

// A block's 16 scores for N queries (rows of queries, D each): 16 / kWidth vectors per key row;
// with one vector a row (AVX-512), even and odd dimensions in two chains of FMAs per query.
template <int N, typename T>
inline void block_scores(const float* queries, int64_t D, const T* k_block, float* scores, int64_t stride) {
  constexpr int KV = kBlockTokens / kWidth, C = KV == 1 ? 2 : 1;
  Vec acc[C][KV][N];
  for (int c = 0; c < C; ++c)
    for (int v = 0; v < KV; ++v)
      for (int j = 0; j < N; ++j) acc[c][v][j] = simd::zero();
  for (int64_t d = 0; d < D; d += C)
    for (int c = 0; c < C; ++c) {
      Vec k[KV];
      for (int v = 0; v < KV; ++v) k[v] = simd::load(k_block + (d + c) * kBlockTokens + v * kWidth);
      for (int j = 0; j < N; ++j) {
        const Vec q = simd::set1(queries[j * D + d + c]);
        for (int v = 0; v < KV; ++v) acc[c][v][j] = simd::fmadd(q, k[v], acc[c][v][j]);
      }
    }
  for (int j = 0; j < N; ++j)
    for (int v = 0; v < KV; ++v)
      simd::store(scores + j * stride + v * kWidth, C == 2 ? simd::add(acc[0][v][j], acc[1][v][j]) : acc[0][v][j]);
}

// Columns col .. col + CV * kWidth of N queries' outputs from their probabilities over the first
// n tokens (values in (BS, D) blocks).
template <int N, int CV, typename T>
inline void weighted_values(const float* probs, int64_t stride, const T* v_head, const int64_t* table, int64_t n,
                            int64_t BS, int64_t D, int64_t col, float* const* outs) {
  Vec sums[N][CV];
  for (int j = 0; j < N; ++j)
    for (int c = 0; c < CV; ++c) sums[j][c] = simd::zero();
  for (int64_t t = 0; t < n; ++t) {
    const T* v = v_head + (table[t / BS] * BS + t % BS) * D + col;
    Vec vt[CV];
    for (int c = 0; c < CV; ++c) vt[c] = simd::load(v + c * kWidth);
    for (int j = 0; j < N; ++j) {
      const Vec p = simd::set1(probs[j * stride + t]);
      for (int c = 0; c < CV; ++c) sums[j][c] = simd::fmadd(p, vt[c], sums[j][c]);
    }
  }
  for (int j = 0; j < N; ++j)
    for (int c = 0; c < CV; ++c) simd::store(outs[j] + col + c * kWidth, sums[j][c]);
}

// F<n>(args...) for a run-time 1 <= n <= kPass.
#define UP_TO_PASS(n, call)    \
  switch (n) {                 \
    case 1: call(1); break;    \
    case 2: call(2); break;    \
    case 3: call(3); break;    \
    case 4: call(4); break;    \
    case 5: call(5); break;    \
    default: call(6); break;   \
  }

// G query heads per KV head, head size D; 0: known only at run time. The vector paths take
// blocks of 16 tokens and head sizes that are a multiple of the vector width (64, 80, 96, 128,
// 256: every model we load); anything else takes the plain loops.
template <typename T, int G_, int D_>
void paged(const float* q, const T* k_cache, const T* v_cache, const int64_t* tables, const int64_t* lens, float* out,
           const Shape& s) {
  const int64_t G = G_ ? G_ : s.n_heads / s.n_kv_heads, D = D_ ? D_ : s.head_dim, BS = s.block_size;
  const bool vectors = kVectors && BS == kBlockTokens && D % kWidth == 0;
  const int64_t block_elems = D * BS, width = s.table_width;
  const std::vector<Group> groups = row_groups(tables, lens, s.num_seqs, width);
  const int64_t items = static_cast<int64_t>(groups.size()) * s.n_kv_heads;
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> keys(block_elems), values(block_elems), queries, scores, acc;
    std::vector<float*> outs;
    for (int64_t item = begin; item < end; ++item) {
      const Group& group = groups[item / s.n_kv_heads];
      const int64_t head = item % s.n_kv_heads, nq = group.rows * G;  // queries: (row, query head) row-major
      const int64_t longest = lens[group.first + group.rows - 1];
      const int64_t blocks = (longest + BS - 1) / BS, stride = blocks * BS;  // scores: one padded row per query
      const int64_t* table = tables + group.first * width;
      const T* k_head = k_cache + head * s.num_blocks * block_elems;
      const T* v_head = v_cache + head * s.num_blocks * block_elems;
      queries.resize(nq * D);
      outs.resize(nq);
      for (int64_t i = 0; i < group.rows; ++i)
        for (int64_t g = 0; g < G; ++g) {
          const int64_t at = ((group.first + i) * s.n_heads + head * G + g) * D;
          for (int64_t d = 0; d < D; ++d) queries[(i * G + g) * D + d] = q[at + d] * s.scale;
          outs[i * G + g] = out + at;
        }
      // the blocks of the next item into L2, read while this one runs (the first item's too)
      for (int64_t next = item == begin ? item : item + kAhead; next <= item + kAhead && next < end; ++next) {
        const Group& ng = groups[next / s.n_kv_heads];
        const int64_t next_head = next % s.n_kv_heads, next_blocks = (lens[ng.first + ng.rows - 1] + BS - 1) / BS;
        for (int64_t b = 0; b < next_blocks; ++b) {
          const int64_t at = (next_head * s.num_blocks + tables[ng.first * width + b]) * block_elems;
          prefetch_l2(k_cache + at, block_elems);
          prefetch_l2(v_cache + at, block_elems);
        }
      }
      scores.resize(nq * stride);
      for (int64_t b = 0; b < blocks; ++b) {
        const T* k_block = k_head + table[b] * block_elems;  // (D, BS)
        // blocks lie anywhere in the cache, beyond the hardware prefetcher's reach: ask for the
        // next key block and this block's values while this block's scores are computed
        if (b + 1 < blocks) prefetch(k_head + table[b + 1] * block_elems, block_elems);
        prefetch(v_head + table[b] * block_elems, block_elems);
        if (vectors) {
          for (int64_t j = 0; j < nq; j += kPass) {
            const float* qs = queries.data() + j * D;
            float* row = scores.data() + j * stride + b * kBlockTokens;
#define SCORES(N) block_scores<N>(qs, D, k_block, row, stride)
            UP_TO_PASS(static_cast<int>(std::min<int64_t>(kPass, nq - j)), SCORES)
#undef SCORES
          }
          continue;
        }
        widen(k_block, keys.data(), block_elems);
        for (int64_t j = 0; j < nq; ++j) {
          float* row = scores.data() + j * stride + b * BS;
          std::fill(row, row + BS, 0.f);
          for (int64_t d = 0; d < D; ++d) {
            const float qd = queries[j * D + d];
            for (int64_t t = 0; t < BS; ++t) row[t] += qd * keys[d * BS + t];
          }
        }
      }
      for (int64_t j = 0; j < nq; ++j) {  // softmax over each query's own tokens; zeros after them
        const int64_t len = lens[group.first + j / G];
        float* row = scores.data() + j * stride;
        float top = row[0], sum = 0.f;
        for (int64_t t = 1; t < len; ++t) top = std::max(top, row[t]);
        for (int64_t t = 0; t < len; ++t) row[t] = std::exp(row[t] - top);
        for (int64_t t = 0; t < len; ++t) sum += row[t];
        const float inv = 1.f / sum;
        for (int64_t t = 0; t < len; ++t) row[t] *= inv;
        std::fill(row + len, row + stride, 0.f);
      }
      if (vectors) {
        for (int64_t j = 0; j < nq; j += kPass) {
          const int64_t n = std::min<int64_t>(kPass, nq - j), tokens = lens[group.first + (j + n - 1) / G];
          const float* probs = scores.data() + j * stride;
          float* const* to = outs.data() + j;
          int64_t col = 0;
          for (; col + kValueVecs * kWidth <= D; col += kValueVecs * kWidth) {
#define VALUES(N) weighted_values<N, kValueVecs>(probs, stride, v_head, table, tokens, BS, D, col, to)
            UP_TO_PASS(static_cast<int>(n), VALUES)
#undef VALUES
          }
          for (; col < D; col += kWidth) {
#define VALUES(N) weighted_values<N, 1>(probs, stride, v_head, table, tokens, BS, D, col, to)
            UP_TO_PASS(static_cast<int>(n), VALUES)
#undef VALUES
          }
        }
        continue;
      }
      acc.assign(nq * D, 0.f);
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t n = std::min(BS, longest - b * BS);
        widen(v_head + table[b] * block_elems, values.data(), n * D);  // (BS, D)
        for (int64_t t = 0; t < n; ++t)
          for (int64_t j = 0; j < nq; ++j) {
            const float p = scores[j * stride + b * BS + t];
            for (int64_t d = 0; d < D; ++d) acc[j * D + d] += p * values[t * D + d];
          }
      }
      for (int64_t j = 0; j < nq; ++j) std::copy(acc.begin() + j * D, acc.begin() + (j + 1) * D, outs[j]);
    }
  });
}

#undef UP_TO_PASS

template <typename T>
void paged_dispatch(const float* q, const T* k, const T* v, const int64_t* tables, const int64_t* lens, float* out,
                    const Shape& s) {
  const int64_t g = s.n_heads / s.n_kv_heads;
  if (s.head_dim == 64) {
    switch (g) {
      case 1: return paged<T, 1, 64>(q, k, v, tables, lens, out, s);
      case 3: return paged<T, 3, 64>(q, k, v, tables, lens, out, s);
      case 4: return paged<T, 4, 64>(q, k, v, tables, lens, out, s);
    }
    return paged<T, 0, 64>(q, k, v, tables, lens, out, s);
  }
  if (s.head_dim == 128) return paged<T, 0, 128>(q, k, v, tables, lens, out, s);
  paged<T, 0, 0>(q, k, v, tables, lens, out, s);
}

}  // namespace

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
  const int64_t* len = lens.data_ptr<int64_t>();  // a loop, not lens.min() / max(): 4 operators a layer
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(len[b] >= 1 && len[b] <= tables.size(1) * BS, "lengths must be in 1..", tables.size(1) * BS);
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

