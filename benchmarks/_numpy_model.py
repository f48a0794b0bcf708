"""The benchmark model of batching.py, numpy only, so another blazerpc's venv can import it."""

from __future__ import annotations

import time

import numpy as np

FIXED_COST_S = 0.020
WEIGHTS = np.random.default_rng(0).standard_normal((512, 512), dtype=np.float32) / 22.6


def _calibrate() -> int:
    """Loop iterations of pure Python that take FIXED_COST_S on this machine (holding the GIL)."""
    n, elapsed = 20_000, 0.0
    while elapsed < 0.05:
        n *= 2
        started = time.perf_counter()
        _spin(n)
        elapsed = time.perf_counter() - started
    return int(n * FIXED_COST_S / elapsed)


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


SPIN = 0


def fixed_cost() -> None:
    global SPIN
    SPIN = SPIN or _calibrate()
    _spin(SPIN)


def forward(x: np.ndarray) -> np.ndarray:
    fixed_cost()
    logits = x @ WEIGHTS
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
