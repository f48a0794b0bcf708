"""Native CPU kernels (``kernels.cpp`` and the files it binds), built on first use.

Torch's extension builder compiles them (~60 s, once per CPU class; cached under
``~/.cache/torch_extensions/blazerpc``, or a per-user temporary folder where that cannot be
written); that needs a C++ compiler and ninja. They are compiled for the CPU class the engine
runs as (``cpu.isa()``), so one cache holds a build per class and a machine of another class
never loads a build it cannot run. Without a compiler, or with ``BLAZE_NATIVE_KERNELS=0``,
``native()`` is None and the model uses torch's own kernels (``status()`` says why).
``python -m blazerpc.llm.kernels`` builds ahead of time.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from torch import Tensor

from . import cpu

log = logging.getLogger(__name__)

NAMES = ("kernels.cpp", "packed_linear.cpp", "paged_attention.cpp", "quant.cpp")
SOURCES = [Path(__file__).with_name(name) for name in NAMES]
HEADERS = [Path(__file__).with_name("simd.h")]
STALE_LOCK_S = 600  # a build takes ~25-40 s
# Compiler flags by CPU class (cpu.CLASSES): the files' #ifdef paths follow them. Kernels with
# instructions beyond these (packed_linear's bf16, quant's VNNI) carry target attributes and
# are only called where cpu.isa() says the CPU has them.
ISA_FLAGS = {
    "portable": [],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-mavx2", "-mfma", "-mf16c"],
}
ISA_FLAGS["avx512_bf16"] = ISA_FLAGS["amx"] = ISA_FLAGS["avx512"]

# paged_decode(q, k_cache, v_cache, tables, lens, scale): see paged_attention.cpp
PagedDecode = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, float], Tensor]


def native() -> ModuleType | None:
    """The compiled module (the four files' functions), or None where it cannot be built."""
    return _build(cpu.isa())[0]


def status() -> str:
    """How the kernels stand, for the start-up banner: ``native`` or why torch's ops run instead."""
    return _build(cpu.isa())[1]


@functools.cache
def _build(isa: str) -> tuple[ModuleType | None, str]:
    if os.environ.get("BLAZE_NATIVE_KERNELS", "1") == "0":
        return None, "torch's ops (BLAZE_NATIVE_KERNELS=0)"
    try:
        name, flags = build_name(isa), _flags(isa)
        built = build_root() / name / f"{name}.so"
        if built.exists():  # loaded as it is: torch's builder would want to write a lock file beside it
            return _load_built(name, built), "native"
        build = _build_dir(name)
        lock = build / "lock"  # torch waits for it without end; a build killed midway leaves it behind
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            log.warning("removing %s, left by a build that did not finish", lock)
            lock.unlink(missing_ok=True)
        if not (build / f"{name}.so").exists():
            log.warning("building the native kernels for %s in %s (once, ~30 s)", isa, build)
        from torch.utils.cpp_extension import load

        module: ModuleType = load(name, [str(s) for s in SOURCES], extra_cflags=flags, build_directory=str(build))
    except Exception as exc:  # no sources, no compiler, no ninja, a build error: torch's kernels still work
        why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        log.warning("native kernels not built (%s); using torch's ops", why)
        return None, f"torch's ops (native kernels not built: {why[:200]})"
    return module, "native"


def _flags(isa: str) -> list[str]:
    return ["-O3", "-ffast-math", "-fopenmp", *ISA_FLAGS[isa]]


def build_name(isa: str) -> str:
    """The build's name: its class and a digest of the sources and flags (a change builds anew)."""
    digest = hashlib.sha256(b"".join(s.read_bytes() for s in SOURCES + HEADERS) + " ".join(_flags(isa)).encode())
    return f"blaze_kernels_{isa}_{digest.hexdigest()[:12]}"


def build_root() -> Path:
    """Where builds are cached: torch's own place (``TORCH_EXTENSIONS_DIR`` or ~/.cache/torch_extensions)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(root) / "blazerpc"


def _load_built(name: str, path: Path) -> ModuleType:
    import torch  # noqa: F401  (the module links against torch's libraries)

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build_dir(name: str) -> Path:
    """``build_root() / name``, or the same under a per-user temporary folder where that cannot be
    written (an image's cache, built as root, run as another user on a CPU of another class)."""
    build = build_root() / name
    try:
        build.mkdir(parents=True, exist_ok=True)
        if os.access(build, os.W_OK):
            return build
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"blazerpc-kernels-{os.getuid()}" / name
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def prebuild() -> None:
    """Build for this CPU's class and, where it has more, for AVX2 too: the class an image or a
    cache may meet next, and the one the test suite also runs as (``BLAZE_CPU_ISA=avx2``)."""
    for isa in [cpu.isa(), *(["avx2"] if cpu.at_least("avx512") else [])]:
        print(f"native kernels for {isa}: {_build(isa)[1]}")


if __name__ == "__main__":
    prebuild()
