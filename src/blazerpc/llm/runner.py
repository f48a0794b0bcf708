"""The model runner owns the tensors: it turns a scheduled step into one forward call."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .block_manager import BlockManager
from .model import AttentionBatch, KVCache, Llama
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
    def run(self, decode: list[Sequence], prefill: list[Sequence]) -> Tensor:
        """Next-token logits ``(len(decode) + len(prefill), vocab)``, in that order."""
        tokens: list[int] = []
        positions: list[np.ndarray] = []
        slots: list[tuple[np.ndarray, np.ndarray]] = []
        for seq in decode:  # the newest token of each, at position num_tokens - 1
            n = seq.num_tokens
            tokens.append(seq.last_id)
            positions.append(np.array([n - 1]))
            slots.append(self.slots(seq, n - 1, n))
        spans = []
        for seq in prefill:
            n = seq.num_tokens
            spans.append((len(tokens), n))
            tokens.extend(seq.all_ids)
            positions.append(np.arange(n))
            slots.append(self.slots(seq, 0, n))
        tables = lens = None
        if decode:
            width = max(len(seq.block_table) for seq in decode)
            table = np.zeros((len(decode), width), dtype=np.int64)  # padding: block 0, never read
            for row, seq in enumerate(decode):
                table[row, : len(seq.block_table)] = seq.block_table
            tables = self._tensor(table)
            lens = self._tensor(np.array([seq.num_tokens for seq in decode], dtype=np.int64))
        batch = AttentionBatch(
            slot_blocks=self._tensor(np.concatenate([blocks for blocks, _ in slots])),
            slot_offsets=self._tensor(np.concatenate([offsets for _, offsets in slots])),
            positions=self._tensor(np.concatenate(positions)),
            num_decode=len(decode),
            decode_tables=tables,
            decode_lens=lens,
            prefill_spans=spans,
        )
        logits_at = list(range(len(decode))) + [start + n - 1 for start, n in spans]
        logits: Tensor = self.model(
            self._tensor(np.asarray(tokens)), batch, self.cache, self._tensor(np.asarray(logits_at))
        )
        for seq in decode + prefill:
            seq.num_cached = seq.num_tokens
        return logits.float().cpu()

    def _tensor(self, array: np.ndarray) -> Tensor:
        return torch.from_numpy(array).to(self.device)
