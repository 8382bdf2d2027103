"""Benchmark the SGD pipeline's RTL: cycles per epoch per format, efficiency, speed-up over RAW.

``python -m zipml.sim.bench_rtl [--width 128] [--n-max 1024] [--rows 64] [--ns 64,256,1000]``
builds one :class:`zipml.hw.pipeline.SGDPipeline`, runs one epoch of random rows for every
(encoding, b) and n in Verilator (B = 16, delay = 1, no snapshots), checks each count against
:func:`zipml.sim.timing.run_cycles`, and prints a table: cycles per epoch, efficiency
(input words / cycles), cycle speed-up over RAW at the same W, and the simulator's cycles/s.
This module is also the cocotb test module it runs.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["main", "bench_configs"]

ENCODINGS = ("SINGLE", "PAIR", "COMPACT")


def bench_configs(ns, bits=(1, 2, 4, 8)):
    """(encoding name, b, n) to measure; RAW once per n."""
    out = [(enc, b, n) for n in ns for enc in ENCODINGS for b in bits]
    return out + [("RAW", 1, n) for n in ns]


def _train_config(enc, bits, n, rows):
    from zipml.contract import Encoding, Format
    from zipml.sim.golden import TrainConfig
    return TrainConfig(n_features=n, rows_per_epoch=rows, fmt=Format(Encoding[enc], bits),
                       batch=16, delay=1)


def main(argv=None):
    from zipml.hw.pipeline import SGDPipeline
    from zipml.sim import timing
    from zipml.sim.runner import ROOT, build_and_test

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--n-max", type=int, default=1024)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--ns", default="64,256,1000")
    args = ap.parse_args(argv)
    ns = [int(x) for x in args.ns.split(",")]
    configs = bench_configs(ns)
    build = ROOT / "build" / f"bench_rtl_{args.width}_{args.n_max}"
    out = build / "bench.json"
    build.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    build_and_test(SGDPipeline(args.width, args.n_max), "bench_rtl", build,
                   test_dir=Path(__file__).resolve().parent,
                   env={"BENCH_CONFIGS": json.dumps(configs), "BENCH_OUT": out,
                        "WIDTH": args.width, "N_MAX": args.n_max, "ROWS": args.rows})
    results = json.loads(out.read_text())
    print(f"W={args.width} n_max={args.n_max}: {args.rows} rows per epoch, B=16, delay=1; "
          f"build+run {time.time() - t0:.0f} s, simulator "
          f"{results['cycles_total'] / results['seconds']:.0f} cycles/s")
    from zipml.contract import row_words
    raw = {n: c for (enc, b, n), c in zip(configs, results["cycles"]) if enc == "RAW"}
    print(f"{'format':>12} {'n':>5} {'R':>4} {'cycles':>8} {'model':>8} {'eff':>6} "
          f"{'vs RAW':>7}")
    for (enc, b, n), cycles in zip(configs, results["cycles"]):
        cfg = _train_config(enc, b, n, args.rows)
        r = row_words(args.width, cfg.fmt, n)
        want = timing.run_cycles(args.width, cfg, 1)
        name = "RAW" if enc == "RAW" else f"{enc} b={b}"
        print(f"{name:>12} {n:>5} {r:>4} {cycles:>8} {want:>8} "
              f"{args.rows * r / cycles:>6.3f} {raw[n] / cycles:>6.2f}x"
              + ("" if cycles == want else "  MISMATCH"))
    return results


# --- the cocotb side ----------------------------------------------------------------------------

try:
    import cocotb
except ImportError:                                       # pragma: no cover
    cocotb = None

if cocotb is not None and "BENCH_CONFIGS" in os.environ:
    @cocotb.test()
    async def bench(dut):
        import numpy as np
        from cocotb.clock import Clock
        from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

        from zipml.host.pack import pack_rows
        from zipml.hw.pipeline import ConfigLayout
        from zipml.sim.streams import StreamPort, stream_put

        width, rows = int(os.environ["WIDTH"]), int(os.environ["ROWS"])
        configs = json.loads(os.environ["BENCH_CONFIGS"])
        data = StreamPort(dut, "i_stream")
        i_model = StreamPort(dut, "i_model")
        data.valid.value = i_model.valid.value = 0
        dut.o_model__ready.value = 1
        dut.i_table__valid.value = 0
        dut.start.value = dut.load.value = dut.read.value = 0
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.rst.value = 1
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        g = np.random.default_rng(0)
        cycles, total, seconds = [], 0, 0.0
        for enc, b, n in configs:
            cfg = _train_config(enc, b, n, rows)
            fb = cfg.fmt.field_bits
            hi = (1 << 30) if enc == "RAW" else (1 << fb) - 1 if enc != "COMPACT" else 0
            fields = g.integers(0, max(hi, 1), size=(rows, n)).astype(np.uint32)
            labels = g.integers(-(1 << 24), 1 << 24, size=rows).astype(np.int32)
            words = [sum(int(x) << (32 * i) for i, x in enumerate(w))
                     for w in pack_rows(fields, labels, width, cfg.fmt)]
            values = {"n_features": n, "encoding": int(cfg.fmt.encoding), "bits": b,
                      "levels": 0, "loss": 0, "lr": cfg.lr, "lr_decay_epochs": 0, "batch": 16,
                      "delay": 1, "rows_per_epoch": rows, "epochs": 1, "snapshots": 0}
            await FallingEdge(dut.clk)
            dut.config.value = sum((values[k] & ((1 << f.width) - 1)) << f.offset
                                   for k, f in ConfigLayout)
            dut.load.value = 1
            await FallingEdge(dut.clk)
            dut.load.value = 0
            await stream_put(i_model, [0] * n)
            await ClockCycles(dut.clk, 2)
            t = time.perf_counter()
            feeder = cocotb.start_soon(stream_put(data, words))
            await FallingEdge(dut.clk)
            dut.start.value = 1
            await FallingEdge(dut.clk)
            dut.start.value = 0
            await feeder
            while True:
                await RisingEdge(dut.clk)
                await ReadOnly()
                if not int(dut.busy.value):
                    break
            seconds += time.perf_counter() - t
            cycles.append(int(dut.cycles.value))
            total += cycles[-1]
        Path(os.environ["BENCH_OUT"]).write_text(json.dumps(
            {"cycles": cycles, "cycles_total": total, "seconds": seconds}))


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
