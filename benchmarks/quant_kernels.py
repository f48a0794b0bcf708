"""One linear layer's product, per weight format, for the default model's matrix shapes.

For 1..32 rows of x (decode steps of that many streams) and each of SmolLM2-135M's matrices
(fused QKV, attention output, fused gate/up, down, LM head), times ``Linear``'s product with
the weights in bfloat16 (what it does today: kernels.cpp for few rows, oneDNN above) and with
int8 and int4 weights (quant.cpp, on the fastest instruction-set path this CPU has), interleaved,
the median of ``--repeats``. The baseline is bfloat16; the ratio is its time over the format's.

    python benchmarks/quant_kernels.py [--rows 1,2,4,8,16,32] [--repeats 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import table

from blazerpc.llm import quant
from blazerpc.llm.linear import Linear

SHAPES = {"wqkv": (960, 576), "wo": (576, 576), "w13": (3072, 576), "w2": (576, 1536), "lm head": (49152, 576)}


def timed(run: object, repeats: int) -> float:
    assert callable(run)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,2,4,8,16,32")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"CPU path: {quant.ISAS[quant.best_isa()]}, {torch.get_num_threads()} threads")
    rows_out = []
    for name, (n, k) in SHAPES.items():
        layers = {}
        for fmt in ("bf16", "int8", "int4"):
            layer = Linear(k, n)
            torch.nn.init.normal_(layer.weight, std=0.02)
            if fmt != "bf16":
                layer.quantize(quant.FORMATS[fmt])
                layer.quant_rows = 64  # every row count here goes to quant.cpp
            layer.weight.data = layer.weight.data.bfloat16()
            layer.prepare_decode()
            layers[fmt] = layer
        for rows in (int(r) for r in args.rows.split(",")):
            x = torch.randn(rows, k)
            times = dict.fromkeys(layers, 0.0)
            with torch.inference_mode():
                for _ in range(3):  # interleaved rounds; the best median of each
                    for fmt, layer in layers.items():
                        t = timed(lambda layer=layer, x=x: layer(x), args.repeats // 3)
                        times[fmt] = t if not times[fmt] else min(times[fmt], t)
            q4 = layers["int4"].quantized
            assert q4 is not None
            gbs = q4.nbytes / times["int4"] / 1e9
            rows_out.append(
                [name, str(rows), *(f"{times[f] * 1e6:.0f}" for f in layers),
                 f"{times['bf16'] / times['int8']:.2f}", f"{times['bf16'] / times['int4']:.2f}", f"{gbs:.1f}"]
            )  # fmt: skip
    headers = ["matrix", "rows", "bf16 us", "int8 us", "int4 us", "int8 speedup", "int4 speedup", "int4 GB/s"]
    print(table(headers, rows_out))


if __name__ == "__main__":
    main()
