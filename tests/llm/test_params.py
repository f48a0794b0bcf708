"""``SamplingParams``: validated on construction, each error naming its field."""

from __future__ import annotations

import math
import sys

import pytest

from blazerpc.llm.params import MAX_STOP_CHARS, MAX_STOP_STRINGS, SEED_RANGE, InvalidParam, SamplingParams


def test_params_validate_and_name_the_field() -> None:
    for bad, param in [({"max_tokens": 0}, "max_tokens"), ({"temperature": -1}, "temperature"),
                       ({"temperature": math.nan}, "temperature"), ({"top_p": 0}, "top_p"),
                       ({"top_p": math.inf}, "top_p"), ({"top_k": -1}, "top_k"), ({"stop": ("",)}, "stop"),
                       ({"seed": 2**64}, "seed"), ({"seed": -(2**63) - 1}, "seed")]:  # fmt: skip
        with pytest.raises(InvalidParam, match=param) as caught:
            SamplingParams(**bad)  # type: ignore[arg-type]
        assert caught.value.param == param and isinstance(caught.value, ValueError)


def test_stop_is_capped_in_count_and_length() -> None:
    assert (MAX_STOP_STRINGS, MAX_STOP_CHARS) == (16, 256)
    assert len(SamplingParams(stop=("x" * 256,) * 16).stop) == 16
    for stop, message in [
        (("a",) * 17, "stop takes at most 16 strings, got 17"),
        (("a",) * 100_000, "stop takes at most 16 strings, got 100000"),
        (("ok", "x" * 257), "stop strings must be at most 256 characters, got 257"),
        (("",), "stop strings must not be empty"),
    ]:
        with pytest.raises(InvalidParam) as caught:
            SamplingParams(stop=stop)
        assert caught.value.param == "stop" and str(caught.value) == message


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
