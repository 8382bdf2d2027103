"""The ``zipml`` command line."""

import argparse
import json
import sys
import time

import numpy as np

from zipml.contract import WORD_WIDTHS, Encoding, Format, LevelMode, Loss, fitting_bits
from zipml.host.devices import DEVICE_HELP, open_device

__all__ = ["main"]

ENCODINGS = {e.name.lower(): e for e in Encoding}
LOSSES = {"squared": Loss.SQUARED, "logistic": Loss.LOGISTIC, "hinge": Loss.HINGE}


def _add_train_arguments(p):
    p.add_argument("--device", default="golden", help=f"where to train: {DEVICE_HELP}")
    p.add_argument("--data", default="diabetes",
                   help="diabetes, breast_cancer, digits, randhie, synthetic[:N:D], "
                        "a CSV file (last column is the label) or a LIBSVM file")
    p.add_argument("--loss", choices=sorted(LOSSES), default="squared")
    p.add_argument("--bits", type=int, default=4, help="bits per sample, 1..8")
    p.add_argument("--encoding", choices=sorted(ENCODINGS), default="pair")
    p.add_argument("--rounding", choices=("stochastic", "nearest"), default="stochastic")
    p.add_argument("--levels", choices=("uniform", "optimal"), default="uniform")
    p.add_argument("--unsigned", action="store_true",
                   help="scale features to [0, 1] instead of [-1, 1]")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1 / 32, help="learning rate, in (0, 1)")
    p.add_argument("--lr-decay-epochs", type=int, default=0,
                   help="halve the learning rate every this many epochs (0: never)")
    p.add_argument("--batch", type=int, default=1, help="mini-batch size")
    p.add_argument("--delay", type=int, choices=(0, 1), default=0,
                   help="1: a batch sees the model one batch late (hides pipeline latency)")
    p.add_argument("--width", type=int, choices=WORD_WIDTHS, default=128,
                   help="word width W of the device")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT", help="write the run's results as JSON")
    p.add_argument("--plot", metavar="PNG", help="write the loss curve as a PNG")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds to wait for each device response")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="zipml", description="Low-precision SGD with double sampling, on FPGA hardware.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_arguments(sub.add_parser("train", help="train a linear model on a device"))
    info = sub.add_parser("info", help="print a device's capabilities")
    info.add_argument("--device", default="inproc", help=f"which device: {DEVICE_HELP}")
    info.add_argument("--timeout", type=float, default=2.0, help="seconds per response")
    from zipml.hw import build as hw_build
    hw_build.add_build_arguments(sub.add_parser("build", help="build a board's bitstream"))
    hw_build.add_program_arguments(sub.add_parser("program", help="load a bitstream onto a board"))
    serve = sub.add_parser("serve-sim", help="serve the virtual board (the device's gateware "
                           "in Verilator) on a TCP port, or on XDMA-style named pipes, "
                           "until interrupted")
    serve.add_argument("--port", type=int, default=0, help="TCP port (0: a free one)")
    serve.add_argument("--width", type=int, choices=WORD_WIDTHS, default=128)
    serve.add_argument("--n-max", type=int, default=256)
    serve.add_argument("--memory-words", type=int, default=4096)
    serve.add_argument("--max-payload", type=int, default=1024,
                       help="largest request payload in bytes")
    serve.add_argument("--batch-max", type=int, default=256, help="largest mini-batch")
    serve.add_argument("--lanes", type=int,
                       help="fields processed per word (default W); e.g. --width 64 "
                            "--lanes 16 --dsp 8 is the ULX3S build's trainer")
    serve.add_argument("--dsp", type=int, nargs="?", const=True, default=False, metavar="K",
                       help="lane products on hard multipliers: every lane's, or those of "
                            "the first K lanes (as the ULX3S build)")
    serve.add_argument("--serial", action="store_true",
                       help="the lane-serial trainer (one field per cycle, every format)")
    serve.add_argument("--spram", action="store_true",
                       help="the iCE40UP5K's hard blocks, as the iCEBreaker build: resident data "
                            "in SPRAM (--memory-words a multiple of 16384), counters in "
                            "SB_MAC16s")
    serve.add_argument("--fifos", metavar="DIR",
                       help="serve it on named pipes laid out like the PCIe board's XDMA "
                            "character devices, DIR/xdma0_h2c_0 and DIR/xdma0_c2h_0 "
                            "(--device xdma://DIR/xdma0), instead of on the TCP port")
    bench = sub.add_parser("bench", help="reproduce the paper's claims: convergence, cycles, "
                           "throughput, reliability; writes bench.json, RESULTS.md, plots")
    bench.add_argument("--out", default="results", help="output folder")
    bench.add_argument("--quick", action="store_true",
                       help="a reduced run (about a minute or two; CI), into OUT/quick")
    bench.add_argument("--no-rtl", action="store_true", help="skip the Verilator measurements")
    demo = sub.add_parser("demo", help="train on diabetes at several precisions, print a table")
    demo.add_argument("--device", default="rtl", help=f"where to train: {DEVICE_HELP}")
    demo.add_argument("--epochs", type=int, default=5)
    demo.add_argument("--plot", default="demo_loss.png", help="loss-curve PNG to write")
    return parser


