"""Which sequences run in the next step: every running one decodes, prompts prefill in chunks."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .block_manager import BlockManager
from .sequence import SeqState, Sequence


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 32
    max_prefill_tokens: int = 512  # prompt tokens per step; longer prompts are prefilled in chunks

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_prefill_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


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
    """FIFO admission under ``max_num_seqs``, the per-step prefill budget and the KV-cache budget.

    Each step, every running sequence with one token left to compute decodes it; sequences with
    more (a prompt partly prefilled) take the prefill budget oldest first, then waiting ones are
    admitted with what is left, so a long prompt runs in chunks between decode steps instead of
    stalling them. When the cache is full, the newest running sequence is preempted: its blocks
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
        budget = self.config.max_prefill_tokens
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            left = seq.num_tokens - seq.num_cached
            if left > 1:  # a prompt in chunks: its blocks are already held
                if budget:
                    step.prefill.append(Chunk(seq, seq.num_cached, min(left, budget)))
                    budget -= step.prefill[-1].length
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
        while self.waiting and budget and len(self.running) < self.config.max_num_seqs:
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
