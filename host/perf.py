"""The performance half of ``zipml bench``: cycles, speed-ups, modelled device throughput against
CPU baselines timed in the same run, link-bound against resident epochs, host preparation speed.

Cycle counts come from :func:`zipml.sim.timing.run_cycles` (the RTL meets it exactly: the RTL
tests assert it, and :mod:`zipml.sim.bench_rtl` measures it in Verilator); clock rates and word
widths from the committed bitstream reports. Wall-clock figures are measured here, side by side,
and only ever reported as measured on this machine.
"""

import json
import time
from pathlib import Path

import numpy as np

from zipml import contract
from zipml.contract import Encoding, Format, LevelMode, format_fits
from zipml.host.report import replace_section
from zipml.sim import timing
from zipml.sim.golden import TrainConfig

__all__ = ["PERF_KEYS", "PREP_FORMATS", "cycle_table", "board_figures", "cpu_baselines",
           "host_prep_speed", "prep_formats", "prep_name", "link_epoch_seconds",
           "run_performance", "main"]

#: Top-level keys of the performance part of bench.json.
PERF_KEYS = ("cycles", "speedup_at_equal_loss", "boards", "cpu", "host_prep", "rtl_sim")

REPO = Path(__file__).resolve().parent.parent
FORMATS = ([Format(e, b) for e in (Encoding.SINGLE, Encoding.PAIR, Encoding.COMPACT)
            for b in (1, 2, 3, 4, 8)] + [Format(Encoding.RAW)])


def fmt_name(fmt):
    if fmt.encoding == Encoding.RAW:
        return "raw"
    return f"{fmt.encoding.name.lower()} b={fmt.bits}"


def epoch_cycles(width, fmt, n, rows, batch=16, delay=1, lanes=None, serial=False):
    """Cycles of one epoch on the pipeline, or with ``serial`` on the lane-serial one (exact)."""
    cfg = TrainConfig(n_features=n, rows_per_epoch=rows, fmt=fmt, batch=batch, delay=delay)
    if serial:
        return timing.serial_run_cycles(width, cfg, 1)
    return timing.run_cycles(width, cfg, 1, lanes=lanes)


def cycle_table(widths=(32, 64, 128, 256), ns=(11, 64, 100, 256, 1000), rows=1000):
    """Cycles per epoch, efficiency against rows * R and speed-up over RAW, per (W, n, format)."""
    out = []
    for width in widths:
        for n in ns:
            raw = epoch_cycles(width, Format(Encoding.RAW), n, rows)
            for fmt in FORMATS:
                r = contract.row_words(width, fmt, n)
                cycles = epoch_cycles(width, fmt, n, rows)
                out.append({"width": width, "n": n, "format": fmt_name(fmt),
                            "field_bits": fmt.field_bits, "row_words": r, "cycles": cycles,
                            "efficiency": rows * r / cycles, "speedup_vs_raw": raw / cycles})
    return out


def speedup_at_equal_loss(lowest_bits, n_features, width=128, rows=1000):
    """Cycle speed-up over RAW of the cheapest double-sampled format that reaches float64's loss.

    ``lowest_bits`` maps a data set to the lowest b at which double sampling ended within 1% of
    float64 (from the convergence part); ``n_features`` maps it to n (bias included).
    """
    out = {}
    for name, bits in lowest_bits.items():
        if bits is None or name not in n_features:
            continue
        n = n_features[name]
        raw = epoch_cycles(width, Format(Encoding.RAW), n, rows)
        best = min((Format(e, bits) for e in (Encoding.PAIR, Encoding.COMPACT)),
                   key=lambda f: epoch_cycles(width, f, n, rows))
        out[name] = {"bits": bits, "format": fmt_name(best), "n": n, "width": width,
                     "speedup_vs_raw": raw / epoch_cycles(width, best, n, rows)}
    return out


