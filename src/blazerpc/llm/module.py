"""``Module``: torch's ``nn.Module`` whose call runs ``forward`` straight away.

``nn.Module.__call__`` looks for hooks, tracing and compilation state on every call: ~2 us. A
decode step of the default model makes ~270 module calls and takes ~5 ms at one stream, so
that bookkeeping was 5-10% of it. The engine's modules register no hooks, so they skip it.

Submodules are kept in the instance's ``__dict__`` too (torch keeps them only in ``_modules``),
so ``self.attention`` is a plain attribute read, not a call of ``nn.Module.__getattr__``: ~240
such calls a step, ~0.3 ms of a one-stream step under cProfile. Parameters and buffers stay in
torch's dicts only: its ``_apply`` (``.to()``, ``.cuda()``) replaces buffers there.
"""

from __future__ import annotations

from typing import Any

from torch import nn


class Module(nn.Module):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        submodules = self.__dict__.get("_modules", {})
        if name in submodules:  # set (or set to None) as a submodule: mirror what torch holds
            self.__dict__[name] = submodules[name]

    def __delattr__(self, name: str) -> None:
        super().__delattr__(name)
        self.__dict__.pop(name, None)
