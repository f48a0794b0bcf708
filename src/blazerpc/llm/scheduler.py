"""Which sequences run in the next step: every running one decodes, prompts prefill in chunks within a token budget."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .block_manager import BlockManager
from .sequence import SeqState, Sequence


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 128  # tokens per step: one per decoding sequence, prompt chunks in the rest

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs "
                f"({self.max_num_seqs}): every running sequence decodes in every step"
            )


@dataclass(frozen=True, slots=True)
class Chunk:
    """Tokens ``start .. start + length - 1`` of ``seq`` to prefill; the ones before are cached."""

    seq: Sequence
    start: int
    length: int

    @property
    def completes(self) -> bool:
        """The chunk reaches the sequence's last token: its logits give the next token."""
        return self.start + self.length == self.seq.num_tokens


@dataclass
class Step:
    decode: list[Sequence] = field(default_factory=list)  # one new token each
    prefill: list[Chunk] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.decode or self.prefill)

    @property
    def sampled(self) -> list[Sequence]:
        """The sequences that get a token from this step, in the runner's row order."""
        return self.decode + [chunk.seq for chunk in self.prefill if chunk.completes]


class Scheduler:
    """FIFO admission under ``max_num_seqs``, the per-step token budget and the KV-cache budget.

    Each step, every running sequence with one token left to compute decodes it, and takes one
    token of the budget (``max_num_batched_tokens``, as vLLM's). What is left goes to prompts:
    sequences partly prefilled first, oldest first, then waiting ones as they are admitted. A
    long prompt thus runs in chunks between decode steps instead of stalling them, and a step
    never grows past the budget: the running streams' inter-token latency stays bounded while
    prompts arrive. When the cache is full, the newest running sequence is preempted: its blocks
    are released and it waits at the front of the queue to be prefilled again (recomputation;
    its published blocks make that cheap while they stay cached).
    """

    def __init__(self, config: SchedulerConfig, blocks: BlockManager) -> None:
        self.config = config
        self.blocks = blocks
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    @property
    def num_seqs(self) -> int:
        return len(self.waiting) + len(self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def schedule(self) -> Step:
        """The next step, with cache blocks reserved for every token in it."""
        step = Step()
        i = 0
        while i < len(self.running):  # decode first: every running sequence with one token left
            seq = self.running[i]
            if seq.num_tokens - seq.num_cached > 1:  # a prompt in chunks: its blocks are already held
                i += 1
            elif self.blocks.can_append(seq):
                self.blocks.append(seq)
                step.decode.append(seq)
                i += 1
            else:
                victim = self.running.pop()
                self._preempt(victim)  # the newest: not in this step yet
                if victim is seq:
                    break
        budget = self.config.max_num_batched_tokens - len(step.decode)
        for seq in self.running:
            left = seq.num_tokens - seq.num_cached
            if left > 1 and budget > 0:
                step.prefill.append(Chunk(seq, seq.num_cached, min(left, budget)))
                budget -= step.prefill[-1].length
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            if not self.blocks.allocate(seq):
                break
            self.waiting.popleft()
            seq.state = SeqState.RUNNING
            self.running.append(seq)
            step.prefill.append(Chunk(seq, seq.num_cached, min(seq.num_tokens - seq.num_cached, budget)))
            budget -= step.prefill[-1].length
        return step

    def finish(self, seq: Sequence) -> None:
        """Take the sequence out (finished, aborted) and release its blocks at once."""
        if seq.state is SeqState.FINISHED:
            return
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.release(seq)
        seq.state = SeqState.FINISHED

    def _preempt(self, seq: Sequence) -> None:
        self.num_preemptions += 1
        self.blocks.release(seq)
        seq.state = SeqState.WAITING
        self.waiting.appendleft(seq)
