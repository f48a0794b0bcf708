from __future__ import annotations

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
