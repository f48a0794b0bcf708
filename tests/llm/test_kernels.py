"""The native kernels against torch, and the model with and without them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from blazerpc.llm import kernels
from blazerpc.llm.attention import Attention
from blazerpc.llm.linear import Linear
from blazerpc.llm.loader import load

from .test_model import decode_logits

native = kernels.native()
CROSS = shutil.which("aarch64-linux-gnu-g++")
needs_native = pytest.mark.skipif(native is None, reason="the native kernels could not be built here (no compiler?)")


@needs_native
@pytest.mark.parametrize("rows", range(1, 9))
@pytest.mark.parametrize(("n", "k"), [(96, 576), (37, 40), (5, 1537)])  # k not a multiple of 16, n odd
def test_few_rows_linear_matches_torch(rows: int, n: int, k: int) -> None:
    assert native is not None
    g = torch.Generator().manual_seed(rows)
    x, w = torch.randn(rows, k, generator=g), torch.randn(n, k, generator=g).bfloat16()
    torch.testing.assert_close(native.few_rows_linear(x, w), F.linear(x, w.float()), atol=1e-3, rtol=1e-4)
    strided = torch.randn(k, rows, generator=g).t()  # a transposed view is made contiguous first
    torch.testing.assert_close(native.few_rows_linear(strided, w), F.linear(strided, w.float()), atol=1e-3, rtol=1e-4)


@needs_native
def test_few_rows_linear_refuses_what_it_cannot_do() -> None:
    assert native is not None
    w = torch.randn(8, 16).bfloat16()
    with pytest.raises(RuntimeError, match="at most 8 rows, got 9"):
        native.few_rows_linear(torch.randn(9, 16), w)
    with pytest.raises(RuntimeError, match="x has 15 columns, w 16"):
        native.few_rows_linear(torch.randn(1, 15), w)
    with pytest.raises(RuntimeError, match="bfloat16"):
        native.few_rows_linear(torch.randn(1, 16), w.float())


def dense_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, tables: torch.Tensor,
                    lens: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """The same attention, one sequence and one head at a time, from explicitly unpacked blocks."""
    kv_heads, _, head_dim, _ = k_cache.shape
    group = q.shape[1] // kv_heads
    out = torch.empty_like(q)
    for seq, (table, length) in enumerate(zip(tables, lens.tolist(), strict=True)):
        keys = k_cache[:, table].transpose(2, 3).reshape(kv_heads, -1, head_dim)[:, :length].float()
        values = v_cache[:, table].reshape(kv_heads, -1, head_dim)[:, :length].float()
        for head in range(q.shape[1]):
            scores = keys[head // group] @ q[seq, head] * head_dim**-0.5
            out[seq, head] = torch.softmax(scores, dim=0) @ values[head // group]
    return out


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("heads", "kv_heads", "head_dim", "block_size"),
    [(9, 3, 64, 16), (8, 8, 64, 16), (16, 2, 64, 16), (6, 2, 40, 8)],  # the AVX-512 paths, and the general one
)
def test_paged_decode_matches_dense_attention(
    dtype: torch.dtype, heads: int, kv_heads: int, head_dim: int, block_size: int
) -> None:
    assert native is not None
    g = torch.Generator().manual_seed(heads)
    num_blocks, width = 40, 5
    k_cache = torch.randn(kv_heads, num_blocks, head_dim, block_size, generator=g).to(dtype)
    v_cache = torch.randn(kv_heads, num_blocks, block_size, head_dim, generator=g).to(dtype)
    tables = torch.randperm(num_blocks, generator=g)[: 4 * width].view(4, width)
    lens = torch.tensor([1, block_size, block_size + 1, width * block_size])
    q = torch.randn(4, heads, head_dim, generator=g)
    got = native.paged_decode(q, k_cache, v_cache, tables, lens, head_dim**-0.5)
    torch.testing.assert_close(got, dense_attention(q, k_cache, v_cache, tables, lens), atol=2e-5, rtol=1e-4)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim", "block_size"), [(9, 3, 64, 16), (6, 2, 40, 8)])
def test_rows_of_one_prompt_chunk_attended_together_match_dense_attention(
    dtype: torch.dtype, heads: int, kv_heads: int, head_dim: int, block_size: int
) -> None:
    """Rows sharing a table with lengths one apart (a prompt chunk) are grouped; others are not."""
    assert native is not None
    g = torch.Generator().manual_seed(7)
    num_blocks, width = 40, 4
    k_cache = torch.randn(kv_heads, num_blocks, head_dim, block_size, generator=g).to(dtype)
    v_cache = torch.randn(kv_heads, num_blocks, block_size, head_dim, generator=g).to(dtype)
    chunk_table = torch.randperm(num_blocks, generator=g)[:width]
    other_table = chunk_table.clone()
    other_table[-1] = (chunk_table[-1] + 1) % num_blocks  # the same prefix, then another block
    chunk = list(range(width * block_size - 12, width * block_size - 1))  # 11 rows: a group of 8, then 3
    lens = torch.tensor([5, *chunk, chunk[-1] + 1, 3])  # a decode row first; the next-to-last row shares the
    tables = torch.stack([other_table, *[chunk_table] * len(chunk), other_table, chunk_table])  # prefix only
    q = torch.randn(len(lens), heads, head_dim, generator=g)
    got = native.paged_decode(q, k_cache, v_cache, tables, lens, head_dim**-0.5)
    torch.testing.assert_close(got, dense_attention(q, k_cache, v_cache, tables, lens), atol=2e-5, rtol=1e-4)


@needs_native
def test_paged_decode_refuses_lengths_beyond_the_table() -> None:
    assert native is not None
    k_cache, v_cache = torch.zeros(1, 4, 8, 4), torch.zeros(1, 4, 4, 8)
    tables, q = torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, 8)
    with pytest.raises(RuntimeError, match=r"lengths must be in 1\.\.8"):
        native.paged_decode(q, k_cache, v_cache, tables, torch.tensor([9]), 1.0)
    with pytest.raises(RuntimeError, match="k_cache must be"):
        native.paged_decode(q, k_cache, k_cache, tables, torch.tensor([3]), 1.0)


@needs_native
def test_bfloat16_model_gives_the_same_logits_with_or_without_the_kernels(tiny_dir: Path) -> None:
    loaded = load(tiny_dir, max_seq_len=512, dtype=torch.bfloat16)
    prompts = [loaded.tokenizer.encode(text) for text in ["One", "Two prompts", "And a third one"]]
    linears = [m for m in loaded.model.modules() if isinstance(m, Linear)]
    assert all(m.packed is not None or m.few_rows is not None for m in linears)
    attentions = [m for m in loaded.model.modules() if isinstance(m, Attention)]
    assert all(m.paged_decode is not None for m in attentions)
    with_kernel = decode_logits(loaded, prompts, steps=5)
    for m in linears:  # what the model does where the kernels could not be built
        m.few_rows = m.packed = None
        m.weight_f32 = m.weight.detach().float()
    for a in attentions:
        a.paged_decode = None
    without = decode_logits(loaded, prompts, steps=5)
    for a, b in zip(with_kernel, without, strict=True):
        # bf16 rounding of x in torch's path, float32 x in the kernel: close, not equal
        assert F.cosine_similarity(torch.stack(a), torch.stack(b), dim=-1).min() > 0.999


@needs_native
@pytest.mark.parametrize("rows", [1, 3, 8, 33])
@pytest.mark.parametrize("dim", [576, 17])
def test_rms_norm_and_silu_mul_match_torch(rows: int, dim: int) -> None:
    assert native is not None
    g = torch.Generator().manual_seed(rows + dim)
    x, w = torch.randn(rows, dim, generator=g) * 3, torch.randn(dim, generator=g)
    torch.testing.assert_close(native.rms_norm(x, w, 1e-5), F.rms_norm(x, (dim,), w, 1e-5))
    torch.testing.assert_close(native.rms_norm(x.t().contiguous().t(), w, 1e-5), F.rms_norm(x, (dim,), w, 1e-5))
    gate_up = torch.randn(rows, 2 * dim, generator=g) * 4
    gate, up = gate_up.split(dim, dim=-1)
    torch.testing.assert_close(native.silu_mul(gate_up), F.silu(gate) * up)
    with pytest.raises(RuntimeError, match=f"w has {dim + 1} values, x {dim} columns"):
        native.rms_norm(x, torch.ones(dim + 1), 1e-5)


@pytest.mark.skipif(CROSS is None, reason="no aarch64 cross compiler here (.ci/run installs g++-aarch64-linux-gnu)")
@pytest.mark.skipif(kernels.cpu.cap() is not None, reason="same sources under BLAZE_CPU_ISA: checked uncapped")
def test_every_kernel_source_compiles_for_arm64() -> None:
    """x86 intrinsics stay behind their checks: on aarch64 the portable paths build (a syntax and
    type check of each file with torch's headers, by Debian's cross compiler; ~15 s a file)."""
    from torch.utils.cpp_extension import include_paths

    assert CROSS is not None
    headers = [f"-isystem{p}" for p in [*include_paths(), sysconfig.get_paths()["include"]]]
    command = [CROSS, "-std=c++17", "-fopenmp", "-fsyntax-only", "-DTORCH_EXTENSION_NAME=blaze", *headers]
    builds = {s.name: subprocess.Popen([*command, str(s)], stderr=subprocess.PIPE, text=True) for s in kernels.SOURCES}
    for name, build in builds.items():
        _, errors = build.communicate(timeout=600)
        assert build.returncode == 0, f"{name}:\n{errors[-3000:]}"


@needs_native
def test_a_built_cache_loads_without_writing_to_it(tmp_path: Path) -> None:
    """An image's cache, built as root and read by another user, is loaded as it is: torch's
    builder would first write a lock file beside it (and fail where it cannot)."""
    name = kernels.build_name(kernels.cpu.isa())
    copy = tmp_path / "blazerpc" / name
    shutil.copytree(kernels.build_root() / name, copy)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in copy.iterdir())
    code = "from blazerpc.llm import kernels; print(kernels.status(), kernels.native().rms_norm is not None)"
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.split() == ["native", "True"], done.stderr[-2000:]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in copy.iterdir()) == before
