"""Time of one engine decode step, per weight format and number of streams, in-process.

Loads the default model once per format (``--weights``: full bfloat16/float32 matrices, int8,
int4; ``--dtype`` as ``blaze llm``), starts B sequences of ~100 prompt tokens, and times the
steps in which all B decode (prefill excluded), interleaving the formats round by round. The
baseline is ``full``; ``ratio`` is its step time over the format's. ``--profile`` prints where a
step's time goes (torch's profiler, by operator) for each format at the largest B.

    python benchmarks/decode_step.py [--streams 1,8,32] [--steps 32] [--rounds 3] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import cpu_line, table

from blazerpc.llm.config import EngineConfig
from blazerpc.llm.device import DTYPES, torch_dtype
from blazerpc.llm.engine import LLMEngine
from blazerpc.llm.loader import load
from blazerpc.llm.params import SamplingParams
from blazerpc.llm.sequence import Sequence


def step_times(engine: LLMEngine, streams: int, steps: int) -> list[float]:
    """``steps`` steps in which all ``streams`` sequences decode (after every prompt is in)."""
    prompt = engine.tokenizer.encode("Write a long story about a lighthouse keeper and the sea. " * 8)[:100]
    params = SamplingParams(max_tokens=4 * steps + 64, temperature=0.0, ignore_eos=True)  # more than measured
    for i in range(streams):
        engine.add(Sequence([*prompt[:-1], prompt[-1] + i], params), lambda event: None)
    while any(not seq.output_ids for seq in engine.seqs.values()):  # prefill every prompt
        engine.step()
    times: list[float] = []
    while len(times) < steps:
        started = time.perf_counter()
        advanced = engine.step()
        if advanced == streams:
            times.append(time.perf_counter() - started)
    for seq_id in list(engine.seqs):
        engine.abort(seq_id)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="1,8,32")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--weights", default="full,int8,int4")
    parser.add_argument("--dtype", default="auto", help=f"auto, {', '.join(DTYPES)}, or several, comma-separated")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print(cpu_line())
    formats = []  # (dtype, weights) pairs, the first the baseline
    engines = {}
    for name in args.dtype.split(","):
        config = EngineConfig(dtype=name, prefix_caching=False)
        dtype = torch_dtype(config)
        for weights in args.weights.split(","):
            fmt = f"{str(dtype).removeprefix('torch.')} {weights}"
            formats.append(fmt)
            engines[fmt] = LLMEngine(load(dtype=dtype, weights=weights), config)
    levels = [int(s) for s in args.streams.split(",")]
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for streams in levels:
            for fmt, engine in engines.items():
                results.setdefault((fmt, streams), []).extend(step_times(engine, streams, args.steps))
    rows = []
    for streams in levels:
        base = statistics.median(results[formats[0], streams])
        for fmt in formats:
            ms = statistics.median(results[fmt, streams]) * 1000
            p99 = statistics.quantiles(results[fmt, streams], n=100)[98] * 1000
            tok_s, ratio = streams / ms * 1000, base * 1000 / ms
            rows.append([str(streams), fmt, f"{ms:.2f}", f"{p99:.2f}", f"{tok_s:.0f}", f"{ratio:.2f}"])
    print(f"{torch.get_num_threads()} threads")
    print(table(["streams", "weights", "step ms p50", "step ms p99", "tok/s", f"ratio vs {formats[0]}"], rows))
    if args.profile:
        for fmt, engine in engines.items():
            with torch.profiler.profile() as prof:
                step_times(engine, levels[-1], 8)
            print(f"\n{fmt}, {levels[-1]} streams: where a step's time goes (8 decode steps and their prefill)")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
