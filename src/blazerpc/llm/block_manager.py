"""KV-cache bookkeeping: which fixed-size blocks of cache slots each sequence holds, and which
blocks still hold a known prefix (automatic prefix caching, as vLLM and nano-vllm do it).

Pure bookkeeping, no tensors: position ``p`` of a sequence lives at offset ``p % block_size``
of block ``block_table[p // block_size]`` (see ``attention.KVCache`` for the layout; ``slot`` gives
that place as one flat number, ``block * block_size + offset``).

A full block whose K/V are computed is *published* under a hash chained over (the previous
block's hash, this block's token ids), so equal hashes mean equal prefixes, not just equal
blocks. A new sequence takes every published block of its prefix (shared read-only, counted
by reference) and computes only the rest. Blocks nobody holds stay published in the free list,
least recently released first, and are evicted (unpublished) only when a block is needed.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Sequence as Tokens
from dataclasses import dataclass

from .sequence import Sequence

BlockHash = Callable[[bytes, Tokens[int]], bytes]


def chained_hash(parent: bytes, token_ids: Tokens[int]) -> bytes:
    """128 bits over the parent block's hash and this block's ids: a collision is never expected."""
    return hashlib.blake2b(parent + array("q", token_ids).tobytes(), digest_size=16).digest()


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    hash: bytes | None = None  # set while the block is published
    token_ids: tuple[int, ...] = ()  # what it holds, checked on every hit (a hash is not proof)


@dataclass
class PrefixCacheStats:
    queries: int = 0  # prompt tokens looked up
    hits: int = 0  # of those, tokens found in the cache
    evictions: int = 0  # published blocks reused for something else


class BlockManager:
    def __init__(
        self, num_blocks: int, block_size: int, prefix_caching: bool = True, block_hash: BlockHash = chained_hash
    ) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of one slot, got {num_blocks} blocks of {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.block_hash = block_hash
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # first out = evicted first
        self.published: dict[bytes, int] = {}  # hash -> block id
        self.stats = PrefixCacheStats()

    @property
    def num_free(self) -> int:
        """Blocks no sequence holds (published ones included: they are evicted on demand)."""
        return len(self.free)

    @property
    def num_cached(self) -> int:
        return len(self.published)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def allocate(self, seq: Sequence) -> bool:
        """Blocks for every token of ``seq``, reusing its cached prefix; False (nothing taken) if they do not fit.

        ``seq.num_cached`` is then the number of tokens found in the cache: always at least one
        token short of the whole, since the last one must run to give the next token's logits.
        """
        assert not seq.block_table, f"sequence {seq.seq_id} already holds blocks"
        hits = self._cached_prefix(seq)
        revived = sum(1 for block_id in hits if self.blocks[block_id].ref_count == 0)
        if self.blocks_for(seq.num_tokens) - len(hits) + revived > len(self.free):
            return False
        for block_id in hits:
            if self.blocks[block_id].ref_count == 0:
                del self.free[block_id]
            self.blocks[block_id].ref_count += 1
        fresh = [self._take_free() for _ in range(self.blocks_for(seq.num_tokens) - len(hits))]
        seq.block_table = hits + fresh
        seq.num_published = len(hits)
        seq.num_cached = len(hits) * self.block_size
        if self.prefix_caching:
            self.stats.queries += seq.num_tokens
            self.stats.hits += seq.num_cached
        return True

    def can_append(self, seq: Sequence) -> bool:
        """Room for a decode step: a slot for the newest token (a new block when the last is full)."""
        return self.blocks_for(seq.num_tokens) <= len(seq.block_table) or bool(self.free)

    def append(self, seq: Sequence) -> None:
        if self.blocks_for(seq.num_tokens) > len(seq.block_table):
            seq.block_table.append(self._take_free())

    def publish(self, seq: Sequence) -> None:
        """Make the full blocks whose K/V are now computed findable by later sequences."""
        if not self.prefix_caching:
            return
        full = seq.num_cached // self.block_size
        hashes = self._hashes(seq, full)
        for i in range(seq.num_published, full):
            block = self.blocks[seq.block_table[i]]
            if hashes[i] not in self.published:  # else an equal block, computed at the same time, was first
                block.hash, block.token_ids = hashes[i], tuple(self._tokens(seq, i))
                self.published[hashes[i]] = block.block_id
        seq.num_published = max(seq.num_published, full)

    def release(self, seq: Sequence) -> None:
        """Give back the blocks of a finished or preempted sequence; published ones stay findable."""
        for block_id in reversed(seq.block_table):  # a prefix outlives its tails: free tails first
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
                if block.hash is None:
                    self.free.move_to_end(block_id, last=False)  # holds nothing reusable: take it first
        seq.block_table = []
        seq.num_cached = seq.num_published = 0

    def slot(self, seq: Sequence, position: int) -> int:
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size

    def _cached_prefix(self, seq: Sequence) -> list[int]:
        """Published blocks equal to the leading full blocks of ``seq``, stopping at the first miss."""
        if not self.prefix_caching:
            return []
        usable = (seq.num_tokens - 1) // self.block_size  # the last token is always computed
        hits: list[int] = []
        for i, block_hash in enumerate(self._hashes(seq, usable)):
            block_id = self.published.get(block_hash)
            if block_id is None or self.blocks[block_id].token_ids != tuple(self._tokens(seq, i)):
                break
            hits.append(block_id)
        return hits

    def _hashes(self, seq: Sequence, num_blocks: int) -> list[bytes]:
        """The chained hashes of the first ``num_blocks`` full blocks (kept on ``seq``: tokens never change)."""
        hashes = seq.block_hashes
        for i in range(len(hashes), num_blocks):
            hashes.append(self.block_hash(hashes[-1] if hashes else b"", self._tokens(seq, i)))
        return hashes

    def _tokens(self, seq: Sequence, i: int) -> list[int]:
        start = i * self.block_size
        prompt = len(seq.prompt_ids)
        if start + self.block_size <= prompt:
            return seq.prompt_ids[start : start + self.block_size]
        return seq.all_ids[start : start + self.block_size]

    def _take_free(self) -> int:
        block_id, _ = self.free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None:
            if self.published.get(block.hash) == block_id:
                del self.published[block.hash]
                self.stats.evictions += 1
            block.hash, block.token_ids = None, ()
        block.ref_count = 1
        return block_id
