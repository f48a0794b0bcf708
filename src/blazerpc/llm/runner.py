"""The model runner owns the tensors: it turns a scheduled step into one forward call."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .block_manager import BlockManager
from .model import AttentionBatch, KVCache, Llama, PrefillSpan
from .scheduler import Chunk, Step
from .sequence import Sequence


class ModelRunner:
    def __init__(self, model: Llama, blocks: BlockManager, device: str = "cpu") -> None:
        self.model = model
        self.blocks = blocks
        self.device = device
        self.cache = KVCache(model.config, blocks.num_blocks, blocks.block_size, device, model.weight_dtype)

    def slots(self, seq: Sequence, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Cache blocks and offsets in them of positions ``start..stop-1`` of ``seq``."""
        bs = self.blocks.block_size
        positions = np.arange(start, stop)
        table = np.asarray(seq.block_table, dtype=np.int64)
        return table[positions // bs], positions % bs

    @torch.inference_mode()
    def run(self, step: Step) -> Tensor:
        """Next-token logits ``(len(step.sampled), vocab)``; marks every computed token cached."""
        tokens: list[int] = []
        positions: list[np.ndarray] = []
        slots: list[tuple[np.ndarray, np.ndarray]] = []
        for seq in step.decode:  # the newest token of each, at position num_tokens - 1
            n = seq.num_tokens
            tokens.append(seq.last_id)
            positions.append(np.array([n - 1]))
            slots.append(self.slots(seq, n - 1, n))
        spans = []
        for chunk in step.prefill:
            end = chunk.start + chunk.length
            spans.append(self._span(len(tokens), chunk))
            tokens.extend(chunk.seq.all_ids[chunk.start : end])
            positions.append(np.arange(chunk.start, end))
            slots.append(self.slots(chunk.seq, chunk.start, end))
        tables = lens = None
        if step.decode:
            width = max(len(seq.block_table) for seq in step.decode)
            table = np.zeros((len(step.decode), width), dtype=np.int64)  # padding: block 0, never read
            for row, seq in enumerate(step.decode):
                table[row, : len(seq.block_table)] = seq.block_table
            tables = self._tensor(table)
            lens = self._tensor(np.array([seq.num_tokens for seq in step.decode], dtype=np.int64))
        batch = AttentionBatch(
            slot_blocks=self._tensor(np.concatenate([blocks for blocks, _ in slots])),
            slot_offsets=self._tensor(np.concatenate([offsets for _, offsets in slots])),
            positions=self._tensor(np.concatenate(positions)),
            num_decode=len(step.decode),
            decode_tables=tables,
            decode_lens=lens,
            prefill_spans=spans,
        )
        logits_at = list(range(len(step.decode)))
        for span, chunk in zip(spans, step.prefill, strict=True):
            if chunk.completes:
                logits_at.append(span.start + span.length - 1)
        logits: Tensor = self.model(
            self._tensor(np.asarray(tokens)), batch, self.cache, self._tensor(np.asarray(logits_at, dtype=np.int64))
        )
        for seq in step.decode:
            seq.num_cached = seq.num_tokens
        for chunk in step.prefill:
            chunk.seq.num_cached = chunk.start + chunk.length
        return logits.float().cpu()

    def _span(self, start: int, chunk: Chunk) -> PrefillSpan:
        """Where ``chunk`` sits in the flat batch, and what of the cache it attends to."""
        if chunk.start == 0:
            return PrefillSpan(start, chunk.length)
        end = chunk.start + chunk.length
        table = self._tensor(np.asarray(chunk.seq.block_table[: self.blocks.blocks_for(end)], dtype=np.int64))
        queries = torch.arange(chunk.start, end, device=self.device).unsqueeze(1)  # (L, 1) positions
        mask = torch.arange(end, device=self.device) <= queries  # (L, end): causal, offset by the prefix
        return PrefillSpan(start, chunk.length, chunk.start, table, mask)

    def _tensor(self, array: np.ndarray) -> Tensor:
        return torch.from_numpy(array).to(self.device)
