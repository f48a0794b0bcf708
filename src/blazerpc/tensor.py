"""Tensor annotations: ``TensorInput[np.float32, "batch", 4]`` and ``TensorOutput[...]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt

from .errors import InvalidArgument

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    """Dtype and dims of a tensor; an ``int`` dim is fixed, a ``str`` dim is named and free."""

    dtype: np.dtype[Any]
    dims: tuple[Dim, ...]

    @property
    def batched(self) -> bool:
        """True when the leading dim is the named ``"batch"`` dimension."""
        return bool(self.dims) and self.dims[0] == "batch"

    def check(self, array: npt.NDArray[Any], name: str) -> None:
        """Raise InvalidArgument unless ``array`` has this dtype, rank and fixed dims, and finite floats."""
        if array.dtype != self.dtype:
            raise InvalidArgument(f"{name}: expected dtype {self.dtype.name}, got {array.dtype.name}")
        if array.ndim != len(self.dims):
            raise InvalidArgument(
                f"{name}: expected {len(self.dims)} dims {self.describe()}, got shape {list(array.shape)}"
            )
        for axis, (want, got) in enumerate(zip(self.dims, array.shape, strict=True)):
            if isinstance(want, int) and want != got:
                raise InvalidArgument(
                    f"{name}: dim {axis} must be {want} {self.describe()}, got shape {list(array.shape)}"
                )
        # NaN and inf in an input are nearly always a client bug (or a JSON 1e39 cast to float32),
        # and a model would answer them with NaN; both transports refuse them alike.
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            raise InvalidArgument(f"{name}: values must be finite {self.dtype.name} numbers")

    def describe(self) -> str:
        return "[" + ", ".join(str(d) for d in self.dims) + "]"


def _spec(params: Any) -> TensorSpec:
    if not isinstance(params, tuple):
        params = (params,)
    dtype, *dims = params
    for d in dims:
        if not isinstance(d, (int, str)) or isinstance(d, bool):
            raise TypeError(f"tensor dims must be int or str, got {d!r}")
    return TensorSpec(np.dtype(dtype), tuple(dims))


class TensorInput:
    """``TensorInput[np.float32, "batch", 4]``: a numpy array parameter."""

    def __class_getitem__(cls, params: Any) -> Any:
        return Annotated[np.ndarray, _spec(params)]


class TensorOutput:
    """``TensorOutput[np.float32, "batch", 3]``: a numpy array result."""

    def __class_getitem__(cls, params: Any) -> Any:
        return Annotated[np.ndarray, _spec(params)]
