"""Tokenizer from GGUF metadata or ``tokenizer.json``, streaming detokenisation, chat template."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

CONTROL = 3  # llama.cpp's token_type for special tokens


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the byte-level BPE alphabet back to bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class LlamaTokenizer:
    """Byte-level BPE (GPT-2 style), as SmolLM and Llama 3 use."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        bos_id: int | None,
        eos_ids: set[int],
        chat_template: str | None,
        add_bos: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.bos_id = bos_id
        self.eos_ids = eos_ids
        self.chat_template = chat_template
        self.add_bos = add_bos
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
        to_byte = _unicode_to_byte()
        self.token_bytes: list[bytes] = []
        for i in range(self.vocab_size):
            piece = tokenizer.id_to_token(i) or ""
            if piece in special or any(c not in to_byte for c in piece):
                self.token_bytes.append(b"" if piece in special else piece.encode())
            else:
                self.token_bytes.append(bytes(to_byte[c] for c in piece))

    @classmethod
    def from_gguf_metadata(cls, meta: dict[str, Any]) -> LlamaTokenizer:
        kind = meta.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise ValueError(f"tokenizer model {kind!r} is not supported (only byte-level BPE, 'gpt2')")
        tokens: list[str] = meta["tokenizer.ggml.tokens"]
        types: list[int] = meta.get("tokenizer.ggml.token_type", [1] * len(tokens))
        merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
        bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False)
        tok = Tokenizer(bpe)
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if meta.get("tokenizer.ggml.pre") in ("smollm", "starcoder", "refact"):
            # these split digits one by one before the byte-level regex
            tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        else:
            tok.pre_tokenizer = byte_level
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types, strict=True) if k == CONTROL]
        )
        eos = meta.get("tokenizer.ggml.eos_token_id")
        eos_ids = {eos} if eos is not None else set()
        if "<|endoftext|>" in tok.get_vocab():
            eos_ids.add(tok.token_to_id("<|endoftext|>"))
        return cls(
            tok,
            meta.get("tokenizer.ggml.bos_token_id"),
            eos_ids,
            meta.get("tokenizer.chat_template"),
            bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        )

    @classmethod
    def from_hf_dir(cls, path: Path) -> LlamaTokenizer:
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        config: dict[str, Any] = {}
        if (path / "tokenizer_config.json").exists():
            config = json.loads((path / "tokenizer_config.json").read_text())
        gen: dict[str, Any] = {}
        if (path / "generation_config.json").exists():
            gen = json.loads((path / "generation_config.json").read_text())

        def token_id(value: Any) -> int | None:
            if isinstance(value, dict):
                value = value.get("content")
            return tok.token_to_id(value) if isinstance(value, str) else None

        eos = gen.get("eos_token_id", token_id(config.get("eos_token")))
        eos_ids = set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set())
        return cls(tok, token_id(config.get("bos_token")), eos_ids, config.get("chat_template"), False)

    def encode(self, text: str) -> list[int]:
        # encode_batch releases the GIL while it works (encode does not): a thread tokenizing a
        # long prompt leaves the event loop free.
        ids: list[int] = self.tokenizer.encode_batch([text], add_special_tokens=False)[0].ids
        if self.add_bos and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self.token_bytes[i] for i in ids).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        if not self.chat_template:
            raise ValueError("this model has no chat template")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return env.from_string(self.chat_template).render(messages=messages, add_generation_prompt=True)

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self.token_bytes)


class StreamDecoder:
    """Turns token ids into text one token at a time, never splitting a UTF-8 character.

    The concatenation of what ``push`` returns equals ``decode`` of all ids: bytes of an
    incomplete character wait for the tokens that complete it.
    """

    def __init__(self, token_bytes: list[bytes]) -> None:
        self.token_bytes = token_bytes
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return str(self.decoder.decode(self.token_bytes[token_id]))

    def flush(self) -> str:
        return str(self.decoder.decode(b"", final=True))
