from __future__ import annotations

import pytest

from blazerpc.llm.block_manager import BlockManager
from blazerpc.llm.sampling import SamplingParams
from blazerpc.llm.sequence import Sequence


def seq(n: int, first: int = 0) -> Sequence:
    return Sequence(list(range(first, first + n)), SamplingParams())


def computed(bm: BlockManager, s: Sequence) -> Sequence:
    """What a step does: every token's K/V computed, then the full blocks published."""
    s.num_cached = s.num_tokens
    bm.publish(s)
    return s


def test_allocate_covers_every_token_and_append_adds_a_block_only_when_full() -> None:
    bm = BlockManager(num_blocks=4, block_size=4)
    s = seq(6)
    assert bm.allocate(s)
    assert len(s.block_table) == 2 and bm.num_free == 2 and s.num_cached == 0
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
    a, b = seq(4), seq(3, first=100)
    assert bm.allocate(a)
    assert not bm.allocate(b) and b.block_table == []  # needs 2 blocks, 1 free: takes nothing
    bm.release(a)
    assert bm.num_free == 3 and a.block_table == []
    assert bm.allocate(b)
    assert sorted([*bm.free, *b.block_table]) == [0, 1, 2]


def test_without_a_shared_prefix_blocks_are_never_shared() -> None:
    bm = BlockManager(num_blocks=8, block_size=2)
    seqs = [seq(3, first=10 * i) for i in range(4)]
    for s in seqs:
        assert bm.allocate(s)
        computed(bm, s)
    owned = [b for s in seqs for b in s.block_table]
    assert len(owned) == len(set(owned)) == 8
    with pytest.raises(ValueError, match="at least one block"):
        BlockManager(0, 16)


def test_a_cached_prefix_is_shared_read_only_and_only_the_rest_is_computed() -> None:
    bm = BlockManager(num_blocks=16, block_size=4)
    a = seq(10)  # blocks [0..3] [4..7] [8, 9]: two full blocks get published
    assert bm.allocate(a)
    computed(bm, a)
    assert bm.num_cached == 2
    b = Sequence([*range(8), 50, 51, 52], SamplingParams())
    assert bm.allocate(b)
    assert b.block_table[:2] == a.block_table[:2] and b.block_table[2] != a.block_table[2]
    assert b.num_cached == 8 and bm.blocks[a.block_table[0]].ref_count == 2
    assert (bm.stats.queries, bm.stats.hits) == (10 + 11, 8)
    bm.release(a)
    assert bm.blocks[b.block_table[0]].ref_count == 1 and b.block_table[0] not in bm.free


def test_a_prefix_that_ends_mid_block_reuses_only_whole_blocks_and_the_last_token_always_runs() -> None:
    bm = BlockManager(num_blocks=16, block_size=4)
    a = seq(8)
    assert bm.allocate(a)
    computed(bm, a)
    mid = seq(6)  # 0..5: the first block is whole, the second is half of a's
    assert bm.allocate(mid) and mid.num_cached == 4
    same = seq(8)  # all of a: the last block is recomputed so the last token gives logits
    assert bm.allocate(same) and same.num_cached == 4
    longer = seq(9)
    assert bm.allocate(longer) and longer.num_cached == 8


def test_generated_tokens_are_cached_too_so_a_next_turn_hits_them() -> None:
    bm = BlockManager(num_blocks=16, block_size=4)
    turn1 = seq(6)
    assert bm.allocate(turn1)
    computed(bm, turn1)
    for token in (90, 91, 92):  # decode: the newest token's K/V come one step later
        turn1.output_ids.append(token)
        bm.append(turn1)
        turn1.num_cached = turn1.num_tokens - 1
        bm.publish(turn1)
    assert turn1.num_published == 2  # 0..5 + 90, 91 fill two blocks; 92 is not computed yet
    bm.release(turn1)
    turn2 = Sequence([*range(6), 90, 91, 92, 7, 8], SamplingParams())
    assert bm.allocate(turn2) and turn2.num_cached == 8


def test_the_same_block_after_different_prefixes_is_not_shared() -> None:
    bm = BlockManager(num_blocks=16, block_size=2)
    a = Sequence([1, 2, 5, 6, 0], SamplingParams())
    assert bm.allocate(a)
    computed(bm, a)
    b = Sequence([3, 4, 5, 6, 0], SamplingParams())  # block [5, 6] again, after another prefix
    assert bm.allocate(b) and b.num_cached == 0 and set(a.block_table).isdisjoint(b.block_table)


def test_a_hash_collision_is_a_miss_not_a_wrong_hit() -> None:
    bm = BlockManager(num_blocks=16, block_size=2, block_hash=lambda parent, ids: b"same")
    a = Sequence([1, 2, 3], SamplingParams())
    assert bm.allocate(a)
    computed(bm, a)
    b = Sequence([8, 9, 3], SamplingParams())
    assert bm.allocate(b) and b.num_cached == 0 and b.block_table[0] != a.block_table[0]


def test_released_blocks_stay_cached_and_the_least_recently_used_are_evicted_first() -> None:
    bm = BlockManager(num_blocks=6, block_size=2)
    old, new = seq(5), seq(5, first=100)  # 2 full blocks each (+1 partial)
    for s in (old, new):
        assert bm.allocate(s)
        computed(bm, s)
        bm.release(s)
    assert bm.num_free == 6 and bm.num_cached == 4
    filler = seq(3, first=200)  # 2 blocks: the 2 partial ones go first (they hold nothing reusable)
    assert bm.allocate(filler) and bm.num_cached == 4 and bm.stats.evictions == 0
    bm.release(filler)
    taker = seq(6, first=300)  # 3 blocks: filler's 2 unpublished ones, then old's tail block
    assert bm.allocate(taker)
    assert bm.stats.evictions == 1 and bm.num_cached == 3
    again = seq(5)
    assert bm.allocate(again) and again.num_cached == 2  # old's head block survived its tail
    assert bm.stats.evictions == 3 and bm.num_cached == 1  # its two fresh blocks were new's: the only ones left


def test_reviving_a_cached_block_counts_against_the_free_blocks() -> None:
    bm = BlockManager(num_blocks=3, block_size=2)
    a = seq(5)
    assert bm.allocate(a)
    computed(bm, a)
    bm.release(a)
    b = seq(5)  # hits 2 free-but-cached blocks and needs 1 more: exactly 3
    assert bm.allocate(b) and b.num_cached == 4 and bm.num_free == 0
    bm.release(b)
    c = seq(7)  # hits 2, needs 2 more: 4 > 3
    assert not bm.allocate(c) and bm.num_free == 3 and c.block_table == []


def test_preemption_keeps_the_counts_right() -> None:
    bm = BlockManager(num_blocks=8, block_size=2)
    a = seq(5)
    assert bm.allocate(a)
    computed(bm, a)
    b = seq(5)
    assert bm.allocate(b)
    shared = a.block_table[0]
    assert bm.blocks[shared].ref_count == 2
    bm.release(b)  # preempted: its hold on the shared blocks goes, a's stays
    assert bm.blocks[shared].ref_count == 1 and b.num_cached == 0 and b.num_published == 0
    bm.release(a)
    assert bm.blocks[shared].ref_count == 0 and bm.num_free == 8


def test_prefix_caching_off_shares_nothing() -> None:
    bm = BlockManager(num_blocks=8, block_size=2, prefix_caching=False)
    a = seq(5)
    assert bm.allocate(a)
    computed(bm, a)
    b = seq(5)
    assert bm.allocate(b) and b.num_cached == 0 and bm.num_cached == 0 and bm.stats.queries == 0
