"""cocotb bench of :class:`zipml.hw.pipeline.SGDPipeline`: many run-time configurations on one
build, each compared bit for bit with :class:`zipml.sim.golden.GoldenDevice` (final model,
per-epoch snapshots, counters) and, with a steady source and sink, with the cycle count of
:func:`zipml.sim.timing.run_cycles`.

Environment: ``WIDTH``, ``N_MAX``, ``LANES`` (formats with more fields per word are skipped),
``SERIAL`` (1: the lane-serial pipeline, :func:`zipml.sim.timing.serial_run_cycles`),
``SUITES`` (comma-separated, see :func:`cases`), ``SEED``.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from zipml import contract
from zipml.contract import Encoding, Format, LevelMode, Loss
from zipml.host.pack import pack_rows
from zipml.hw.pipeline import ConfigLayout
from zipml.sim import timing
from zipml.sim.golden import GoldenDevice, TrainConfig
from zipml.sim.streams import StreamPort, stream_get, stream_put

WIDTH = int(os.environ.get("WIDTH", 32))
N_MAX = int(os.environ.get("N_MAX", 128))
LANES = int(os.environ.get("LANES", WIDTH))
MUL_STAGES = int(os.environ.get("MUL_STAGES", timing.MUL_STAGES))
SERIAL = os.environ.get("SERIAL", "0") == "1"
SUITES = os.environ.get("SUITES", "formats").split(",")
SEED = int(os.environ.get("SEED", 1))


# --- stimulus ----------------------------------------------------------------------------------

def random_table(rng, bits):
    """A strictly increasing table of 2**bits entries within ±TABLE_MAX."""
    pts = sorted(rng.sample(range(-contract.TABLE_MAX, contract.TABLE_MAX + 1), 1 << bits))
    return pts


def random_fields(rng, fmt, rows, n):
    """Valid random fields of ``fmt`` (numpy uint32 (rows, n))."""
    g = np.random.default_rng(rng.randrange(1 << 30))
    if fmt.encoding == Encoding.RAW:
        v = g.integers(-(1 << 30), (1 << 30) + 1, size=(rows, n))
        return v.astype(np.int64).astype(np.uint32)
    s = fmt.n_levels
    if fmt.encoding == Encoding.SINGLE:
        return g.integers(0, s, size=(rows, n)).astype(np.uint32)
    if fmt.encoding == Encoding.PAIR:
        a, b = g.integers(0, s, size=(2, rows, n))
        return (a | (b << fmt.bits)).astype(np.uint32)
    k = fmt.index_bits
    # mostly valid interval indices, some past the last interval (they wrap modulo s)
    i = np.where(g.random((rows, n)) < 0.9, g.integers(0, max(1, s - 1), size=(rows, n)),
                 g.integers(0, 1 << k, size=(rows, n)))
    ups = g.integers(0, 2, size=(2, rows, n))
    return (i | (ups[0] << k) | (ups[1] << (k + 1))).astype(np.uint32)


def make_case(rng, fmt, n, *, loss=Loss.SQUARED, batch=1, delay=0, rows=None, epochs=1,
              lr=None, decay=0, snapshots=True, idle=0.0, backpressure=0.0, extreme=False):
    """One run: config, table, initial model, packed words for every epoch."""
    rows = rows if rows is not None else rng.randrange(3, 12)
    cfg = TrainConfig(n_features=n, rows_per_epoch=rows, fmt=fmt, loss=loss,
                      lr=lr if lr is not None else rng.choice([1 << 16, 1 << 18, 3 << 17]),
                      lr_decay_epochs=decay, batch=batch, delay=delay)
    table = None
    if fmt.levels == LevelMode.TABLE and fmt.encoding != Encoding.RAW:
        table = random_table(rng, fmt.bits)
    g = np.random.default_rng(rng.randrange(1 << 30))
    span = 1 << (31 if extreme else 22)
    model = g.integers(-span, span, size=n).astype(np.int64)
    fields = random_fields(rng, fmt, rows * epochs, n)
    lab_span = (1 << 31) if extreme else (1 << 24)
    labels = g.integers(-lab_span, lab_span, size=rows * epochs).astype(np.int64)
    labels = np.clip(labels, -(1 << 31), (1 << 31) - 1).astype(np.int32)
    words = pack_rows(fields, labels, WIDTH, fmt)
    return dict(cfg=cfg, table=table, model=model, words=words, epochs=epochs,
                snapshots=snapshots, idle=idle, backpressure=backpressure)


def interesting_n(rng, fmt):
    p = contract.lanes_in_word(WIDTH, fmt)
    ns = [1, p - 1, p + 1, 100, N_MAX]
    part = contract.pipeline_lanes(WIDTH, fmt, LANES)
    if part < p:        # words in parts: a part's edge, a last word holding only the label
        ns += [part + 1, contract.lanes_in_last_word(WIDTH, fmt) + 1]
    return [n for n in ns if 1 <= n <= N_MAX]


def fits(formats):
    """The formats a build of LANES lanes takes."""
    return [f for f in formats if contract.format_fits(WIDTH, f, LANES)]


def cases(suite, rng):
    """The runs of a suite.

    formats:  every encoding, b in {1, 2, 3, 4, 8}, signed/unsigned/table levels, every loss,
              n in {1, P-1, P+1, 100, n_max}, batch 1 and 16, delay 0 and 1, idle source and
              stalling sink on every other run (the others check the cycle count).
    batches:  multi-epoch runs with batches, delay, lr decay, short last batches.
    saturate: huge lr, labels and model words.
    quick:    a handful of runs (second simulator).
    stats:    see :func:`double_sampling_is_unbiased`.
    """
    out = []
    losses = list(Loss)
    if suite in ("formats", "quick"):
        fmts = []
        for enc in (Encoding.SINGLE, Encoding.PAIR, Encoding.COMPACT):
            for b in (1, 2, 3, 4, 8):
                for lv in LevelMode:
                    if lv == LevelMode.TABLE and b < 2:
                        continue
                    fmts.append(Format(enc, b, lv))
        fmts.append(Format(Encoding.RAW, 1))
        if suite == "quick":
            fmts = [Format(Encoding.PAIR, 2), Format(Encoding.COMPACT, 3, LevelMode.TABLE),
                    Format(Encoding.RAW, 1), Format(Encoding.SINGLE, 1)]
        fmts = fits(fmts)
        for i, fmt in enumerate(fmts):
            ns = interesting_n(rng, fmt)
            n = ns[i % len(ns)]
            steady = i % 2 == 0
            out.append(make_case(rng, fmt, n, loss=losses[i % 3], batch=(1, 16)[(i // 2) % 2],
                                 delay=(i // 4) % 2, rows=rng.randrange(2, 20),
                                 idle=0.0 if steady else 0.3,
                                 backpressure=0.0 if steady else 0.3))
    elif suite == "batches":
        for i in range(16):
            fmt = rng.choice(fits([Format(Encoding.PAIR, 4), Format(Encoding.SINGLE, 1),
                                   Format(Encoding.COMPACT, 2), Format(Encoding.RAW, 1),
                                   Format(Encoding.PAIR, 8, LevelMode.TABLE)]))
            n = rng.choice(interesting_n(rng, fmt))
            steady = i % 2 == 0
            out.append(make_case(rng, fmt, n, loss=losses[i % 3], batch=rng.choice([1, 2, 5, 16]),
                                 delay=i % 2, rows=rng.randrange(5, 40), epochs=rng.choice([1, 3]),
                                 decay=rng.choice([0, 1, 2]), snapshots=bool(i % 3),
                                 idle=0.0 if steady else 0.2,
                                 backpressure=0.0 if steady else 0.4))
    elif suite == "saturate":
        for i, fmt in enumerate(fits([Format(Encoding.PAIR, 8), Format(Encoding.RAW, 1),
                                      Format(Encoding.SINGLE, 2, LevelMode.TABLE),
                                      Format(Encoding.COMPACT, 4, LevelMode.UNIFORM_UNSIGNED)])):
            n = rng.choice(interesting_n(rng, fmt))
            out.append(make_case(rng, fmt, n, loss=Loss.SQUARED, batch=(1, 4)[i % 2],
                                 delay=i % 2, rows=12, epochs=2, lr=(1 << 24) - 1,
                                 extreme=True))
    else:
        raise ValueError(suite)
    return out


# --- the bench ---------------------------------------------------------------------------------

def pack_config(cfg, epochs, snapshots):
    fields = {
        "n_features": cfg.n_features, "encoding": int(cfg.fmt.encoding),
        "bits": cfg.fmt.bits, "levels": int(cfg.fmt.levels), "loss": int(cfg.loss),
        "lr": cfg.lr, "lr_decay_epochs": cfg.lr_decay_epochs, "batch": cfg.batch,
        "delay": cfg.delay, "rows_per_epoch": cfg.rows_per_epoch, "epochs": epochs,
        "snapshots": int(snapshots),
    }
    value = 0
    for name, field in ConfigLayout:
        value |= (fields[name] & ((1 << field.width) - 1)) << field.offset
    return value


def word_int(limbs):
    return sum(int(x) << (32 * i) for i, x in enumerate(limbs))


def signed32(x):
    return x - (1 << 32) if x & (1 << 31) else x


class TB:
    def __init__(self, dut, seed):
        self.dut = dut
        self.rng = random.Random(seed)
        self.data = StreamPort(dut, "i_stream")
        self.i_model = StreamPort(dut, "i_model")
        self.o_model = StreamPort(dut, "o_model")
        self.i_table = StreamPort(dut, "i_table")

    async def start(self):
        d = self.dut
        for port in (self.data, self.i_model, self.i_table):
            port.valid.value = 0
        self.o_model.ready.value = 0
        d.start.value = d.load.value = d.read.value = 0
        d.config.value = 0
        cocotb.start_soon(Clock(d.clk, 10, unit="ns").start())
        d.rst.value = 1
        await ClockCycles(d.clk, 3)
        d.rst.value = 0
        await ClockCycles(d.clk, 2)

    async def pulse(self, sig):
        await FallingEdge(self.dut.clk)
        sig.value = 1
        await FallingEdge(self.dut.clk)
        sig.value = 0

    async def wait_idle(self, limit):
        for _ in range(limit):
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            if not int(self.dut.busy.value):
                return
        raise TimeoutError("the pipeline stayed busy")

    async def run(self, case):
        d, cfg, rng = self.dut, case["cfg"], self.rng
        epochs, snaps = case["epochs"], case["snapshots"]
        golden = GoldenDevice(WIDTH, N_MAX, batch_max=(1 << 16) - 1)
        golden.configure(cfg)
        await FallingEdge(d.clk)
        d.config.value = pack_config(cfg, epochs, snaps)
        await ClockCycles(d.clk, 2)
        if case["table"] is not None:
            golden.load_levels(case["table"])
            entries = [k | ((v & 0x1FF) << contract.MAX_BITS)
                       for k, v in enumerate(case["table"])]
            await stream_put(self.i_table, entries, idle=case["idle"], rng=rng)
        golden.load_model(case["model"])
        await self.pulse(d.load)
        await stream_put(self.i_model, [int(w) & 0xFFFFFFFF for w in case["model"]],
                         idle=case["idle"], rng=rng)
        await self.wait_idle(100)
        expect_snaps = golden.process(case["words"])
        words = [word_int(w) for w in case["words"]]
        feeder = cocotb.start_soon(stream_put(self.data, words, idle=case["idle"], rng=rng))
        await self.pulse(d.start)
        n = cfg.n_features
        got_snaps = []
        if snaps:
            for _ in range(epochs):
                got = await stream_get(self.o_model, n, backpressure=case["backpressure"],
                                       rng=rng, timeout=20000)
                got_snaps.append([signed32(x) for x in got])
        await feeder
        await self.wait_idle(20000)
        what = f"{cfg} epochs={epochs}"
        cycles = int(d.cycles.value)
        if not case["idle"] and not case["backpressure"]:
            if SERIAL:
                want = timing.serial_run_cycles(WIDTH, cfg, epochs, snaps)
            else:
                want = timing.run_cycles(WIDTH, cfg, epochs, snaps, MUL_STAGES, lanes=LANES)
            assert cycles == want, f"{what}: {cycles} cycles, the model says {want}"
        counters = (int(d.rows.value), int(d.epochs.value), int(d.saturated.value))
        c = golden.counters
        assert counters == (c.rows, c.epochs, c.saturated_rows), \
            f"{what}: counters {counters}, golden {c}"
        if snaps:
            for e, (got, want) in enumerate(zip(got_snaps, expect_snaps)):
                assert got == [int(x) for x in want], f"{what}: snapshot {e} differs\n" \
                    f"got  {got}\nwant {[int(x) for x in want]}"
        await self.pulse(d.read)
        got = await stream_get(self.o_model, n, backpressure=case["backpressure"], rng=rng,
                               timeout=1000)
        await self.wait_idle(100)
        want = [int(x) for x in golden.read_model()]
        assert [signed32(x) for x in got] == want, f"{what}: final model differs\n" \
            f"got  {[signed32(x) for x in got]}\nwant {want}"
        return cycles, c.saturated_rows, np.array(want, np.int64)


@cocotb.test()
async def pipeline_matches_golden(dut):
    tb = TB(dut, SEED)
    await tb.start()
    for suite in SUITES:
        if suite == "stats":
            continue
        total_sat = 0
        for i, case in enumerate(cases(suite, tb.rng)):
            dut._log.info(f"{suite} {i}: {case['cfg']} epochs={case['epochs']} "
                          f"idle={case['idle']}")
            _, sat, _ = await tb.run(case)
            total_sat += sat
        if suite == "saturate":
            assert total_sat > 0, "no row saturated"


# --- statistics: double sampling is unbiased, SINGLE is not ------------------------------------

STAT_ROWS = int(os.environ.get("STAT_ROWS", 3000))


def stat_case(rng, fmt, x, w, y, lr):
    """``STAT_ROWS`` independent quantizations of one sample as ONE batch: every row's dot
    product sees the initial model, so the model moves by the sum of the row updates."""
    from zipml.host.quantize import encode, encode_labels
    g = np.random.default_rng(rng.randrange(1 << 30))
    xv = np.tile(x * fmt.top, (STAT_ROWS, 1))
    fields = encode(xv, fmt, "stochastic", g)
    labels = encode_labels(np.full(STAT_ROWS, y))
    cfg = TrainConfig(n_features=len(x), rows_per_epoch=STAT_ROWS, fmt=fmt, loss=Loss.SQUARED,
                      lr=lr, batch=STAT_ROWS, delay=0)
    model = np.round(w * (1 << contract.MODEL_FRAC)).astype(np.int64)
    return dict(cfg=cfg, table=None, model=model, words=pack_rows(fields, labels, WIDTH, fmt),
                epochs=1, snapshots=False, idle=0.0, backpressure=0.0, fields=fields)


def row_updates(case):
    """Each row's float update lr * g * vB (level space), for the variance."""
    from zipml.host.pack import unpack_rows
    from zipml.host.quantize import decode
    cfg = case["cfg"]
    fmt = cfg.fmt
    fields, labels = unpack_rows(case["words"], WIDTH, fmt, cfg.n_features)
    va, vb = decode(fields, fmt)
    scale = 2.0 ** -fmt.value_frac
    w = case["model"] / 2.0 ** contract.MODEL_FRAC
    g = (va * scale) @ w - labels / 2.0 ** contract.LABEL_FRAC
    return cfg.lr / 2.0 ** contract.LR_FRAC * g[:, None] * (vb * scale)


