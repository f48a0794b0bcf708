"""Tokenizer from GGUF metadata or ``tokenizer.json``, streaming detokenisation, chat template."""

from __future__ import annotations

import codecs
import json
import re
import secrets
from collections.abc import Iterable
from functools import cached_property, lru_cache
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


class ChatPrompt(str):
    """A chat template's output: the text, and which spans of it are the template's own (their
    special-token markers are control tokens) and which are message text (always plain text)."""

    spans: tuple[tuple[str, bool], ...]  # (text, written by the template)

    def __new__(cls, spans: Iterable[tuple[str, bool]]) -> ChatPrompt:
        spans = tuple(spans)
        prompt = super().__new__(cls, "".join(text for text, _ in spans))
        prompt.spans = spans
        return prompt


class LlamaTokenizer:
    """Byte-level BPE (GPT-2 style), as SmolLM and Llama 3 use.

    Text is encoded as text: a special token's marker typed in a prompt or a message (say
    ``<|im_end|>``) is a few ordinary tokens, never the control token, so a user cannot end a
    turn or open one. Only the markers a chat template writes become control tokens.
    """

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
        added = tokenizer.get_added_tokens_decoder()
        special = {t.content for t in added.values() if t.special}
        self.special_ids = {t.content: i for i, t in added.items() if t.special}
        longest_first = sorted(self.special_ids, key=len, reverse=True)
        self._special_marker = re.compile("|".join(map(re.escape, longest_first))) if longest_first else None
        # A copy that reads special-token markers as text (the `tokenizers` flag is per object).
        self._text_tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._text_tokenizer.encode_special_tokens = True
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
        """Token ids of ``text`` as plain text; a ``ChatPrompt`` keeps its template's markers."""
        spans = text.spans if isinstance(text, ChatPrompt) else ((text, False),)
        # Cut only at the template's markers and encode the text between them whole, as a
        # tokenizer parsing specials would: the ids are the same as before unless a user typed
        # a marker, which stays text.
        pieces: list[str | int] = []  # text, or a control token's id
        text_run: list[str] = []
        for span, from_template in spans:
            start = 0
            if from_template and self._special_marker is not None:
                for marker in self._special_marker.finditer(span):
                    text_run.append(span[start : marker.start()])
                    pieces += ["".join(text_run), self.special_ids[marker.group()]]
                    text_run, start = [], marker.end()
            text_run.append(span[start:])
        pieces.append("".join(text_run))
        texts = [p for p in pieces if isinstance(p, str) and p]
        # encode_batch releases the GIL while it works (encode does not): a thread tokenizing a
        # long prompt leaves the event loop free.
        encoded = iter(self._text_tokenizer.encode_batch(texts, add_special_tokens=False))
        ids = [self.bos_id] if self.add_bos and self.bos_id is not None else []
        for piece in pieces:
            if isinstance(piece, int):
                ids.append(piece)
            elif piece:
                ids += next(encoded).ids
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self.token_bytes[i] for i in ids).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict[str, str]]) -> ChatPrompt:
        """The prompt for ``messages``, with the template's spans told apart from message text."""
        text = self._template.render(messages=messages, add_generation_prompt=True)
        # Render again with each content replaced by a mark no user can guess, to find where the
        # template put each message's text.
        nonce = secrets.token_hex(8)
        marked = [{**m, "content": f"\ue000{nonce}:{i}\ue000"} for i, m in enumerate(messages)]
        skeleton = self._template.render(messages=marked, add_generation_prompt=True)
        parts = re.split(f"\ue000{nonce}:(\\d+)\ue000", skeleton)  # template text, message index, ...
        for contents in ([m["content"] for m in messages], [m["content"].strip() for m in messages]):  # `| trim`
            spans = [(contents[int(p)], False) if i % 2 else (p, True) for i, p in enumerate(parts)]
            if "".join(span for span, _ in spans) == text:
                return ChatPrompt(spans)
        # The template rewrote message text some other way: the spans are unknown. Safe as one
        # template span only if no message holds a marker.
        typed = [t for m in messages for t in self.special_ids if t in m["content"]]
        if typed:
            raise ValueError(
                f"a message contains the special token {typed[0]!r}, and this model's chat template "
                "rewrites message text, so it cannot be kept as plain text; remove it"
            )
        return ChatPrompt([(text, True)])

    @cached_property
    def _template(self) -> Any:
        if not self.chat_template:
            raise ValueError("this model has no chat template")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return env.from_string(self.chat_template)

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
