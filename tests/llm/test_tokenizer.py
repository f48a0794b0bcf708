from __future__ import annotations

import json
from pathlib import Path

from blazerpc.llm.tokenizer import LlamaTokenizer

GOLDEN = json.loads((Path(__file__).parent / "golden_smollm2.json").read_text())


def test_gguf_tokenizer_matches_the_reference_on_chat_prompts(default_tokenizer: LlamaTokenizer) -> None:
    for case in GOLDEN["cases"]:
        text = default_tokenizer.apply_chat_template([{"role": "user", "content": case["prompt"]}])
        assert text == case["chat_text"]
        assert default_tokenizer.encode(text) == case["prompt_ids"]


def test_digits_are_split_one_by_one_and_special_tokens_are_single(default_tokenizer: LlamaTokenizer) -> None:
    ids = default_tokenizer.encode("2024")
    assert len(ids) == 4
    assert default_tokenizer.encode("<|im_start|>") == [1]
    assert default_tokenizer.eos_ids >= {2}


def test_round_trip_of_unicode_and_whitespace(default_tokenizer: LlamaTokenizer) -> None:
    for text in ["héllo wörld", "emoji 😀👍🏽 and 中文", "  two  spaces\n\nand tabs\t", "naïve café"]:
        assert default_tokenizer.decode(default_tokenizer.encode(text)) == text


def test_stream_decoder_never_splits_a_character(default_tokenizer: LlamaTokenizer) -> None:
    text = "Emoji 😀👍🏽 then 中文 and é"
    ids = default_tokenizer.encode(text)
    decoder = default_tokenizer.stream_decoder()
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert any(p == "" for p in pieces)  # a byte-level piece that waited for the rest of its character
