"""A small reader for GGUF v2/v3 files: metadata, tensor index, and tensors as float32.

The ``gguf`` package's reader takes ~9 s on the default model's metadata (its vocabulary and
merges are big string arrays); this one reads it in ~0.1 s from a memory map. Tensors are
dequantised with ``gguf.quants.dequantize`` (F32, F16, BF16, Q4_0, Q4_1, Q5_x, Q8_0, K-quants).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

MAGIC = b"GGUF"
_SCALARS = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}  # fmt: skip
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
STRING, ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order: the GGUF dims reversed, so (out, in) for a weight
    ggml_type: int
    offset: int  # from the start of the file


class GGUFFile:
    """Metadata and lazily dequantised tensors of one GGUF file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._pos = 0
        if self._read(4) != MAGIC:
            raise ValueError(f"{self.path} is not a GGUF file (bad magic)")
        (self.version,) = self._unpack("<I")
        if self.version not in (2, 3):
            raise ValueError(f"{self.path}: GGUF version {self.version} is not supported (only 2 and 3)")
        n_tensors, n_kv = self._unpack("<QQ")
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self._string()
            (value_type,) = self._unpack("<I")
            self.metadata[key] = self._value(value_type)
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            (n_dims,) = self._unpack("<I")
            dims = self._unpack(f"<{n_dims}Q")
            ggml_type, offset = self._unpack("<IQ")
            infos.append((name, tuple(reversed(dims)), ggml_type, offset))
        alignment = int(self.metadata.get("general.alignment", 32))
        data_start = -(-self._pos // alignment) * alignment
        self.tensors = {n: TensorInfo(n, s, t, data_start + o) for n, s, t, o in infos}

    def tensor(self, name: str) -> npt.NDArray[np.float32]:
        """The tensor ``name`` as a float32 array of its numpy shape."""
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
        from gguf.quants import dequantize

        info = self.tensors[name]
        qtype = GGMLQuantizationType(info.ggml_type)
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        n_elements = int(np.prod(info.shape))
        n_bytes = n_elements // block_size * type_size
        raw = np.frombuffer(self._map, dtype=np.uint8, count=n_bytes, offset=info.offset)
        row_bytes = info.shape[-1] // block_size * type_size
        values = dequantize(raw.reshape(-1, row_bytes), qtype)
        # own, writable memory: F32 tensors would otherwise be views of the memory map
        return np.require(values.reshape(info.shape), dtype=np.float32, requirements=["C", "W", "O"])

    def close(self) -> None:
        self._map.close()

    def _read(self, n: int) -> bytes:
        data = self._map[self._pos : self._pos + n]
        self._pos += n
        return data

    def _unpack(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        values = struct.unpack_from(fmt, self._map, self._pos)
        self._pos += size
        return values

    def _string(self) -> str:
        (n,) = struct.unpack_from("<Q", self._map, self._pos)
        start = self._pos + 8
        self._pos = start + n
        return self._map[start : start + n].decode("utf-8", errors="replace")

    def _value(self, value_type: int) -> Any:
        if value_type == STRING:
            return self._string()
        if value_type == ARRAY:
            item_type, count = self._unpack("<IQ")
            if item_type in _NUMPY:
                array = np.frombuffer(self._map, dtype=_NUMPY[item_type], count=count, offset=self._pos)
                self._pos += array.nbytes
                return array.tolist()
            return [self._value(item_type) for _ in range(count)]
        fmt, size = _SCALARS[value_type]
        (value,) = struct.unpack_from(fmt, self._map, self._pos)
        self._pos += size
        return value
