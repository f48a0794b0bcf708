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

    def slots(self, seq: Sequence, start: int, stop: int) -> np.ndarray:
        """Cache slots of positions ``start..stop-1`` of ``seq``."""
        bs = self.blocks.block_size
        positions = np.arange(start, stop)
        table = np.asarray(seq.block_table, dtype=np.int64)
        slots: np.ndarray = table[positions // bs] * bs + positions % bs
        return slots

    @torch.inference_mode()
    def run(self, decode: list[Sequence], prefill: list[Sequence]) -> Tensor:
        """Next-token logits ``(len(decode) + len(prefill), vocab)``, in that order."""
        tokens: list[int] = []
        positions: list[np.ndarray] = []
        slot_mapping: list[np.ndarray] = []
        for seq in decode:  # the newest token of each, at position num_tokens - 1
            n = seq.num_tokens
            tokens.append(seq.last_id)
            positions.append(np.array([n - 1]))
            slot_mapping.append(self.slots(seq, n - 1, n))
        spans = []
        for seq in prefill:
            n = seq.num_tokens
            spans.append((len(tokens), n))
            tokens.extend(seq.all_ids)
            positions.append(np.arange(n))
            slot_mapping.append(self.slots(seq, 0, n))
        decode_rows = decode_pad = None
        if decode:
            bs, kvh = self.blocks.block_size, self.model.config.n_kv_heads
            width = max(len(seq.block_table) for seq in decode)
            table = np.zeros((len(decode), width), dtype=np.int64)  # padding reads block 0, masked
            pad = np.ones((len(decode), width * bs), dtype=bool)
            for row, seq in enumerate(decode):
                table[row, : len(seq.block_table)] = seq.block_table
                pad[row, : seq.num_tokens] = False
            heads = np.arange(kvh)[:, None] * self.blocks.num_blocks
            decode_rows = self._tensor((heads + table.reshape(1, -1)).reshape(-1))
            decode_pad = self._tensor(np.ascontiguousarray(np.broadcast_to(pad, (kvh, *pad.shape))))
            decode_pad = decode_pad.view(kvh * len(decode), 1, width * bs)
        batch = AttentionBatch(
            slot_mapping=self._tensor(np.concatenate(slot_mapping)),
            positions=self._tensor(np.concatenate(positions)),
            num_decode=len(decode),
            decode_rows=decode_rows,
            decode_pad=decode_pad,
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
