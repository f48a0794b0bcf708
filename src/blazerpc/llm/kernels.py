"""Native CPU kernels (``kernels.cpp``), compiled on first use by torch's extension builder.

The build (~25 s, once; cached under ``~/.cache/torch_extensions``) needs a C++ compiler and
ninja. Without them, or with ``BLAZE_NATIVE_KERNELS=0``, ``native()`` is None and the model
uses torch's own kernels. ``python -m blazerpc.llm.kernels`` builds ahead of time.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.cpp")
# Instruction sets by torch's CPU capability. The build is cached per source and flags, so a
# cache carried over to a CPU without these instructions is never loaded there.
ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}

# paged_decode(q, k_cache, v_cache, tables, lens, scale): see kernels.cpp
PagedDecode = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, float], Tensor]


@functools.cache
def native() -> ModuleType | None:
    """The compiled module (``few_rows_linear``, ``paged_decode``), or None where it cannot be built."""
    if os.environ.get("BLAZE_NATIVE_KERNELS", "1") == "0":
        return None
    flags = ["-O3", "-ffast-math", "-fopenmp", *ISA_FLAGS.get(torch.backends.cpu.get_cpu_capability(), [])]
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(flags).encode()).hexdigest()[:12]
    try:
        from torch.utils.cpp_extension import load

        module: ModuleType = load(f"blaze_kernels_{digest}", [str(SOURCE)], extra_cflags=flags)
    except Exception as exc:  # no compiler, no ninja, a build error: torch's kernels still work
        log.warning("native kernels not built (%s: %s); using torch's", type(exc).__name__, exc)
        return None
    return module


if __name__ == "__main__":
    print("native kernels:", "ready" if native() is not None else "unavailable (see the warning above)")
