"""Native CPU kernels (``kernels.cpp`` and the files it binds), built on first use.

Torch's extension builder compiles them (~60 s, once; cached under
``~/.cache/torch_extensions/blazerpc``); that needs a C++ compiler and ninja. Without them, or
with ``BLAZE_NATIVE_KERNELS=0``, ``native()`` is None and the model
uses torch's own kernels. ``python -m blazerpc.llm.kernels`` builds ahead of time.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

log = logging.getLogger(__name__)

NAMES = ("kernels.cpp", "packed_linear.cpp", "paged_attention.cpp", "quant.cpp")
SOURCES = [Path(__file__).with_name(name) for name in NAMES]
STALE_LOCK_S = 600  # a build takes ~25-40 s
# Instruction sets by torch's CPU capability. The build is cached per source and flags, so a
# cache carried over to a CPU without these instructions is never loaded there.
ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}

# paged_decode(q, k_cache, v_cache, tables, lens, scale): see paged_attention.cpp
PagedDecode = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, float], Tensor]


@functools.cache
def native() -> ModuleType | None:
    """The compiled module (the three files' functions), or None where it cannot be built."""
    if os.environ.get("BLAZE_NATIVE_KERNELS", "1") == "0":
        return None
    flags = ["-O3", "-ffast-math", "-fopenmp", *ISA_FLAGS.get(torch.backends.cpu.get_cpu_capability(), [])]
    digest = hashlib.sha256(b"".join(s.read_bytes() for s in SOURCES) + " ".join(flags).encode())
    name = "blaze_kernels_" + digest.hexdigest()[:12]
    build = build_root() / name
    build.mkdir(parents=True, exist_ok=True)
    lock = build / "lock"  # torch waits for it without end; a build killed midway leaves it behind
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
        log.warning("removing %s, left by a build that did not finish", lock)
        lock.unlink(missing_ok=True)
    if not (build / f"{name}.so").exists():
        log.warning("building the native kernels in %s (once, ~30 s)", build)
    try:
        from torch.utils.cpp_extension import load

        module: ModuleType = load(name, [str(s) for s in SOURCES], extra_cflags=flags, build_directory=str(build))
    except Exception as exc:  # no compiler, no ninja, a build error: torch's kernels still work
        log.warning("native kernels not built (%s: %s); using torch's", type(exc).__name__, exc)
        return None
    return module


def build_root() -> Path:
    """Where builds are cached: torch's own place (``TORCH_EXTENSIONS_DIR`` or ~/.cache/torch_extensions)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(root) / "blazerpc"


if __name__ == "__main__":
    print("native kernels:", "ready" if native() is not None else "unavailable (see the warning above)")
