"""Which device and dtype the engine runs on, decided where torch is loaded (the engine process)."""

from __future__ import annotations

import torch

from .config import EngineConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def native_bf16(device: str) -> bool:
    """Whether the hardware multiplies bfloat16 natively (AVX512-BF16 or AMX on CPU)."""
    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence getattr
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def torch_device(config: EngineConfig) -> str:
    if config.device != "auto":
        return config.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(config: EngineConfig) -> torch.dtype:
    if config.dtype == "auto":
        return torch.bfloat16 if native_bf16(torch_device(config)) else torch.float32
    return DTYPES[config.dtype]
