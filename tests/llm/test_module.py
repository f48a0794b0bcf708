from __future__ import annotations

import pytest
import torch

from blazerpc.llm.module import Module


class Doubler(Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor, *, plus: float = 0.0) -> torch.Tensor:
        return x * self.scale + plus


def test_calling_a_module_runs_its_forward_with_its_arguments_and_skips_hooks() -> None:
    doubler = Doubler()
    seen = []
    doubler.register_forward_hook(lambda *args: seen.append(args))
    assert torch.equal(doubler(torch.tensor([1.0, 3.0]), plus=1.0), torch.tensor([3.0, 7.0]))
    assert seen == []  # hooks are what it skips: the engine registers none
    assert [name for name, _ in doubler.named_parameters()] == ["scale"]  # still a torch module


class Pair(Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = Doubler()
        self.second: Doubler | None = Doubler()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.second is not None
        return self.second(self.first(x))


def test_submodules_are_plain_attributes_that_follow_torchs_registry() -> None:
    pair = Pair()
    assert pair.__dict__["first"] is pair._modules["first"]  # read without nn.Module.__getattr__
    assert torch.equal(pair(torch.tensor([1.0])), torch.tensor([4.0]))
    replacement = Doubler()
    pair.first = replacement
    assert pair.first is replacement and pair._modules["first"] is replacement
    pair.second = None
    assert pair.second is None and pair._modules["second"] is None
    del pair.first
    assert "first" not in pair._modules
    with pytest.raises(AttributeError):
        pair.first  # noqa: B018
    assert [name for name, _ in pair.named_modules()] == [""]  # "second" is None: torch skips it