def link_epoch_seconds(width, fmt, n, rows, baud, clock_hz, seed=0):
    """One epoch streamed over a UART at ``baud`` (8N1, framed and stuffed as on the wire)
    against the same epoch from resident memory at ``clock_hz``."""
    from zipml.host.pack import pack_rows
    from zipml.host.quantize import encode
    from zipml.protocol import MAX_PAYLOAD, Cmd, encode_frame
    g = np.random.default_rng(seed)
    fields = encode(g.uniform(-1, 1, (rows, n)) * fmt.top, fmt, "stochastic", g)
    words = pack_rows(fields, g.integers(-(1 << 24), 1 << 24, rows).astype(np.int32), width,
                      fmt)
    data = words.astype("<u4").tobytes()
    step = MAX_PAYLOAD - MAX_PAYLOAD % (width // 8)
    wire = sum(len(encode_frame(Cmd.TRAIN_STREAM, 0, data[i:i + step]))
               for i in range(0, len(data), step))
    return {"wire_bytes": wire, "uart_s": wire * 10 / baud,
            "resident_s": epoch_cycles(width, fmt, n, rows) / clock_hz}


def board_figures(bitstreams=REPO / "bitstreams", n=100, rows=20_000):
    """Per board whose committed bitstream carries the training device: from its report, the
    clock (the target if timing was met, else the measured Fmax), W, lanes, features/s per
    format it takes (exact cycles at that clock) and the UART-bound against resident epoch
    time. Boards with another core are listed under ``"other_cores"``."""
    out = {}
    for report_path in sorted(Path(bitstreams).glob("*/report.json")):
        report = json.loads(report_path.read_text())
        params = report["parameters"]
        if report.get("core") != "device":
            out.setdefault("other_cores", {})[report["board"]] = report.get("core")
            continue
        width, serial = params["width"], params.get("serial", False)
        lanes = width if serial else params.get("lanes", width)
        t = report["timing"]
        clock = params["clk_hz"] if t["pass"] else min(params["clk_hz"],
                                                        t["core_fmax_mhz"] * 1e6)
        entry = {"core": "device", "width": width, "lanes": lanes, "serial": serial,
                 "clock_hz": clock,
                 "baud": params["baud"], "fmax_mhz": t["core_fmax_mhz"],
                 "timing_met": t["pass"], "formats": {}}
        for fmt in (Format(Encoding.RAW), Format(Encoding.PAIR, 4), Format(Encoding.COMPACT, 4),
                    Format(Encoding.COMPACT, 2), Format(Encoding.PAIR, 2),
                    Format(Encoding.SINGLE, 4)):
            if not format_fits(width, fmt, lanes):
                continue
            cycles = epoch_cycles(width, fmt, n, rows, lanes=lanes, serial=serial)
            link = link_epoch_seconds(width, fmt, n, min(rows, 2000), params["baud"], clock)
            scale = rows / min(rows, 2000)
            entry["formats"][fmt_name(fmt)] = {
                "features_per_s": n * rows * clock / cycles,
                "epoch_cycles": cycles,
                "resident_epoch_s": cycles / clock,
                "uart_epoch_s": link["uart_s"] * scale,
                "uart_over_resident": link["uart_s"] * scale / (cycles / clock)}
        out[report["board"]] = entry
    return out


def cpu_baselines(rows=20_000, features=100, epochs=3, seed=0):
    """CPU references on the same synthetic least-squares data, timed here: scikit-learn's
    SGDRegressor and numpy float32 mini-batch-16 SGD. Feature-updates per second."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDRegressor
    g = np.random.default_rng(seed)
    X = g.uniform(-1, 1, (rows, features))
    y = X @ g.uniform(-1, 1, features) + 0.01 * g.standard_normal(rows)
    work = rows * features * epochs
    model = SGDRegressor(max_iter=epochs, tol=None, learning_rate="constant", eta0=1e-3,
                         shuffle=False, random_state=0)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    sk = time.perf_counter() - t
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    w = np.zeros(features, np.float32)
    lr = np.float32(1e-3)
    t = time.perf_counter()
    for _ in range(epochs):
        for i in range(0, rows, 16):
            xb = X32[i:i + 16]
            w -= lr * (xb.T @ (xb @ w - y32[i:i + 16]))
    npt = time.perf_counter() - t
    return {"rows": rows, "features": features, "epochs": epochs,
            "sklearn_sgd_features_per_s": work / sk,
            "numpy_f32_minibatch16_features_per_s": work / npt}


#: The formats of ``host_prep`` in bench.json.
PREP_FORMATS = (Format(Encoding.PAIR, 4), Format(Encoding.COMPACT, 2), Format(Encoding.RAW))


def prep_formats():
    """Every host format: SINGLE, PAIR and COMPACT at b = 1..8 on both uniform grids and (b >= 2)
    a level table, and RAW."""
    out = [Format(Encoding.RAW)]
    for enc in (Encoding.SINGLE, Encoding.PAIR, Encoding.COMPACT):
        for b in range(1, contract.MAX_BITS + 1):
            out += [Format(enc, b), Format(enc, b, LevelMode.UNIFORM_UNSIGNED)]
            if b >= 2:
                out.append(Format(enc, b, LevelMode.TABLE))
    return out


def prep_name(fmt):
    """:func:`fmt_name`, with the level grid when it is not the uniform signed one."""
    suffix = {LevelMode.UNIFORM_UNSIGNED: " unsigned", LevelMode.TABLE: " table"}
    return fmt_name(fmt) + ("" if fmt.encoding == Encoding.RAW else suffix.get(fmt.levels, ""))


def host_prep_speed(rows=20_000, features=100, seed=0, repeats=3, formats=PREP_FORMATS,
                    width=128):
    """Host data preparation, measured here: stochastic rounding of both samples and encoding
    (``quantize.encode``), then packing into W-bit words (``pack.pack_rows``), in features per
    second per format (:func:`prep_name`). Each figure is the best of ``repeats`` runs after a
    small warm-up, as the machine may be shared; ``prepare`` is the best run of the two steps
    together. Level tables are random (not uniform), seeded by b."""
    from zipml.host.pack import pack_rows
    from zipml.host.parallel import threads
    from zipml.host.quantize import encode
    g = np.random.default_rng(seed)
    xv = g.uniform(-1, 1, (rows, features)) * 0.9
    labels = np.zeros(rows, np.int32)
    n = rows * features
    out = {}
    for fmt in formats:
        table = None
        if fmt.levels == LevelMode.TABLE and fmt.encoding != Encoding.RAW:
            table = np.sort(np.random.default_rng(fmt.bits).choice(
                np.arange(-contract.TABLE_MAX, contract.TABLE_MAX + 1), fmt.n_levels,
                replace=False))
        xs = (xv if fmt.signed else np.abs(xv)) * fmt.top
        pack_rows(encode(xs[:64], fmt, "stochastic", g, table=table), labels[:64], width, fmt)
        best_enc = best_pack = best_both = float("inf")
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            fields = encode(xs, fmt, "stochastic", g, table=table)
            t1 = time.perf_counter()
            pack_rows(fields, labels, width, fmt)
            t2 = time.perf_counter()
            best_enc, best_pack = min(best_enc, t1 - t0), min(best_pack, t2 - t1)
            best_both = min(best_both, t2 - t0)
        out[prep_name(fmt)] = {"encode_features_per_s": n / best_enc,
                               "pack_features_per_s": n / best_pack,
                               "prepare_features_per_s": n / best_both,
                               "runs": max(1, repeats), "threads": threads()}
    return out


def rtl_measurement(quick):
    """Run the RTL benchmark (Verilator) and return its cycles, checked against the model."""
    from zipml.sim import bench_rtl
    ns = "64" if quick else "64,256,1000"
    width, n_max = (64, 128) if quick else (128, 1024)
    t = time.perf_counter()
    results = bench_rtl.main(["--width", str(width), "--n-max", str(n_max), "--ns", ns,
                              "--rows", "32" if quick else "64"])
    configs = bench_rtl.bench_configs([int(x) for x in ns.split(",")])
    rows = 32 if quick else 64
    points = []
    for (enc, b, n), cycles in zip(configs, results["cycles"]):
        fmt = Format(Encoding[enc], b)
        model = epoch_cycles(width, fmt, n, rows)
        points.append({"format": fmt_name(fmt), "n": n, "cycles": cycles, "model": model,
                       "efficiency": rows * contract.row_words(width, fmt, n) / cycles})
    return {"width": width, "n_max": n_max, "rows": rows, "points": points,
            "all_match_model": all(p["cycles"] == p["model"] for p in points),
            "sim_cycles_per_s": results["cycles_total"] / results["seconds"],
            "seconds": time.perf_counter() - t}


def run_performance(quick=False, lowest_bits=None, n_features=None, rtl=True):
    """Every performance figure, as a dict with :data:`PERF_KEYS`."""
    out = {"cycles": cycle_table(ns=(64, 1000) if quick else (11, 64, 100, 256, 1000)),
           "speedup_at_equal_loss": speedup_at_equal_loss(lowest_bits or {}, n_features or {}),
           "boards": board_figures(),
           "cpu": cpu_baselines(rows=5000 if quick else 20_000, epochs=1 if quick else 3),
           "host_prep": host_prep_speed(rows=5000 if quick else 20_000),
           "rtl_sim": rtl_measurement(quick) if rtl else None}
    for name, board in out["boards"].items():
        if name == "other_cores":
            continue
        for fig in board["formats"].values():
            fig["vs_sklearn"] = fig["features_per_s"] / out["cpu"]["sklearn_sgd_features_per_s"]
            fig["vs_numpy_f32"] = (fig["features_per_s"]
                                   / out["cpu"]["numpy_f32_minibatch16_features_per_s"])
    return out


# --- RESULTS.md and README -------------------------------------------------------------------

_START, _END = "<!-- performance:start -->", "<!-- performance:end -->"


def _si(v, unit=""):
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}"


def performance_md(perf, meta):
    """The performance section of RESULTS.md, written from the numbers in ``perf``."""
    out = [_START, "## Performance", "",
           f"Generated by `{meta['command']}`, commit `{meta['commit']}`, {meta['date']}. "
           "Cycle counts are exact (the RTL meets `zipml.sim.timing` cycle for cycle); "
           "wall-clock figures were measured in this run on a shared 2-core machine.", ""]
    rtl = perf.get("rtl_sim")
    if rtl:
        effs = [p["efficiency"] for p in rtl["points"]]
        out += ["### RTL cycles (Verilator)", "",
                f"One epoch of {rtl['rows']} rows per format at W = {rtl['width']} "
                f"(B = 16, delay = 1): {len(rtl['points'])} formats and sizes, every count "
                f"{'equal to' if rtl['all_match_model'] else 'NOT equal to'} the cycle model; "
                f"efficiency (input words / cycles) {min(effs):.3f} to {max(effs):.3f}. "
                f"Simulator speed: {_si(rtl['sim_cycles_per_s'], 'cycles/s')}.", ""]
    rows = [c for c in perf["cycles"] if c["width"] == 128 and c["n"] == 1000]
    if rows:
        out += ["### Cycle speed-up over `raw` (W = 128, n = 1000, 1000 rows, B = 16, delay 1)",
                "", "| format | bits/feature | words/row | cycles/epoch | efficiency | "
                "speed-up vs raw |", "|---|---|---|---|---|---|"]
        out += [f"| {c['format']} | {c['field_bits']} | {c['row_words']} | {c['cycles']} | "
                f"{c['efficiency']:.3f} | {c['speedup_vs_raw']:.2f}x |" for c in rows]
        worst = min(c["efficiency"] for c in perf["cycles"] if c["n"] >= 64)
        out += ["", f"Lowest efficiency over every W and format with n >= 64: {worst:.3f}.", ""]
    eq = perf.get("speedup_at_equal_loss") or {}
    if eq:
        out += ["### Speed-up over `raw` at equal final loss", "",
                "The cheapest double-sampled format that ends within 1% of float64's loss "
                "(from the convergence part), cycles per epoch against `raw` at W = 128:", "",
                "| data set | n | format | speed-up vs raw |", "|---|---|---|---|"]
        out += [f"| {k} | {v['n']} | {v['format']} | {v['speedup_vs_raw']:.2f}x |"
                for k, v in eq.items()]
        best = max(eq.values(), key=lambda v: v["speedup_vs_raw"])
        out += ["", f"Largest: {best['speedup_vs_raw']:.2f}x (the reference FPGA design "
                "reports up to 6.5x); the gain grows with n, since short rows waste the rest "
                "of their last word on the label.", ""]
    cpu = perf["cpu"]
    out += ["### Modelled device throughput against CPU baselines timed in this run", "",
            f"CPU, synthetic {cpu['rows']} x {cpu['features']}, {cpu['epochs']} epochs: "
            f"scikit-learn SGDRegressor {_si(cpu['sklearn_sgd_features_per_s'])} "
            f"feature-updates/s, numpy float32 mini-batch-16 SGD "
            f"{_si(cpu['numpy_f32_minibatch16_features_per_s'])}/s.", "",
            "| board | core in the committed bitstream | W | clock | format | features/s | "
            "vs scikit-learn | vs numpy f32 | UART epoch / resident epoch |",
            "|---|---|---|---|---|---|---|---|---|"]
    boards = {k: v for k, v in perf["boards"].items() if k != "other_cores"}
    for name, b in boards.items():
        for fmt, f in b["formats"].items():
            trainer = ("lane-serial" if b.get("serial") else
                       f"{b.get('lanes', b['width'])} lanes")
            out.append(f"| {name} | {b['core']}, {trainer} | "
                       f"{b['width']} | {_si(b['clock_hz'], 'Hz')} | "
                       f"{fmt} | {_si(f['features_per_s'])} | {f['vs_sklearn']:.1f}x | "
                       f"{f['vs_numpy_f32']:.1f}x | {f['uart_epoch_s']:.3g} s / "
                       f"{f['resident_epoch_s']:.3g} s |")
    if boards:
        out += ["", "Features/s are exact cycle counts (`zipml.sim.timing`, which the RTL meets) "
                "at the clock the placed and routed trainer in the committed bitstream is "
                "built for (its target when timing is met, else the measured Fmax)."]
    other = perf["boards"].get("other_cores") or {}
    if other:
        out += ["", "Not listed: " + ", ".join(f"{k} (its bitstream carries the `{v}` core: "
                                                 "the trainer does not fit the device)"
                                                 for k, v in other.items()) + "."]
    out += ["", "Over the 3 Mbaud UART an epoch of 20,000 x 100 takes seconds; from resident "
            "memory it takes milliseconds: resident mode pays as soon as a data set is trained "
            "for more than one epoch and fits the device memory.", ""]
    prep = perf["host_prep"]
    first = next(iter(prep.values()), {})
    out += ["### Host data preparation (stochastic rounding, encoding, packing)", ""]
    if "runs" in first:
        out += [f"Features per second, the best of {first['runs']} runs on "
                f"{first['threads']} thread(s) (`python -m zipml.host.perf --prep`).", ""]
    out += ["| format | encode | pack | both |", "|---|---|---|---|"]
    out += [f"| {k} | {_si(v['encode_features_per_s'])}/s | {_si(v['pack_features_per_s'])}/s "
            f"| {_si(v['prepare_features_per_s'])}/s |" for k, v in prep.items()]
    out += ["", _END]
    return "\n".join(out) + "\n"


def write_performance_md(perf, meta, path):
    """Write (or replace) the performance section of RESULTS.md."""
    replace_section(path, _START, _END, performance_md(perf, meta))


_README_START, _README_END = "<!-- results:start -->", "<!-- results:end -->"


def readme_section(results, out_dir):
    """A short summary of bench.json for README.md, generated from the numbers."""
    meta, conv, perf = results["meta"], results["convergence"], results["performance"]
    lowest = conv["claims"]["lowest_bits_within_1pct"]
    lines = [_README_START,
             f"Generated by `{meta['command']}` at commit `{meta['commit']}` on {meta['date']}; "
             f"every table, plot and the text behind these lines is in "
             f"[`{out_dir}/RESULTS.md`]({out_dir}/RESULTS.md) and `{out_dir}/bench.json`.", "",
             "| data set | lowest b, double sampling within 1% of float64 | naive single sample "
             "| nearest rounding | optimal levels |", "|---|---|---|---|---|"]
    def bits(b):
        return "none" if b is None else str(b)
    for name, v in lowest.items():
        lines.append(f"| {name} | {bits(v['double'])} | {bits(v['naive'])} | "
                     f"{bits(v['nearest'])} | {bits(v['optimal'])} |")
    eq = perf.get("speedup_at_equal_loss") or {}
    if eq:
        lines += ["", "Cycle speed-up over 32-bit `raw` at equal loss (W = 128): " + ", ".join(
            f"{k} {v['speedup_vs_raw']:.2f}x ({v['format']})" for k, v in eq.items()) + "."]
    rtl = perf.get("rtl_sim")
    if rtl:
        lines += ["", f"RTL: {len(rtl['points'])} measured epochs equal the cycle model "
                  f"{'exactly' if rtl['all_match_model'] else 'NOT exactly'}; simulator "
                  f"{_si(rtl['sim_cycles_per_s'], 'cycles/s')}."]
    rel = results.get("reliability") or {}
    if rel.get("summary"):
        lines += ["", f"Reliability: {rel['summary']}"]
    lines.append(_README_END)
    return "\n".join(lines) + "\n"


def write_readme_section(results, readme, out_dir):
    """Replace the README's generated results section."""
    replace_section(readme, _README_START, _README_END, readme_section(results, out_dir))


def _print_prep(figures):
    print(f"{'format':22s} {'encode':>10s} {'pack':>10s} {'both':>10s}   (M features/s)")
    for name, f in figures.items():
        print(f"{name:22s} {f['encode_features_per_s'] / 1e6:10.1f} "
              f"{f['pack_features_per_s'] / 1e6:10.1f} {f['prepare_features_per_s'] / 1e6:10.1f}")


def main(argv=None):
    """``python -m zipml.host.perf --prep``: the host preparation speed, printed (or JSON)."""
    import argparse
    import os
    parser = argparse.ArgumentParser(prog="python -m zipml.host.perf",
                                     description="Host data preparation speed on this machine.")
    parser.add_argument("--prep", action="store_true", required=True,
                        help="measure encoding and packing (the only measurement here)")
    parser.add_argument("--all", action="store_true",
                        help="every format (b = 1..8, both uniform grids, tables, RAW) instead "
                             "of the bench's three")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs")
    parser.add_argument("--width", type=int, default=128, choices=contract.WORD_WIDTHS)
    parser.add_argument("--threads", type=int, help="sets ZIPML_HOST_THREADS")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["ZIPML_HOST_THREADS"] = str(args.threads)
    figures = host_prep_speed(args.rows, args.features, repeats=args.repeats, width=args.width,
                              formats=prep_formats() if args.all else PREP_FORMATS)
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        _print_prep(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