def run_train(args):
    from zipml.host.datasets import load_dataset
    from zipml.host.train import prepare, train

    loss = LOSSES[args.loss]
    encoding = ENCODINGS[args.encoding]
    signed = not args.unsigned
    mode = LevelMode.UNIFORM_SIGNED if signed else LevelMode.UNIFORM_UNSIGNED
    if args.levels == "optimal" and encoding != Encoding.RAW:
        mode = LevelMode.TABLE
    device = None
    try:
        fmt = Format(encoding, args.bits, mode)
        data = load_dataset(args.data, seed=args.seed)
        device = open_device(args.device, width=args.width, timeout=args.timeout)
        problem = prepare(data.X, data.y, loss=loss, signed=signed, max_features=device.n_max)
        table = None
        if fmt.levels == LevelMode.TABLE:
            from zipml.host.levels import optimal_table
            table = optimal_table((problem.xs[:, :-1] * fmt.top).ravel(), fmt)
        start = time.perf_counter()
        bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm
            bar = tqdm(total=args.epochs, desc=f"training on {args.device}", unit="epoch",
                       file=sys.stderr, leave=False)
        try:
            result = train(device, problem, fmt=fmt, loss=loss, rounding=args.rounding,
                           table=table, epochs=args.epochs, lr=args.lr,
                           lr_decay_epochs=args.lr_decay_epochs, batch=args.batch,
                           delay=args.delay, seed=args.seed,
                           progress=(lambda _: bar.update()) if bar else None)
        finally:
            if bar is not None:
                bar.close()
        elapsed = time.perf_counter() - start
    except (ValueError, OSError, RuntimeError) as exc:   # DeviceError is a ValueError
        raise SystemExit(f"zipml: {exc}") from None
    except KeyboardInterrupt:
        # Requests are whole frames and the next session opens with IDENTIFY and CONFIGURE,
        # so the device stays usable; say so instead of printing a traceback.
        print("zipml: interrupted; the device stays usable (the next run configures it again)",
              file=sys.stderr)
        return 130
    finally:
        if device is not None and hasattr(device, "close"):
            device.close()      # a virtual board started for this run stops here
    for epoch, value in enumerate(result.loss_curve):
        print(f"epoch {epoch:3d}  loss {value:.6f}")
    if result.stats["saturated_rows"]:
        print(f"warning: {result.stats['saturated_rows']} rows saturated the fixed-point "
              "arithmetic; lower the learning rate", file=sys.stderr)
    if args.json:
        out = result.to_json()
        out["parameters"] = {k: v for k, v in vars(args).items() if k not in ("json", "func")}
        out["data"] = {"name": data.name, "rows": int(data.X.shape[0]),
                       "features": int(data.X.shape[1])}
        out["levels_table"] = list(table) if table else None
        out["seconds"] = elapsed
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.plot:
        from zipml.host.plots import plot_loss_curves
        plot_loss_curves({f"{args.encoding} b={args.bits} on {args.device}": result.loss_curve},
                         args.plot, f"{data.name}: {args.loss} loss, lr {args.lr}, "
                         f"batch {args.batch}, seed {args.seed}")
    return 0


