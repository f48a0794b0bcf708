"""Which sequences run in the next step: every running one decodes, newcomers prefill."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .block_manager import BlockManager
from .sequence import SeqState, Sequence


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 32
    max_prefill_tokens: int = 512  # per step; a longer prompt still runs, alone

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_prefill_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class Scheduler:
    """FIFO admission under ``max_num_seqs`` and the KV-cache budget.

    When the cache is full, the newest running sequence is preempted: its blocks are freed
    and it waits at the front of the queue to be prefilled again (recomputation).
    """

    def __init__(self, config: SchedulerConfig, blocks: BlockManager) -> None:
        self.config = config
        self.blocks = blocks
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    @property
    def num_seqs(self) -> int:
        return len(self.waiting) + len(self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def schedule(self) -> tuple[list[Sequence], list[Sequence]]:
        """``(decode, prefill)`` for the next step, with cache blocks reserved for both."""
        decode: list[Sequence] = []
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            if self.blocks.can_append(seq):
                self.blocks.append(seq)
                decode.append(seq)
                i += 1
                continue
            victim = self.running.pop()
            self._preempt(victim)
            if victim is seq:
                break
        prefill: list[Sequence] = []
        budget = self.config.max_prefill_tokens
        while self.waiting and len(self.running) + len(prefill) < self.config.max_num_seqs:
            seq = self.waiting[0]
            if prefill and seq.num_tokens > budget:
                break
            if not self.blocks.can_allocate(seq):
                break
            self.waiting.popleft()
            self.blocks.allocate(seq)
            seq.state = SeqState.RUNNING
            prefill.append(seq)
            budget -= seq.num_tokens
        self.running.extend(prefill)
        return decode, prefill

    def finish(self, seq: Sequence) -> None:
        """Take the sequence out (finished, aborted) and free its blocks at once."""
        if seq.state is SeqState.FINISHED:
            return
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.release(seq)
        seq.state = SeqState.FINISHED

    def _preempt(self, seq: Sequence) -> None:
        self.blocks.release(seq)
        seq.num_cached = 0
        seq.state = SeqState.WAITING
        self.waiting.appendleft(seq)
