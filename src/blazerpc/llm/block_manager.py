"""KV-cache bookkeeping: which fixed-size blocks of cache slots each sequence owns.

Pure bookkeeping, no tensors: position ``p`` of a sequence lives at offset ``p % block_size``
of block ``block_table[p // block_size]`` (see ``model.KVCache`` for the layout; ``slot`` gives
that place as one flat number, ``block * block_size + offset``).
"""

from __future__ import annotations

from collections import deque

from .sequence import Sequence


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of one slot, got {num_blocks} blocks of {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free: deque[int] = deque(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self.free)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def can_allocate(self, seq: Sequence) -> bool:
        """Room for a prefill: a slot for every token the sequence has."""
        return self.blocks_for(seq.num_tokens) <= self.num_free

    def allocate(self, seq: Sequence) -> None:
        assert not seq.block_table, f"sequence {seq.seq_id} already holds blocks"
        seq.block_table = [self.free.popleft() for _ in range(self.blocks_for(seq.num_tokens))]

    def can_append(self, seq: Sequence) -> bool:
        """Room for a decode step: a slot for the newest token (a new block when the last is full)."""
        return self.blocks_for(seq.num_tokens) <= len(seq.block_table) or self.num_free > 0

    def append(self, seq: Sequence) -> None:
        if self.blocks_for(seq.num_tokens) > len(seq.block_table):
            seq.block_table.append(self.free.popleft())

    def release(self, seq: Sequence) -> None:
        self.free.extend(seq.block_table)
        seq.block_table = []

    def slot(self, seq: Sequence, position: int) -> int:
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size
