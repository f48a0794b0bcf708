"""``Module``: torch's ``nn.Module`` whose call runs ``forward`` straight away.

``nn.Module.__call__`` looks for hooks, tracing and compilation state on every call: ~2 us. A
decode step of the default model makes ~270 module calls and takes ~5 ms at one stream, so
that bookkeeping was 5-10% of it. The engine's modules register no hooks, so they skip it.
"""

from __future__ import annotations

from typing import Any

from torch import nn


class Module(nn.Module):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)
