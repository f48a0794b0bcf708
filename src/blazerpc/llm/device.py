"""Which device and dtype the engine runs on, decided where torch is loaded (the engine process)."""

from __future__ import annotations

import torch

from . import cpu
from .config import EngineConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def native_bf16(device: str) -> bool:
    """Whether the hardware multiplies bfloat16 natively (AVX512-BF16 on CPU, as ``cpu.isa()`` says)."""
    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    return cpu.at_least("avx512_bf16")


def torch_device(config: EngineConfig) -> str:
    if config.device != "auto":
        return config.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def weight_format(config: EngineConfig) -> str:
    """``full``, ``int8`` or ``int4``: what ``auto`` means here (see ``quant``, docs/llm.md).

    Quantized weights need the native kernels on a CPU with AVX2 at least; ``auto`` takes int4
    there (the fastest, and accurate enough: docs/llm.md), full weights elsewhere and with
    ``dtype="float32"`` (asked for to match the reference exactly).
    """
    from . import kernels, quant

    usable = torch_device(config) == "cpu" and kernels.native() is not None and quant.best_isa() > 0
    if config.weights == "auto":
        return "int4" if usable and config.dtype != "float32" else "full"
    if config.weights != "full" and not usable:
        raise ValueError(
            f"--weights {config.weights} needs the native kernels on a CPU with AVX2 (device: {torch_device(config)})"
        )
    return config.weights


def torch_dtype(config: EngineConfig) -> torch.dtype:
    if config.dtype == "auto":
        return torch.bfloat16 if native_bf16(torch_device(config)) else torch.float32
    return DTYPES[config.dtype]