@cocotb.test()
async def double_sampling_is_unbiased(dut):
    if "stats" not in SUITES:
        return
    tb = TB(dut, SEED)
    await tb.start()
    rng = np.random.default_rng(SEED)
    n = 8
    # features near the middle of an interval (large rounding variance), a model of weight ~1
    fmt_bits = 2
    x = np.array([0.0, 0.02, -0.05, 0.3, -0.3, 0.1, -0.6, 1.0])      # last: the bias column
    w = rng.choice([-1.0, 1.0], size=n) * rng.uniform(0.7, 1.2, size=n)
    y = 0.3
    lr = 1 << 16                                                    # 2**-8
    for enc in (Encoding.PAIR, Encoding.COMPACT, Encoding.SINGLE):
        fmt = Format(enc, fmt_bits)
        case = stat_case(tb.rng, fmt, x, w, y, lr)
        _, _, final = await tb.run(case)
        moved = (case["model"] - final) / 2.0 ** contract.MODEL_FRAC / STAT_ROWS
        per_row = row_updates(case)
        tol = 5 * per_row.std(axis=0) / np.sqrt(STAT_ROWS) + 2.0 ** -20
        xq = x * fmt.top
        wq = case["model"] / 2.0 ** contract.MODEL_FRAC
        grad = lr / 2.0 ** contract.LR_FRAC * (xq @ wq - y) * xq
        # the naive scheme's bias: lr * Var(Q(x_i)) * w_i (a data-dependent ridge term)
        levels = np.array(contract.uniform_level_ints(fmt_bits, fmt.levels)) / 2.0 ** fmt_bits
        i = np.clip(np.searchsorted(levels, xq, "right") - 1, 0, len(levels) - 2)
        var = (levels[i + 1] - xq) * (xq - levels[i])
        bias = lr / 2.0 ** contract.LR_FRAC * var * wq
        dut._log.info(f"{enc.name}: mean update {moved}\n  gradient {grad}\n  tol {tol}")
        if enc == Encoding.SINGLE:
            assert np.all(np.abs(moved - grad - bias) <= tol), "SINGLE misses its predicted bias"
            assert np.sum(np.abs(moved - grad) > tol) >= 2, "SINGLE shows no bias"
        else:
            assert np.all(np.abs(moved - grad) <= tol), f"{enc.name} is biased"
