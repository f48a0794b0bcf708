from __future__ import annotations

import torch

from blazerpc.llm.params import SamplingParams
from blazerpc.llm.sampling import (
    StopChecker,
    argmax_rows,
    greedy,
    make_generator,
    sample,
    sample_rows,
    top_k_filter,
    top_p_filter,
)


def test_greedy_and_temperature_zero_pick_the_largest_logit() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert greedy(logits) == 1
    assert sample(logits, SamplingParams(temperature=0), None) == 1


def test_argmax_rows_matches_torch_and_takes_the_first_of_equal_values() -> None:
    logits = torch.randn(33, 49152, generator=torch.Generator().manual_seed(2))
    logits[3, [7, 900, 40000]] = 100.0  # ties: the first one wins
    logits[5] = 0.0
    logits[6, -1] = 50.0  # the very last column
    got = argmax_rows(logits)
    assert torch.equal(got, logits.argmax(dim=-1)) and got.dtype == torch.int64
    assert got[3] == 7 and got[5] == 0 and got[6] == 49151
    assert torch.equal(argmax_rows(logits[:, ::2]), logits[:, ::2].argmax(dim=-1))  # strided rows


def test_top_k_keeps_the_k_largest() -> None:
    out = top_k_filter(torch.tensor([1.0, 4.0, 3.0, 2.0]), 2)
    assert torch.isinf(out[[0, 3]]).all() and out[1] == 4.0 and out[2] == 3.0
    assert torch.equal(top_k_filter(torch.tensor([1.0, 2.0]), 0), torch.tensor([1.0, 2.0]))


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = ~torch.isinf(top_p_filter(logits, 0.7))
    assert kept.tolist() == [True, True, False, False]
    assert (~torch.isinf(top_p_filter(logits, 0.4))).tolist() == [True, False, False, False]


def test_same_seed_same_tokens_and_filters_are_respected() -> None:
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    params = SamplingParams(temperature=1.0, top_k=5, seed=42)
    first = [sample(logits, params, g) for g in [make_generator(params)] for _ in range(20)]
    second = [sample(logits, params, g) for g in [make_generator(params)] for _ in range(20)]
    assert first == second
    allowed = set(torch.topk(logits, 5).indices.tolist())
    assert set(first) <= allowed and len(set(first)) > 1


def test_sampled_frequencies_follow_the_softmax_at_the_temperature() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    params = SamplingParams(temperature=0.5, seed=7)
    generator = make_generator(params)
    draws = torch.tensor([sample(logits, params, generator) for _ in range(4000)])
    frequencies = torch.bincount(draws, minlength=4).float() / len(draws)
    torch.testing.assert_close(frequencies, torch.softmax(logits / 0.5, dim=-1), atol=0.02, rtol=0)


def test_a_row_samples_the_same_alone_or_among_other_rows() -> None:
    logits = torch.randn(6, 500, generator=torch.Generator().manual_seed(1))
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0.8, seed=3),
              SamplingParams(temperature=1.2, top_k=20, seed=4), SamplingParams(temperature=0.9, top_p=0.5, seed=5),
              SamplingParams(temperature=0), SamplingParams(temperature=0.7, seed=6)]  # fmt: skip
    together = sample_rows(logits, params, [make_generator(p) for p in params])
    alone = [sample(row, p, make_generator(p)) for row, p in zip(logits, params, strict=True)]
    assert together == alone
    assert together[0] == int(logits[0].argmax()) and together[4] == int(logits[4].argmax())


def test_stop_checker_never_emits_a_stop_string_or_its_prefix() -> None:
    stop = StopChecker(("END", "\n\n"))
    emitted = []
    for piece in ["Hello E", "N", "ough. E", "ND here"]:
        text, hit = stop.feed(piece)
        emitted.append(text)
        if hit:
            break
    assert "".join(emitted) == "Hello ENough. "
    assert emitted[0] == "Hello " and emitted[1] == ""  # "E", then "EN", held back
    assert hit
    free = StopChecker(())
    assert free.feed("abc") == ("abc", False)
    held = StopChecker(("xyz",))
    assert held.feed("abx") == ("ab", False) and held.flush() == "x"
