"""The CPU's instruction-set class: detected once, never assumed, and capped by ``BLAZE_CPU_ISA``.

Plain Python (no torch): the server process reads it too, and ``apply_cap`` must run before
torch loads. Each class has every instruction of the one before it:

- ``portable``: plain C++ loops (any CPU; aarch64 today);
- ``avx2``: AVX2, FMA and F16C (AMD Zen 1-3, most Intel client chips, many cloud types);
- ``avx512``: AVX-512 F, BW, VL, DQ and VNNI (Intel since Cascade Lake, AMD Zen 4);
- ``avx512_bf16``: AVX-512 BF16 too (Intel Cooper Lake, AMD Zen 4 and 5);
- ``amx``: AMX tiles for bfloat16 too (Intel Sapphire Rapids and later), which oneDNN's
  products use: 2-5x our AVX-512 BF16 kernel from 16 rows up.

``BLAZE_CPU_ISA=avx2`` (or ``portable``, ``avx512``, ``avx512_bf16``) makes a bigger CPU run as that class:
our kernels' build and paths, bfloat16 detection and ``--dtype/--weights auto`` follow it,
and so do torch's own dispatch, oneDNN's and MKL's, through ``ATEN_CPU_CAPABILITY``,
``ONEDNN_MAX_CPU_ISA`` and ``MKL_ENABLE_INSTRUCTIONS`` (read when torch loads: ``apply_cap``
sets them). The
suite runs the LLM tests both ways on an AVX-512 machine with it (docs/llm.md).
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

CLASSES = ("portable", "avx2", "avx512", "avx512_bf16", "amx")
# /proc/cpuinfo's names for what each class adds to the one before it
REQUIRED = {
    "avx2": frozenset({"avx2", "fma", "f16c"}),
    "avx512": frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"}),
    "avx512_bf16": frozenset({"avx512_bf16"}),
    "amx": frozenset({"amx_tile", "amx_bf16"}),
}
# What torch's dispatch, oneDNN and MKL (torch's float32 matrix products) are capped to per class
TORCH_CAPS = {
    "portable": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx512": {
        "ATEN_CPU_CAPABILITY": "avx512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI",
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
    },
    "avx512_bf16": {
        "ATEN_CPU_CAPABILITY": "avx512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16",
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
    },
}
CAP_VARIABLE = "BLAZE_CPU_ISA"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first processor's feature flags (x86 Linux); empty where there is no such list."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not cpuinfo.exists():
        return frozenset()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def class_of(flags: frozenset[str]) -> str:
    """The biggest class all of whose instructions ``flags`` has."""
    found = "portable"
    for name in CLASSES[1:]:
        if not REQUIRED[name] <= flags:
            break
        found = name
    return found


def cap() -> str | None:
    """The class ``BLAZE_CPU_ISA`` asks for, or None; ``ValueError`` naming the choices if unknown."""
    value = os.environ.get(CAP_VARIABLE, "").strip().lower()
    if not value or value == "native":
        return None
    if value not in CLASSES:
        raise ValueError(f"{CAP_VARIABLE}={value!r}: expected one of native, {', '.join(CLASSES)}")
    return value


@functools.cache
def detected() -> str:
    """What this CPU has, before any cap."""
    return class_of(cpu_flags())


@functools.cache
def isa() -> str:
    """The class the engine runs as: what the CPU has, capped by ``BLAZE_CPU_ISA``."""
    capped = cap()
    if capped is None:
        return detected()
    return min(detected(), capped, key=CLASSES.index)


def at_least(name: str) -> bool:
    """Whether the engine may use the instructions of class ``name``."""
    return CLASSES.index(isa()) >= CLASSES.index(name)


def missing(name: str) -> list[str]:
    """The instructions of ``name`` and the classes below it that this CPU lacks (sorted)."""
    flags = cpu_flags()
    needed = set().union(*(REQUIRED[c] for c in CLASSES[1 : CLASSES.index(name) + 1]))
    return sorted(needed - flags)


def apply_cap() -> None:
    """Cap torch's dispatch, oneDNN and MKL to ``BLAZE_CPU_ISA`` for this process and its children.

    They read their variables when torch loads, so call this before (the engine process's
    entry does; so does the test suite's conftest). A variable already set is left alone.
    """
    capped = cap()
    if capped is None or capped not in TORCH_CAPS:
        return
    for name, value in TORCH_CAPS[capped].items():
        os.environ.setdefault(name, value)


def describe() -> str:
    """One line for logs: the class and, when capped, what the CPU has."""
    return isa() if isa() == detected() else f"{isa()} (capped by {CAP_VARIABLE}; the CPU has {detected()})"
