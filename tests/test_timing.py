"""The pipeline's cycle model (zipml.sim.timing): closed forms and the throughput goal.

The RTL tests (tests/rtl/test_pipeline.py) assert that the gateware meets these counts exactly.
"""

import pytest

from zipml import contract
from zipml.contract import Encoding, Format
from zipml.hw.boards import BOARDS
from zipml.hw.lanes import all_formats
from zipml.sim import timing
from zipml.sim.golden import TrainConfig


def _cfg(fmt, n, rows, batch, delay):
    return TrainConfig(n_features=n, rows_per_epoch=rows, fmt=fmt, batch=batch, delay=delay)


@pytest.mark.parametrize("mul_stages", [0, 1])
@pytest.mark.parametrize("width", contract.WORD_WIDTHS)
@pytest.mark.parametrize("n", [64, 100, 1000])
def test_efficiency_goal(width, n, mul_stages):
    """One word per cycle within 5 % for n >= 64, B >= 16, delay 1 (every format)."""
    for fmt in all_formats():
        cfg = _cfg(fmt, n, 1024, 16, 1)
        eff = timing.efficiency(width, cfg, mul_stages=mul_stages)
        assert eff >= 0.95, (width, fmt, n, eff)


@pytest.mark.parametrize("width", [32, 128])
def test_delay0_batch_overhead(width):
    """delay 0: every batch waits for the previous one's write-back; a closed form."""
    fmt = Format(Encoding.PAIR, 4)
    for n in (1, 20, 300):
        r = contract.row_words(width, fmt, n)
        for batch, rows in ((1, 10), (4, 12), (5, 12)):
            cfg = _cfg(fmt, n, rows, batch, 0)
            batches = -(-rows // batch)
            # rows * r input cycles; each batch adds the wait for its last write-back
            wait = timing.dot_latency(width) + r + timing.update_write() - 2
            assert timing.run_cycles(width, cfg, 1) == rows * r + batches * wait + 1, (n, batch)


def test_delay1_never_slower():
    fmt = Format(Encoding.SINGLE, 1)
    for n in (1, 64, 200):
        for batch in (1, 2, 16):
            c0 = timing.run_cycles(128, _cfg(fmt, n, 64, batch, 0), 2)
            c1 = timing.run_cycles(128, _cfg(fmt, n, 64, batch, 1), 2)
            assert c1 <= c0


def test_epochs_and_snapshots_add_constants():
    cfg = _cfg(Format(Encoding.COMPACT, 3), 50, 33, 16, 1)
    one = timing.run_cycles(64, cfg, 1)
    three = timing.run_cycles(64, cfg, 3)
    assert three == 3 * one + 2 * (timing.EPOCH_GAP - 1)
    snap = timing.run_cycles(64, cfg, 3, snapshots=True)
    assert snap == three + 3 * (cfg.n_features + 1 + timing.READBACK_STAGES)


@pytest.mark.parametrize("mul_stages", [0, 1, 2])
def test_batch16_delay1_never_stalls(mul_stages):
    """With B = 16 and delay 1 the write-back never holds the input for rows of two words or
    more, at every W and lane count; one-word rows need B - 1 >= dot_latency + update_write - 2
    (:func:`test_stall_free_condition`), B = 17 on the ULX3S builds."""
    for width in contract.WORD_WIDTHS:
        for lanes in (8, 16, 32, 64, 128, 256):
            if lanes <= width:
                lat = timing.dot_latency(width, mul_stages, lanes)
                assert (16 - 1) * 2 >= lat + timing.update_write(mul_stages) - 2, (width, lanes)
    ulx3s = BOARDS["ulx3s-85f"]
    lat = timing.dot_latency(ulx3s.width, ulx3s.mul_stages, ulx3s.lanes)
    assert lat + timing.update_write(ulx3s.mul_stages) - 2 == 17 - 1


def test_stall_free_condition():
    """delay 1 hides the write-back once (B - 1) * R >= dot_latency + update_write - 2."""
    for width in (64, 128, 256):
        lat = timing.dot_latency(width)
        fmt = Format(Encoding.SINGLE, 1)
        n = contract.lanes_in_last_word(width, fmt)          # R = 1
        rows = 20 * 16
        for batch in range(2, 40):
            cfg = _cfg(fmt, n, rows, batch, 1)
            stall_free = batch - 1 >= lat + timing.update_write() - 2
            ideal = rows + lat + timing.update_write()
            assert (timing.run_cycles(width, cfg, 1) == ideal) == stall_free, (width, batch)


@pytest.mark.parametrize("width, fmt, n, slots", [
    (32, Format(Encoding.RAW, 1), 3, 4),         # a field per word, then the label word
    (64, Format(Encoding.PAIR, 4), 6, 7),        # 6 fields below 8, the label word alone
    (128, Format(Encoding.PAIR, 4), 12, 12),     # one word: 12 fields below the label
    (128, Format(Encoding.PAIR, 4), 20, 20),     # 16 + 4
    (32, Format(Encoding.SINGLE, 1), 100, 101),  # 32 + 32 + 32 + 4, the label word
])
def test_serial_slots(width, fmt, n, slots):
    """The lane-serial pipeline spends a cycle per field and one per word without fields."""
    assert timing.serial_slots(width, fmt, n) == slots


def test_serial_run_cycles():
    """Rows one after another: two passes and the fixed overhead per row, whatever the batch;
    snapshots add n + 1 cycles an epoch."""
    fmt = Format(Encoding.PAIR, 4)
    row = 2 * timing.serial_slots(32, fmt, 10) + timing.SERIAL_ROW_CYCLES
    for batch, delay in [(1, 0), (8, 1)]:
        cfg = _cfg(fmt, 10, 50, batch, delay)
        assert timing.serial_run_cycles(32, cfg, 3) == 3 * 50 * row
        assert timing.serial_run_cycles(32, cfg, 3, snapshots=True) == 3 * (50 * row + 11)
