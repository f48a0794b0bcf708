from __future__ import annotations

import pytest

from blazerpc.llm.block_manager import BlockManager
from blazerpc.llm.sampling import SamplingParams
from blazerpc.llm.sequence import Sequence


def seq(n: int) -> Sequence:
    return Sequence(list(range(n)), SamplingParams())


def test_allocate_covers_every_token_and_append_adds_a_block_only_when_full() -> None:
    bm = BlockManager(num_blocks=4, block_size=4)
    s = seq(6)
    assert bm.can_allocate(s)
    bm.allocate(s)
    assert len(s.block_table) == 2 and bm.num_free == 2
    assert [bm.slot(s, p) for p in range(6)] == [s.block_table[p // 4] * 4 + p % 4 for p in range(6)]
    s.output_ids += [1, 2]  # 8 tokens: still two blocks
    bm.append(s)
    assert len(s.block_table) == 2
    s.output_ids.append(3)  # 9 tokens: a third block
    assert bm.can_append(s)
    bm.append(s)
    assert len(s.block_table) == 3 and bm.num_free == 1


def test_release_returns_every_block_and_refuses_what_does_not_fit() -> None:
    bm = BlockManager(num_blocks=3, block_size=2)
    a, b = seq(4), seq(3)
    bm.allocate(a)
    assert not bm.can_allocate(b)  # needs 2 blocks, 1 free
    bm.release(a)
    assert bm.num_free == 3 and a.block_table == []
    bm.allocate(b)
    assert sorted([*bm.free, *b.block_table]) == [0, 1, 2]


def test_blocks_are_never_shared() -> None:
    bm = BlockManager(num_blocks=8, block_size=2)
    seqs = [seq(3) for _ in range(4)]
    for s in seqs:
        bm.allocate(s)
    owned = [b for s in seqs for b in s.block_table]
    assert len(owned) == len(set(owned)) == 8
    with pytest.raises(ValueError, match="at least one block"):
        BlockManager(0, 16)
