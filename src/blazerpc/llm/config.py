"""The engine's configuration: plain data, importable without torch (the server process reads it)."""

from __future__ import annotations

from dataclasses import dataclass

from .scheduler import SchedulerConfig

DTYPES = ("float32", "bfloat16")
WEIGHTS = ("full", "int8", "int4")  # "full": the matrices in dtype, not quantized


@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int = 32
    max_waiting: int = 256  # requests queued beyond max_num_seqs before 429 (the client's admission)
    max_num_batched_tokens: int = SchedulerConfig.max_num_batched_tokens  # per step (see there)
    prefix_caching: bool = True  # reuse the KV blocks of prompt prefixes seen before
    max_model_len: int = 2048
    kv_cache_mb: int = 1024
    block_size: int = 16
    device: str = "auto"  # "auto": CUDA when torch sees a GPU, else CPU
    dtype: str = "auto"  # "auto": bfloat16 where the hardware has bf16 instructions, else float32
    weights: str = "auto"  # decode steps' weights; "auto": int4 where the native kernels run (not with float32)
    threads: int | None = None  # torch threads in the engine process (None: torch's default)

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be auto, {', '.join(DTYPES)}; got {self.dtype!r}")
        if self.weights != "auto" and self.weights not in WEIGHTS:
            raise ValueError(f"weights must be auto, {', '.join(WEIGHTS)}; got {self.weights!r}")
        for name in ("max_waiting", "kv_cache_mb", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.scheduler  # noqa: B018  (raises on a bad max_num_seqs or max_num_batched_tokens)
        if self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (or None for torch's default), got {self.threads}")

    @property
    def scheduler(self) -> SchedulerConfig:
        """The scheduler's part (it checks its own fields: built once in ``__post_init__``)."""
        return SchedulerConfig(max_num_seqs=self.max_num_seqs, max_num_batched_tokens=self.max_num_batched_tokens)

    @property
    def capacity(self) -> int:
        """Requests the engine takes at once, running or queued; one more is refused with 429."""
        return self.max_num_seqs + self.max_waiting

    def num_blocks(self, bytes_per_token: int) -> int:
        blocks = self.kv_cache_mb * 2**20 // (bytes_per_token * self.block_size)
        needed = -(-self.max_model_len // self.block_size)
        if blocks < needed:
            raise ValueError(
                f"kv_cache_mb={self.kv_cache_mb} holds {blocks * self.block_size} tokens, fewer than one "
                f"max_model_len={self.max_model_len} sequence; raise kv_cache_mb or lower max_model_len"
            )
        return int(blocks)
