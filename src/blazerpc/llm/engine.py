"""The engine loop: ``step()`` = schedule, run the model, post-process (nano-vllm style)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import BlazeError, Status
from .block_manager import BlockManager
from .config import EngineConfig
from .loader import LoadedModel
from .params import SamplingParams
from .protocol import EngineStats, TokenEvent
from .runner import ModelRunner
from .sampling import StopChecker, make_generator, sample_rows
from .scheduler import Scheduler
from .sequence import Sequence
from .tokenizer import StreamDecoder

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
        self.blocks = BlockManager(
            self.config.num_blocks(bytes_per_token), self.config.block_size, prefix_caching=self.config.prefix_caching
        )
        self.scheduler = Scheduler(self.config.scheduler, self.blocks)
        self.runner = ModelRunner(self.model, self.blocks, str(next(self.model.parameters()).device))
        self.seqs: dict[int, Sequence] = {}
        self.states: dict[int, _Decoding] = {}

    def add(self, seq: Sequence, listener: Listener) -> None:
        """Queue ``seq``; a request the engine cannot run raises a ``BlazeError`` and leaves nothing behind."""
        if not seq.prompt_ids or seq.num_tokens >= self.max_len:
            raise BlazeError(
                Status.INVALID_ARGUMENT,
                f"a prompt of {seq.num_tokens} tokens leaves no room in the {self.max_len}-token context",
            )
        if seq.seq_id in self.seqs:
            raise BlazeError(Status.ALREADY_EXISTS, f"sequence {seq.seq_id} is already running")
        state = _Decoding(
            self.tokenizer.stream_decoder(), StopChecker(seq.params.stop), make_generator(seq.params), listener
        )
        self.seqs[seq.seq_id] = seq  # only once everything above succeeded
        self.states[seq.seq_id] = state
        self.scheduler.add(seq)

    def abort(self, seq_id: int) -> None:
        seq = self.seqs.pop(seq_id, None)
        if seq is not None:
            self.scheduler.finish(seq)
            self.states.pop(seq_id, None)

    def stats(self) -> EngineStats:
        blocks, scheduler = self.blocks, self.scheduler
        return EngineStats(
            seqs=scheduler.num_seqs,
            free_blocks=blocks.num_free,
            num_blocks=blocks.num_blocks,
            running=len(scheduler.running),
            waiting=len(scheduler.waiting),
            cached_blocks=blocks.num_cached,
            prefix_cache_queries=blocks.stats.queries,
            prefix_cache_hits=blocks.stats.hits,
            prefix_cache_evictions=blocks.stats.evictions,
            preemptions=scheduler.num_preemptions,
        )

    @property
    def has_work(self) -> bool:
        return bool(self.seqs)

    def step(self) -> int:
        """Run one step; returns how many sequences it advanced."""
        step = self.scheduler.schedule()
        if not step:
            return 0
        started = time.perf_counter()
        logits = self.runner.run(step)
        step_ms = (time.perf_counter() - started) * 1000
        for chunk in step.prefill:
            chunk.seq.prefill_ms += step_ms
            self.blocks.publish(chunk.seq)
        for seq in step.decode:
            self.blocks.publish(seq)
        seqs = step.sampled
        if not seqs:  # only chunks of prompts that go on next step
            return len(step.prefill)
        states = [self.states[seq.seq_id] for seq in seqs]
        tokens = sample_rows(logits, [seq.params for seq in seqs], [state.generator for state in states])
        for seq, state, token in zip(seqs, states, tokens, strict=True):
            self._advance(seq, state, token, step_ms)
        return len(step.decode) + len(step.prefill)

    def _advance(self, seq: Sequence, state: _Decoding, token: int, step_ms: float) -> None:
        seq.output_ids.append(token)
        first = len(seq.output_ids) == 1  # a preempted sequence's second prefill is not its first token
        if first:
            step_ms = seq.prefill_ms  # every step that computed a chunk of its prompt
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
            self.scheduler.finish(seq)
            del self.seqs[seq.seq_id]
            del self.states[seq.seq_id]
        state.listener(
            TokenEvent(
                seq_id=seq.seq_id, token_id=token, text=text, step_ms=step_ms, prefill=first, finish_reason=reason
            )
        )

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> list[TokenEvent]:
        """Run one request to the end (for scripts and tests)."""
        events: list[TokenEvent] = []
        self.add(Sequence(prompt_ids, params), events.append)
        while self.has_work:
            self.step()
        return events


__all__ = ["EngineConfig", "LLMEngine", "Sequence", "TokenEvent"]
