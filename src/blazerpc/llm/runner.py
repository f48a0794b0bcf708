"""The model runner owns the tensors: it turns a scheduled step into one forward call."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .attention import AttentionBatch, KVCache, PrefillSpan
from .block_manager import BlockManager
from .model import Llama
from .scheduler import Chunk, Step
from .sequence import Sequence


class ModelRunner:
    def __init__(self, model: Llama, blocks: BlockManager, device: str = "cpu") -> None:
        self.model = model
        self.blocks = blocks
        self.device = device
        self.cache = KVCache(model.config, blocks.num_blocks, blocks.block_size, device, model.weight_dtype)

    @torch.inference_mode()
    def run(self, step: Step) -> Tensor:
        """Next-token logits ``(len(step.sampled), vocab)``; marks every computed token cached.

        Rows go in ``step`` order: decode tokens, then prompt chunks. Decode rows attend from the
        paged cache; chunk rows do too where the model can (``Llama.paged_prefill``), else each
        chunk is a ``PrefillSpan`` for torch's attention.
        """
        tokens: list[int] = [seq.last_id for seq in step.decode]
        positions = [np.array([seq.num_tokens - 1]) for seq in step.decode]  # each one's newest token
        for chunk in step.prefill:
            tokens.extend(chunk.seq.all_ids[chunk.start : chunk.start + chunk.length])
            positions.append(np.arange(chunk.start, chunk.start + chunk.length))
        owners = list(step.decode) + [chunk.seq for chunk in step.prefill]
        position = np.concatenate(positions)
        row_owner = np.repeat(np.arange(len(owners)), [len(p) for p in positions])
        tables = self._block_tables(owners)  # (sequences, width), padded with block 0
        block_size = self.blocks.block_size
        num_paged = len(tokens) if self.model.paged_prefill else len(step.decode)
        spans, last_rows, row = [], [], len(step.decode)
        for chunk in step.prefill:
            if num_paged == len(step.decode):
                spans.append(self._span(row, chunk))
            row += chunk.length
            if chunk.completes:
                last_rows.append(row - 1)  # its logits give the next token
        batch = AttentionBatch(
            slot_blocks=self._tensor(tables[row_owner, position // block_size]),
            slot_offsets=self._tensor(position % block_size),
            positions=self._tensor(position),
            num_paged=num_paged,
            paged_tables=self._tensor(tables[row_owner[:num_paged]]) if num_paged else None,
            paged_lens=self._tensor(position[:num_paged] + 1) if num_paged else None,
            prefill_spans=spans,
        )
        logits_at = np.asarray(list(range(len(step.decode))) + last_rows, dtype=np.int64)
        logits: Tensor = self.model(self._tensor(np.asarray(tokens)), batch, self.cache, self._tensor(logits_at))
        for seq in step.decode:
            seq.num_cached = seq.num_tokens
        for chunk in step.prefill:
            chunk.seq.num_cached = chunk.start + chunk.length
        return logits.float().cpu()

    @staticmethod
    def _block_tables(seqs: list[Sequence]) -> np.ndarray:
        """The sequences' block tables as rows of one matrix, padded with block 0 (never read)."""
        width = max((len(seq.block_table) for seq in seqs), default=0)
        tables = np.zeros((len(seqs), max(width, 1)), dtype=np.int64)
        for i, seq in enumerate(seqs):
            tables[i, : len(seq.block_table)] = seq.block_table
        return tables

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
