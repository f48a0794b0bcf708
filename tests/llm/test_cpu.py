"""CPU classes: detection from the flags, the BLAZE_CPU_ISA cap, and what it caps for torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blazerpc.llm import cpu

ZEN2 = "fpu sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand avx2 bmi1 bmi2 sha_ni"
ZEN4 = ZEN2 + " avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vnni"
CASCADE_LAKE = ZEN2 + " avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"
SAPPHIRE_RAPIDS = ZEN4 + " amx_bf16 avx512_fp16 amx_tile amx_int8"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(ZEN2, "avx2"), (ZEN4, "avx512_bf16"), (CASCADE_LAKE, "avx512"), (SAPPHIRE_RAPIDS, "amx"),
     ("fpu sse sse2 avx", "portable"),
     (ZEN2.replace(" f16c", ""), "portable"), (ZEN4.replace(" avx512_vnni", ""), "avx2")],
)  # fmt: skip
def test_class_of_takes_the_biggest_class_whose_every_instruction_is_there(flags: str, expected: str) -> None:
    assert cpu.class_of(frozenset(flags.split())) == expected


def test_cpu_flags_read_the_first_processor_of_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {ZEN2}\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    flags = cpu.cpu_flags(info)
    if cpu.platform.machine().lower() in ("x86_64", "amd64"):
        assert "avx2" in flags and "fpu" in flags and cpu.class_of(flags) == "avx2"
    else:  # aarch64: /proc/cpuinfo lists "Features", never x86 flags
        assert flags == frozenset()
    assert cpu.cpu_flags(tmp_path / "missing") == frozenset()


def test_this_cpu_is_detected_from_its_own_flags() -> None:
    assert cpu.detected() == cpu.class_of(cpu.cpu_flags())
    assert cpu.CLASSES.index(cpu.isa()) <= cpu.CLASSES.index(cpu.detected())  # a cap only lowers it


def run(code: str, **env: str) -> str:
    """``code`` in a fresh interpreter (the class and torch's caps are read once a process)."""
    clean = {k: v for k, v in os.environ.items() if k not in cpu.TORCH_CAPS["avx2"] and k != cpu.CAP_VARIABLE}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_the_cap_lowers_the_class_and_never_raises_it() -> None:
    code = "from blazerpc.llm import cpu; print(cpu.isa(), cpu.at_least('avx2'), cpu.at_least('avx512'))"
    assert run(code, BLAZE_CPU_ISA="portable") == "portable False False"
    rank = cpu.CLASSES.index(cpu.detected())
    native = f"{cpu.detected()} {rank >= cpu.CLASSES.index('avx2')} {rank >= cpu.CLASSES.index('avx512')}"
    assert run(code, BLAZE_CPU_ISA="native") == native
    capped_up = run("from blazerpc.llm import cpu; print(cpu.isa())", BLAZE_CPU_ISA="amx")
    assert capped_up == cpu.detected()  # asking for more than the CPU has gives what it has


def test_an_unknown_cap_is_refused_with_the_choices() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from blazerpc.llm import cpu; cpu.isa()"],
        env={**os.environ, "BLAZE_CPU_ISA": "sse9"}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "BLAZE_CPU_ISA='sse9': expected one of native, portable, avx2, avx512, avx512_bf16, amx" in done.stderr


@pytest.mark.skipif(cpu.detected() in ("portable", "avx2"), reason="needs a CPU with more than AVX2 to cap")
def test_capped_to_avx2_torch_onednn_and_mkl_run_as_on_an_avx2_cpu() -> None:
    code = (
        "from blazerpc.llm import cpu; cpu.apply_cap(); import os, torch; "
        "print(torch.backends.cpu.get_cpu_capability(), os.environ['ONEDNN_MAX_CPU_ISA'], "
        "os.environ['MKL_ENABLE_INSTRUCTIONS'], cpu.describe())"
    )
    capability, onednn, mkl, described = run(code, BLAZE_CPU_ISA="avx2").split(" ", 3)
    assert (capability, onednn, mkl) == ("AVX2", "AVX2", "AVX2")
    assert described == f"avx2 (capped by BLAZE_CPU_ISA; the CPU has {cpu.detected()})"
    uncapped = "from blazerpc.llm import cpu; cpu.apply_cap(); import torch; "
    uncapped += "print(torch.backends.cpu.get_cpu_capability())"
    assert run(uncapped, BLAZE_CPU_ISA="native") == "AVX512"


def test_this_process_runs_as_the_cap_says() -> None:
    """The suite's conftest applies the cap before torch loads (make test's AVX2 run relies on it)."""
    expected = {"avx2": "AVX2", "avx512": "AVX512"}.get(cpu.cap() or "")
    assert expected is None or torch.backends.cpu.get_cpu_capability() == expected