def run_info(args):
    try:
        device = open_device(args.device, timeout=args.timeout)
        if not hasattr(device, "identify"):
            raise ValueError(f"{args.device!r} is not a device that answers IDENTIFY; "
                             "try inproc, socket://HOST:PORT or a serial port")
        with device:
            info = device.identify()
    except (ValueError, OSError) as exc:
        raise SystemExit(f"zipml: {exc}") from None
    for key, value in info.items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(getattr(v, "name", str(v)).lower() for v in value)
        print(f"{key:14s} {value}")
    print(f"{'formats':14s} {supported_formats(info)}")
    return 0


def supported_formats(info):
    """The encodings and bits an IDENTIFY reply admits, e.g. ``pair b=2..8, raw``."""
    out = []
    for enc in info["encodings"]:
        if enc == Encoding.RAW:
            out.append("raw")
            continue
        bits = fitting_bits(info["width"], enc, info["lanes"], info["max_bits"])
        if bits:
            out.append(f"{enc.name.lower()} b={bits[0]}..{bits[-1]}")
    return ", ".join(out)


def run_serve_sim(args):
    import signal

    from zipml.sim.virtual_board import start_virtual_board, stop
    print("starting the virtual board (the first start of a configuration compiles it)...",
          file=sys.stderr, flush=True)
    params = dict(width=args.width, n_max=args.n_max, memory_words=args.memory_words,
                  max_payload=args.max_payload, batch_max=args.batch_max, lanes=args.lanes,
                  dsp=args.dsp, serial=args.serial, spram=args.spram)
    board = None
    if args.fifos:
        import os

        from zipml.sim.fifo_bridge import start_xdma_virtual_board
        try:
            board = start_xdma_virtual_board(os.path.join(os.path.abspath(args.fifos), "xdma0"),
                                             **params)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"zipml: {exc}") from None
        proc = board.proc
        where, pipes = board.url, (f"; requests into {board.bridge.h2c_path}, responses "
                                   f"from {board.bridge.c2h_path}")
    else:
        proc, port = start_virtual_board(args.port, **params)
        where, pipes = f"socket://127.0.0.1:{port}", ""
    stopping, status = [], 0
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    lanes = ", lane-serial" if args.serial else f", {args.lanes} lanes" if args.lanes else ""
    print(f"serving {where} (W={args.width}{lanes}, n_max={args.n_max}{pipes}); "
          "Ctrl-C stops it",
          flush=True)
    try:
        while not stopping and proc.poll() is None:
            if board is not None and board.bridge.error:
                print(f"zipml: the pipes' bridge stopped: {board.bridge.error}",
                      file=sys.stderr)
                status = 1
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # a second Ctrl-C must not orphan it
        if board is not None:
            board.stop()
        else:
            stop(proc)
    print("stopped", file=sys.stderr)
    return status


def run_bench(args):
    from pathlib import Path

    from zipml.host import bench, perf, reliability
    out = Path(args.out) / "quick" if args.quick else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "zipml bench" + (" --quick" if args.quick else "") + \
        (" --no-rtl" if args.no_rtl else "")
    conv = bench.run_convergence(out, quick=args.quick, command=command)
    lowest = {k: v["double"] for k, v in conv["claims"]["lowest_bits_within_1pct"].items()}
    n_features = {k: d["features"] + 1 for k, d in conv["datasets"].items()}
    print("performance...", file=sys.stderr, flush=True)
    performance = perf.run_performance(args.quick, lowest, n_features, rtl=not args.no_rtl)
    print("reliability...", file=sys.stderr, flush=True)
    rel = reliability.run_reliability(quick=args.quick)
    results = {"meta": conv["meta"], "convergence": conv, "performance": performance,
               "reliability": rel}
    (out / "bench.json").write_text(json.dumps(results, indent=1, default=str))
    bench.write_results_md(conv, out / "RESULTS.md")
    perf.write_performance_md(performance, conv["meta"], out / "RESULTS.md")
    reliability.write_reliability_md(rel, conv["meta"], out / "RESULTS.md")
    if not args.quick:
        perf.write_readme_section(results, Path("README.md"), out)
    print(f"wrote {out / 'bench.json'} and {out / 'RESULTS.md'}")
    return 0


