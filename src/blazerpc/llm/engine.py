"""The engine loop: ``step()`` = schedule, run the model, post-process (nano-vllm style)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .block_manager import BlockManager
from .loader import LoadedModel
from .runner import ModelRunner
from .sampling import SamplingParams, StopChecker, sample_rows
from .scheduler import Scheduler, SchedulerConfig
from .sequence import Sequence, Status
from .tokenizer import StreamDecoder


def native_bf16(device: str) -> bool:
    """Whether the hardware multiplies bfloat16 natively (AVX512-BF16 or AMX on CPU)."""
    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence getattr
    return any(getattr(cpu, name, lambda: False)() for name in checks)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int = 32
    max_waiting: int = 256
    max_prefill_tokens: int = 512
    max_model_len: int = 2048
    kv_cache_mb: int = 1024
    block_size: int = 16
    device: str = "auto"  # "auto": CUDA when torch sees a GPU, else CPU
    dtype: str = "auto"  # "auto": bfloat16 where the hardware has bf16 instructions, else float32

    @property
    def torch_device(self) -> str:
        if self.device != "auto":
            return self.device
        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if native_bf16(self.torch_device) else torch.float32
        return DTYPES[self.dtype]

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be auto, {', '.join(DTYPES)}; got {self.dtype!r}")
        if self.kv_cache_mb < 1 or self.block_size < 1 or self.max_model_len < 2:
            raise ValueError("kv_cache_mb and block_size must be >= 1, and max_model_len >= 2")

    def num_blocks(self, bytes_per_token: int) -> int:
        blocks = self.kv_cache_mb * 2**20 // (bytes_per_token * self.block_size)
        needed = -(-self.max_model_len // self.block_size)
        if blocks < needed:
            raise ValueError(
                f"kv_cache_mb={self.kv_cache_mb} holds {blocks * self.block_size} tokens, fewer than one "
                f"max_model_len={self.max_model_len} sequence; raise kv_cache_mb or lower max_model_len"
            )
        return int(blocks)


@dataclass(frozen=True)
class TokenEvent:
    """One generated token of one sequence; ``text`` may be "" while a character or stop string completes."""

    seq_id: int
    token_id: int
    text: str
    step_ms: float
    prefill: bool  # produced by this sequence's prefill (its first token)
    finish_reason: str | None = None


Listener = Callable[[TokenEvent], None]


@dataclass
class _Decoding:
    decoder: StreamDecoder
    stop: StopChecker
    generator: torch.Generator | None
    listener: Listener


class LLMEngine:
    """Continuous batching over one model. Not thread-safe: one thread calls everything."""

    def __init__(self, loaded: LoadedModel, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.max_len = min(self.config.max_model_len, loaded.model.config.max_seq_len)
        mc = loaded.model.config
        kv_bytes = loaded.model.weight_dtype.itemsize  # the cache holds K and V in the weights' dtype
        bytes_per_token = 2 * mc.n_layers * mc.n_kv_heads * mc.head_dim * kv_bytes
        self.blocks = BlockManager(self.config.num_blocks(bytes_per_token), self.config.block_size)
        self.scheduler = Scheduler(
            SchedulerConfig(self.config.max_num_seqs, self.config.max_prefill_tokens, self.config.max_waiting),
            self.blocks,
        )
        self.runner = ModelRunner(self.model, self.blocks, str(next(self.model.parameters()).device))
        self.seqs: dict[int, Sequence] = {}
        self.states: dict[int, _Decoding] = {}

    def add(self, seq: Sequence, listener: Listener) -> None:
        if seq.num_tokens >= self.max_len:
            raise ValueError(f"prompt of {seq.num_tokens} tokens leaves no room in a {self.max_len}-token context")
        self.seqs[seq.seq_id] = seq
        self.states[seq.seq_id] = _Decoding(
            self.tokenizer.stream_decoder(), StopChecker(seq.params.stop), seq.params.generator(), listener
        )
        self.scheduler.add(seq)

    def abort(self, seq_id: int) -> None:
        seq = self.seqs.pop(seq_id, None)
        if seq is not None:
            self.scheduler.finish(seq, "abort")
            self.states.pop(seq_id, None)

    @property
    def has_work(self) -> bool:
        return bool(self.seqs)

    def step(self) -> int:
        """Run one step; returns how many sequences it advanced."""
        decode, prefill = self.scheduler.schedule()
        seqs = decode + prefill
        if not seqs:
            return 0
        started = time.perf_counter()
        logits = self.runner.run(decode, prefill)
        step_ms = (time.perf_counter() - started) * 1000
        states = [self.states[seq.seq_id] for seq in seqs]
        tokens = sample_rows(logits, [seq.params for seq in seqs], [state.generator for state in states])
        for row, (seq, state, token) in enumerate(zip(seqs, states, tokens, strict=True)):
            self._advance(seq, state, token, step_ms, prefill=row >= len(decode))
        return len(seqs)

    def _advance(self, seq: Sequence, state: _Decoding, token: int, step_ms: float, prefill: bool) -> None:
        seq.output_ids.append(token)
        reason = None
        if token in self.tokenizer.eos_ids and not seq.params.ignore_eos:
            text, reason = state.stop.flush() + state.decoder.flush(), "stop"
        else:
            text, stopped = state.stop.feed(state.decoder.push(token))
            if stopped:
                reason = "stop"
            elif len(seq.output_ids) >= seq.params.max_tokens or seq.num_tokens >= self.max_len:
                reason = "length"
                text += state.stop.feed(state.decoder.flush())[0] + state.stop.flush()
        if reason is not None:
            self.scheduler.finish(seq, reason)
            del self.seqs[seq.seq_id]
            del self.states[seq.seq_id]
        state.listener(TokenEvent(seq.seq_id, token, text, step_ms, prefill, reason))

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> list[TokenEvent]:
        """Run one request to the end (for scripts and tests)."""
        events: list[TokenEvent] = []
        self.add(Sequence(prompt_ids, params), events.append)
        while self.has_work:
            self.step()
        return events


__all__ = ["EngineConfig", "LLMEngine", "Sequence", "Status", "TokenEvent"]
