"""``SamplingParams``: validated on construction, each error naming its field."""

from __future__ import annotations

import math
import sys

import pytest

from blazerpc.llm.params import SEED_RANGE, InvalidParam, SamplingParams


def test_params_validate_and_name_the_field() -> None:
    for bad, param in [({"max_tokens": 0}, "max_tokens"), ({"temperature": -1}, "temperature"),
                       ({"temperature": math.nan}, "temperature"), ({"top_p": 0}, "top_p"),
                       ({"top_p": math.inf}, "top_p"), ({"top_k": -1}, "top_k"), ({"stop": ("",)}, "stop"),
                       ({"seed": 2**64}, "seed"), ({"seed": -(2**63) - 1}, "seed")]:  # fmt: skip
        with pytest.raises(InvalidParam, match=param) as caught:
            SamplingParams(**bad)  # type: ignore[arg-type]
        assert caught.value.param == param and isinstance(caught.value, ValueError)


def test_params_take_seeds_across_the_generator_range() -> None:
    for seed in (SEED_RANGE[0], 0, sys.maxsize, SEED_RANGE[1]):
        assert SamplingParams(seed=seed).seed == seed


def test_params_are_built_by_keyword_only() -> None:
    with pytest.raises(TypeError):
        SamplingParams(16, 0.5)  # type: ignore[misc]


def test_params_import_without_torch() -> None:
    import subprocess

    code = "import sys, blazerpc.llm.params; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