def run_demo(args):
    from zipml.host.datasets import load_dataset
    from zipml.host.levels import optimal_table
    from zipml.host.plots import plot_loss_curves
    from zipml.host.train import objective, prepare, train
    from zipml.sim.golden import GoldenDevice

    data = load_dataset("diabetes")
    problem = prepare(data.X, data.y)
    lr, epochs, width = 1 / 32, args.epochs, 64
    # Full-precision float64 SGD on the same scaled data, same order, same learning rate.
    w = np.zeros(problem.n_features)
    curve = [objective(problem.xs, problem.y, w, Loss.SQUARED)]
    for _ in range(epochs):
        for x, y in zip(problem.xs, problem.y):
            w -= lr * (x @ w - y) * x
        curve.append(objective(problem.xs, problem.y, w, Loss.SQUARED))
    curves = {"float64 (CPU)": curve}
    runs = [("raw 32-bit fixed point", Format(Encoding.RAW), "nearest"),
            ("naive single, b=2", Format(Encoding.SINGLE, 2), "stochastic"),
            ("double sampling, b=2", Format(Encoding.COMPACT, 2), "stochastic"),
            ("double sampling, b=4", Format(Encoding.COMPACT, 4), "stochastic"),
            ("double, optimal levels, b=2", Format(Encoding.PAIR, 2, LevelMode.TABLE),
             "stochastic")]
    if args.device != "golden":
        print(f"opening {args.device} (a first start of the virtual board compiles it: "
              "minutes)...", file=sys.stderr, flush=True)
    try:
        device = open_device(args.device, width=width, n_max=64, timeout=10.0)
    except (ValueError, OSError, RuntimeError, TimeoutError) as exc:
        raise SystemExit(f"zipml: {exc}") from None
    rows = [("float64 (CPU)", 64, curve[-1], None, "-")]
    try:
        for name, fmt, rounding in runs:
            table = None
            if fmt.levels == LevelMode.TABLE:
                table = optimal_table((problem.xs[:, :-1] * fmt.top).ravel(), fmt)
            kwargs = dict(fmt=fmt, rounding=rounding, table=table, epochs=epochs, lr=lr,
                          width=width)
            golden = train(GoldenDevice(width=width, n_max=64), problem, **kwargs)
            result = golden if args.device == "golden" else train(device, problem, **kwargs)
            same = "yes" if np.array_equal(golden.words, result.words) else "NO"
            rows.append((name, fmt.field_bits, golden.loss_curve[-1], result.loss_curve[-1],
                         same))
            curves[f"{name} ({args.device})"] = result.loss_curve
    finally:
        if hasattr(device, "close"):
            device.close()
    print(f"diabetes ({data.X.shape[0]} x {data.X.shape[1]}), {epochs} epochs, lr {lr}, "
          f"W = {width}, device {args.device}")
    print(f"{'run':30s} {'bits/feature':>12s} {'loss, golden':>13s} {'loss, device':>13s} "
          f"{'same words':>10s}")
    for name, fb, gold, dev, same in rows:
        dev = "-" if dev is None else f"{dev:.6f}"
        print(f"{name:30s} {fb:12d} {gold:13.6f} {dev:>13s} {same:>10s}")
    plot_loss_curves(curves, args.plot, f"diabetes, {epochs} epochs, lr {lr}: "
                     f"device {args.device} beside float64")
    print(f"loss curves: {args.plot}")
    if any(r[4] == "NO" for r in rows):
        raise SystemExit("zipml: the device's model words differ from the golden model's")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command in ("build", "program"):
        from zipml.hw import build as hw_build
        return {"build": hw_build.run_build, "program": hw_build.run_program}[args.command](args)
    return {"train": run_train, "info": run_info, "serve-sim": run_serve_sim,
            "bench": run_bench, "demo": run_demo}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
