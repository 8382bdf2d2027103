"""The lane-serial SGD pipeline: :class:`~zipml.hw.pipeline.SGDPipeline`'s interface and
numbers, one field per cycle through one multiplier, for FPGAs too small for W lanes.

Each row is taken twice through one datapath: its words from ``i_stream`` for the dot product
(and into the row buffer), then, once the gradient scalar has c, from the row buffer for the
update. Stage names as in :mod:`zipml.sim.timing` (:func:`~zipml.sim.timing.serial_run_cycles`)::

    word source -> F0 one field of the word's shift register: code of sample A or B,
                      table, snapshot and working-model reads
                   F1 its value v (uniform, table or RAW) at RAW_FRAC fractional bits
                   F2 w_hat * v (dot) or c * v (update): one 32 x 32 product, which also
                      gives the gradient scalar g * lr while a row waits for its c
                   F3 dot: row sum -> GradientScalar -> c; update: delta = round(c * v / 2**36),
                      and the working-model word read again
                   F4 update: w = sat(w - delta), written back (and to a snapshot bank)

Every value is aligned to RAW_FRAC, so code and RAW rows share the multiplier and the sum:
``floor(sum(w * v) / 2**30)`` and ``round(c * v / 2**36)`` are the contract's numbers for any
format. Rows follow one another: a row's dot product starts after the row before it is written
back, so the working model needs no forwarding. Model words live at their feature index.
"""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..contract import (
    LABEL_BITS,
    LR_BITS,
    MAX_BITS,
    MODEL_BITS,
    RAW_FRAC,
    SCALAR_FRAC,
    Encoding,
    LevelMode,
    accumulator_bits,
    lanes_in_last_word,
    lanes_in_word,
    row_words,
)
from .dsp import down_counter
from .lanes import (
    VALUE_FRAC,
    VALUE_SHAPE,
    all_formats,
    format_constants,
    uniform_value,
)
from .pipeline import ConfigLayout, RunEvents, SGDPipeline, TableEntry
from .ram import unchecked_read_port
from .scalar import GradientScalar, count_decay_step, decay_epoch, decayed_lr, saturate

__all__ = ["SerialSGDPipeline", "make_trainer"]

_ALIGN = RAW_FRAC - VALUE_FRAC              # code values move up to RAW_FRAC
_DELTA_SHIFT = SCALAR_FRAC - 24 + RAW_FRAC  # delta = round(c * v / 2**36)


class SerialSGDPipeline(wiring.Component):
    """Low-precision SGD over a stream of packed rows, one field per cycle.

    Takes every format of a ``width``-bit word (its ``lanes`` is W) and has the members of
    :class:`~zipml.hw.pipeline.SGDPipeline`; ``cycles`` follows
    :func:`zipml.sim.timing.serial_run_cycles`. ``i_table`` is not ready in the cycles a run
    reads the level table (a field in F0).

    Parameters
    ----------
    width : int
        W, bits per input word.
    n_max : int
        Largest n_features.
    max_table_bits : int
        Largest b for which level tables are held (1 drops the table).
    one_epoch : bool
        Every run is one epoch at ``config.lr``, and ``epochs`` stays 0: ``config.epochs``,
        ``lr_decay_epochs`` and ``snapshots`` are not read (for a device that counts epochs
        and decays the rate itself).
    mac_counters : bool
        Count an epoch's rows in an iCE40 SB_MAC16 (:func:`zipml.hw.dsp.down_counter`).
    """

    def __init__(self, width=32, n_max=256, *, max_table_bits=MAX_BITS, one_epoch=False,
                 mac_counters=False):
        if width % 32 or width < 32:
            raise ValueError(f"width must be a multiple of 32, not {width}")
        self.width, self.n_max, self.max_table_bits = width, n_max, max_table_bits
        self.one_epoch, self.mac_counters = one_epoch, mac_counters
        self.formats = all_formats(width)
        self.lanes = width
        self.raw_lanes = width // 32
        self.row_words_max = max(row_words(width, f, n_max) for f in self.formats)
        self.acc_width = accumulator_bits(n_max)
        super().__init__({
            "config": In(ConfigLayout),
            "start": In(1), "load": In(1), "read": In(1), "busy": Out(1),
            "i_stream": In(stream.Signature(width)),
            "i_model": In(stream.Signature(signed(MODEL_BITS))),
            "o_model": Out(stream.Signature(signed(MODEL_BITS))),
            "i_table": In(stream.Signature(TableEntry)),
            "rows": Out(32), "saturated": Out(32), "epochs": Out(16), "cycles": Out(48),
            "events": Out(RunEvents),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        W = self.width
        n = cfg.n_features
        idx_bits = max(1, ceil_log2(self.n_max))

        # --- the run-time format's constants (registered) ----------------------------------------
        is_raw = Signal()
        table_mode = Signal()
        unsigned_levels = Signal()
        m.d.sync += [is_raw.eq(cfg.encoding == Encoding.RAW),
                     table_mode.eq(cfg.levels == LevelMode.TABLE),
                     unsigned_levels.eq(cfg.levels == LevelMode.UNIFORM_UNSIGNED)]

        def code(value):
            """A code format's constant, 0 for RAW."""
            return lambda f: 0 if f.encoding == Encoding.RAW else value(f)

        def compact_only(value):
            return code(lambda f: value(f) if f.encoding == Encoding.COMPACT else 0)

        # the field (at bit 0 of the shift register) -> level code, for every code format: the
        # code's bits, where sample B's code starts, COMPACT's index bits
        fc = format_constants(m, "format_constants", cfg.encoding, cfg.bits, self.formats, {
            "per_word": (range(W + 1), lambda f: lanes_in_word(W, f)),
            "per_last": (range(W + 1), lambda f: lanes_in_last_word(W, f)),
            "field_bits": (range(33), lambda f: f.field_bits),
            "half": (MAX_BITS + 1, code(lambda f: 1 << (MAX_BITS - f.bits))),
            "align": (range(MAX_BITS), code(lambda f: MAX_BITS - f.bits)),
            "code_mask": (MAX_BITS, code(lambda f: (1 << f.bits) - 1)),
            "b_at": (range(MAX_BITS + 1),
                     code(lambda f: f.bits if f.encoding == Encoding.PAIR else 0)),
            "compact": (1, compact_only(lambda f: 1)),
            "index_bits": (range(MAX_BITS + 1), compact_only(lambda f: f.index_bits)),
            "index_mask": (MAX_BITS, compact_only(lambda f: (1 << f.index_bits) - 1)),
        })
        per_word, per_last, field_bits, half = fc.per_word, fc.per_last, fc.field_bits, fc.half
        code_mask, b_at, compact = fc.code_mask, fc.b_at, fc.compact
        index_bits, index_mask, align = fc.index_bits, fc.index_mask, fc.align

        # --- memories ----------------------------------------------------------------------------
        m.submodules.work = work = memory.Memory(shape=signed(MODEL_BITS), depth=self.n_max,
                                                 init=[])
        m.submodules.snap = snap = memory.Memory(shape=signed(MODEL_BITS), depth=2 << idx_bits,
                                                 init=[])
        m.submodules.row_buffer = row_buffer = memory.Memory(shape=W, depth=self.row_words_max,
                                                             init=[])
        # (no word read from these is used in the cycle its address is written: the read-back
        # and the dot product's snapshot reads run while nothing is written, F3 reads the field
        # after the one F4 writes, the row buffer is written in the dot product and read in the
        # update)
        work_wr = work.write_port()
        work_rd = unchecked_read_port(m, work, work_wr, platform, "work_rd")
        # F3 -> F4: the model word an update changes
        work_upd = unchecked_read_port(m, work, work_wr, platform, "work_upd")
        snap_wr = snap.write_port()
        snap_rd = unchecked_read_port(m, snap, snap_wr, platform, "snap_rd")
        buf_wr = row_buffer.write_port()
        buf_rd = unchecked_read_port(m, row_buffer, buf_wr, platform, "buf_rd")
        table_bits = min(MAX_BITS, self.max_table_bits) if self.max_table_bits >= 2 else 0
        tab_rd = None
        table_busy = Signal()               # F0 reads the table (below): an entry waits
        if table_bits:
            m.submodules.table = table = memory.Memory(shape=VALUE_SHAPE, depth=1 << table_bits,
                                                       init=[])
            tab_wr = table.write_port()
            tab_rd = unchecked_read_port(m, table, tab_wr, platform, "tab_rd")
            entry = self.i_table.payload
            m.d.comb += [tab_wr.addr.eq(entry.index), tab_wr.data.eq(entry.value),
                         tab_wr.en.eq(self.i_table.valid & ~table_busy &
                                      (entry.index < (1 << table_bits)))]
        m.d.comb += self.i_table.ready.eq(~table_busy)

        # --- run state ---------------------------------------------------------------------------
        running = Signal()
        epoch_bank = Signal()               # E: the snapshot bank holding the epoch-start model
        if self.one_epoch:
            lr_e = cfg.lr
        else:
            lr_shift = Signal(6)            # the rate's decay: lr_e = lr >> lr_shift
            decay_left = Signal(16)
            lr_e = Signal(LR_BITS)
            m.d.sync += lr_e.eq(decayed_lr(cfg.lr, lr_shift))
        epoch_restart = Signal()            # (below)
        row_done = Signal()                 # F4 writes the row's last field
        rows_to_go = down_counter(m, "rows_to_go", load=epoch_restart,   # rows of the epoch
                                  value=cfg.rows_per_epoch, dec=row_done,  # from this one on
                                  hard=self.mac_counters)
        batch_to_go = Signal(16)            # ... of the mini-batch
        kpar = Signal()
        first_batch = Signal()
        # rows_to_go == 1 and batch_to_go == 1, kept as registers beside the counts (row_done's
        # tests feed every register an epoch restarts)
        last_of_epoch, batch_one = Signal(), Signal()
        last_of_batch = batch_one | last_of_epoch
        with m.If(epoch_restart):
            m.d.sync += last_of_epoch.eq(cfg.rows_per_epoch == 1)
        with m.Elif(row_done):
            m.d.sync += last_of_epoch.eq(rows_to_go == 2)
        rbank = Mux(first_batch, epoch_bank, epoch_bank ^ kpar ^ cfg.delay)
        wbank = epoch_bank ^ 1 ^ kpar

        # --- the row's phases: dot product, waiting for c, update, waiting for write-back --------
        updating = Signal()                 # the words come from the row buffer
        row_taken = Signal()                # every word of the row is in for this phase
        c = Signal(signed(32))              # the row's c, held by the gradient scalar
        row_flag = Signal()                 # ... g or c saturated

        # the row buffer as a stream of the row's words (its read port's register is the stage)
        buf_valid = Signal()
        buf_ptr = Signal(range(self.row_words_max + 1))
        buf_end = Signal(range(self.row_words_max + 1))

        # --- F0: words into the shift register, one field out per cycle --------------------------
        sh = Signal(W)                      # the word, its next field in the low bits
        slots = Signal(range(W + 1))        # cycles left on this word (at least 1 per word)
        fields = Signal(range(W + 1))       # fields left on this word
        sh_last = Signal()                  # sh holds the row's last word
        wi = Signal(range(self.row_words_max + 1))
        rem = Signal(17)                    # features left in the row from this word on
        fi = Signal(idx_bits)              # feature index of the next field
        label = Signal(signed(LABEL_BITS))
        label_pos = Signal()                # label > 0, for the gradient scalar's sign

        src_valid = Mux(updating, buf_valid, self.i_stream.valid)
        src_word = Mux(updating, buf_rd.data, self.i_stream.payload)
        take = Signal()
        m.d.comb += take.eq(running & ~row_taken & src_valid & (slots <= 1))
        m.d.comb += self.i_stream.ready.eq(running & ~updating & ~row_taken & (slots <= 1))
        buf_fetch = ~buf_valid | (take & updating)
        m.d.comb += [buf_rd.addr.eq(buf_ptr), buf_rd.en.eq(buf_fetch),
                     buf_wr.addr.eq(wi), buf_wr.data.eq(self.i_stream.payload),
                     buf_wr.en.eq(take & ~updating)]
        with m.If(buf_fetch):
            m.d.sync += buf_valid.eq(updating & (buf_ptr != buf_end))
            with m.If(updating & (buf_ptr != buf_end)):
                m.d.sync += buf_ptr.eq(buf_ptr + 1)

        word_last = rem <= per_last
        word_fields = Mux(rem < per_word, rem, per_word)
        slot = slots != 0
        m.d.comb += table_busy.eq(running & slot)  # (no entry changes a code being read)
        slot_ok = fields != 0
        slot_last = sh_last & (slots == 1)
        with m.If(take):
            m.d.sync += [sh.eq(src_word), slots.eq(Mux(word_fields == 0, 1, word_fields)),
                         fields.eq(word_fields), sh_last.eq(word_last)]
            with m.If(word_last):
                m.d.sync += [wi.eq(0), rem.eq(n), row_taken.eq(1)]
                with m.If(~updating):
                    m.d.sync += [label.eq(self.i_stream.payload[W - LABEL_BITS:]),
                                 label_pos.eq(self.i_stream.payload[W - LABEL_BITS:]
                                              .as_signed() > 0),
                                 buf_end.eq(wi + 1)]
            with m.Else():
                m.d.sync += [wi.eq(wi + 1),
                             rem.eq(Mux(rem > per_word, rem - per_word, 0))]
        with m.Elif(slot):
            m.d.sync += [sh.eq(sh >> field_bits), slots.eq(slots - 1),
                         fields.eq(Mux(slot_ok, fields - 1, 0))]
        with m.If(slot & slot_ok):
            m.d.sync += fi.eq(fi + 1)

        # the code of sample A (dot product) or B (update): SINGLE and PAIR read b bits at 0 or
        # at b_at; COMPACT adds A's or B's up bit to the interval index (wrapping modulo s)
        k = Signal(MAX_BITS)
        lo = sh[:2 * MAX_BITS]
        base = Mux(compact, lo[:MAX_BITS] & index_mask,
                   (lo >> Mux(updating, b_at, 0))[:MAX_BITS])
        up = compact & lo.bit_select(index_bits + updating, 1)
        m.d.comb += k.eq((base + up)[:MAX_BITS] & code_mask)
        if tab_rd is not None:
            m.d.comb += tab_rd.addr.eq(k)
        m.d.comb += snap_rd.addr.eq(Cat(fi, rbank))

        stage = data.StructLayout({"valid": 1, "ok": 1, "update": 1, "last": 1,
                                   "fi": len(fi)})
        f1 = Signal(stage)
        f1_k = Signal(MAX_BITS)
        f1_raw = Signal(signed(32))
        m.d.sync += [f1.valid.eq(slot & running), f1.ok.eq(slot_ok), f1.update.eq(updating),
                     f1.last.eq(slot_last), f1.fi.eq(fi), f1_k.eq(k), f1_raw.eq(sh[:32])]

        # --- F1: the value and the product's operands --------------------------------------------
        m.submodules.scalar = scalar = GradientScalar(
            sum_width=self.acc_width - _ALIGN, lo_width=1, frac=VALUE_FRAC, lo_shift=_ALIGN,
            multiplier=False, registered_inputs=True)
        m.d.comb += [c.eq(scalar.o_c), row_flag.eq(scalar.o_sat)]
        # (the level's value from its code here, not in F0: F0's decode is the longer path)
        code_value = uniform_value(f1_k << align, half, unsigned_levels)
        if tab_rd is not None:
            code_value = Mux(table_mode, tab_rd.data, code_value)
        value = Mux(is_raw, f1_raw, code_value << _ALIGN)
        f2 = Signal(stage)
        f2_a = Signal(signed(32))
        f2_v = Signal(signed(32))
        m.d.sync += [f2.eq(f1), f2_a.eq(Mux(f1.update, c, snap_rd.data)),
                     f2_v.eq(Mux(f1.ok, value, 0))]
        # ... or the gradient scalar's g and the rate: no field is in F1 while a row waits for
        # its c, so the scalar's product g * lr takes the multiplier then
        with m.If(scalar.o_g_valid):
            m.d.sync += [f2_a.eq(scalar.o_g), f2_v.eq(lr_e)]

        # --- F2: the product ---------------------------------------------------------------------
        f3 = Signal(stage)
        f3_p = Signal(signed(64))
        m.d.sync += [f3.eq(f2), f3_p.eq(f2_a * f2_v)]

        # --- F3: dot: the row sum into the gradient scalar; update: delta ------------------------
        # the row's sum stays in acc for a cycle after its last field, as the gradient scalar's
        # C0 register (the label's is the row's), and is cleared then (no dot-product field
        # follows a row's last that closely: the update comes first)
        acc = Signal(signed(self.acc_width))
        sum_valid = Signal()                # C0: acc holds a row's sum
        dot_end = f3.valid & ~f3.update & f3.last
        m.d.sync += sum_valid.eq(dot_end)
        with m.If(sum_valid):
            m.d.sync += acc.eq(0)
        with m.Elif(f3.valid & ~f3.update):
            m.d.sync += acc.eq(acc + f3_p)
        m.d.comb += [scalar.i_valid.eq(sum_valid), scalar.i_sum.eq(acc >> _ALIGN),
                     scalar.i_lo.eq(0), scalar.raw.eq(0), scalar.i_label.eq(label),
                     scalar.i_label_pos.eq(label_pos), scalar.loss.eq(cfg.loss),
                     scalar.i_p.eq(f3_p)]
        f4 = Signal(stage)
        f4_d = Signal(signed(30))
        # the word to update, read again (rows do not overlap: no write to it since F0)
        m.d.comb += work_upd.addr.eq(f3.fi)
        f4_w = work_upd.data
        m.d.sync += [f4.eq(f3),
                     f4_d.eq((f3_p + (1 << (_DELTA_SHIFT - 1))) >> _DELTA_SHIFT)]

        # --- F4: write back ----------------------------------------------------------------------
        new_w, w_sat = saturate(m, f4_w - f4_d, MODEL_BITS, "new_w")
        write = f4.valid & f4.update & f4.ok
        row_sat = Signal()
        sat_rows = Signal(32)
        m.d.comb += row_done.eq(f4.valid & f4.update & f4.last)
        any_sat = row_sat | row_flag | (write & w_sat)
        m.d.comb += [self.events.row.eq(row_done), self.events.saturated.eq(row_done & any_sat),
                     self.events.epoch.eq(row_done & last_of_epoch)]
        with m.If(row_done):
            m.d.sync += row_sat.eq(0)
            with m.If(any_sat):
                m.d.sync += sat_rows.eq(sat_rows + 1)
        with m.Elif(write & w_sat):
            m.d.sync += row_sat.eq(1)
        m.d.comb += self.saturated.eq(sat_rows)

        # --- phase changes -----------------------------------------------------------------------
        with m.If(dot_end):
            m.d.sync += fi.eq(0)
        with m.If(scalar.o_valid):
            m.d.sync += [updating.eq(1),
                         row_taken.eq(0), buf_ptr.eq(0), buf_valid.eq(0)]
        with m.If(row_done):
            m.d.sync += [updating.eq(0), row_taken.eq(0), fi.eq(0),
                         self.rows.eq(self.rows + 1)]
            with m.If(last_of_batch):
                m.d.sync += [batch_to_go.eq(cfg.batch), batch_one.eq(cfg.batch == 1),
                             kpar.eq(~kpar), first_batch.eq(0)]
            with m.Else():
                m.d.sync += [batch_to_go.eq(batch_to_go - 1), batch_one.eq(batch_to_go == 2)]

        # --- model load / read-back --------------------------------------------------------------
        loading = Signal()
        reading = Signal()
        ld_idx = Signal(idx_bits)
        rb_idx = Signal(range(self.n_max + 1))
        rb_valid = Signal()
        rb_advance = ~rb_valid | self.o_model.ready
        rb_issue = reading & rb_advance & (rb_idx != n)
        rb_finish = reading & rb_advance & (rb_idx == n)
        m.d.comb += [self.o_model.valid.eq(rb_valid), self.o_model.payload.eq(work_rd.data),
                     self.i_model.ready.eq(loading)]
        with m.If(reading & rb_advance):
            m.d.sync += rb_valid.eq(rb_issue)
        with m.If(rb_issue):
            m.d.sync += rb_idx.eq(rb_idx + 1)
        ld_fire = self.i_model.valid & loading
        ld_last = Signal(idx_bits + 1)      # n - 1, registered (n holds still while loading)
        m.d.sync += ld_last.eq(n - 1)
        with m.If(ld_fire):
            m.d.sync += ld_idx.eq(ld_idx + 1)
        with m.If(loading):
            m.d.comb += [work_wr.addr.eq(ld_idx), work_wr.data.eq(self.i_model.payload),
                         work_wr.en.eq(ld_fire),
                         snap_wr.addr.eq(Cat(ld_idx, epoch_bank)),
                         snap_wr.data.eq(self.i_model.payload), snap_wr.en.eq(ld_fire)]
        with m.Else():
            m.d.comb += [work_wr.addr.eq(f4.fi), work_wr.data.eq(new_w), work_wr.en.eq(write),
                         snap_wr.addr.eq(Cat(f4.fi, wbank)), snap_wr.data.eq(new_w),
                         snap_wr.en.eq(write & last_of_batch)]
        with m.If(reading):
            m.d.comb += [work_rd.addr.eq(rb_idx), work_rd.en.eq(rb_issue)]
        with m.Else():
            m.d.comb += work_rd.addr.eq(fi)

        # --- the run's state machine -------------------------------------------------------------
        # the run's end tests, registered: the epoch count changes only as an epoch ends, at
        # least a row before they are read again
        if not self.one_epoch:
            last_epoch, epochs_done = Signal(), Signal()
            m.d.sync += [last_epoch.eq(self.epochs + 1 == cfg.epochs),
                         epochs_done.eq(self.epochs == cfg.epochs)]

        # an epoch starts (a run's first, or the next): one condition for every register it
        # sets (two would put two selects in front of each); the row sum is 0 already, cleared
        # after the last row's dot product

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.rows.eq(0), sat_rows.eq(0), self.epochs.eq(0),
                                 self.cycles.eq(0), slots.eq(0), fields.eq(0)]
                    if not self.one_epoch:
                        m.d.sync += [lr_shift.eq(0), decay_left.eq(cfg.lr_decay_epochs)]
                    m.d.comb += epoch_restart.eq(1)
                    m.next = "RUN"
                with m.Elif(self.load):
                    m.d.sync += [epoch_bank.eq(0), ld_idx.eq(0)]
                    m.next = "LOAD"
                with m.Elif(self.read):
                    m.d.sync += [rb_idx.eq(0), rb_valid.eq(0)]
                    m.next = "READ"
            with m.State("LOAD"):
                m.d.comb += [loading.eq(1), self.busy.eq(1)]
                with m.If(ld_fire & (ld_idx == ld_last)):
                    m.next = "IDLE"
            with m.State("READ"):
                m.d.comb += [reading.eq(1), self.busy.eq(1)]
                with m.If(rb_finish):
                    m.next = "IDLE"
            with m.State("RUN"):
                m.d.comb += [running.eq(1), self.busy.eq(1)]
                m.d.sync += self.cycles.eq(self.cycles + 1)
                with m.If(row_done & last_of_epoch):
                    m.d.sync += epoch_bank.eq(wbank)
                    m.d.comb += epoch_restart.eq(1)
                    if self.one_epoch:
                        m.next = "IDLE"
                    else:
                        m.d.sync += self.epochs.eq(self.epochs + 1)
                        decay_epoch(m, cfg.lr_decay_epochs, decay_left,
                                    count_decay_step(lr_shift))
                        with m.If(cfg.snapshots):
                            m.d.sync += [rb_idx.eq(0), rb_valid.eq(0)]
                            m.next = "SNAP"
                        with m.Elif(last_epoch):
                            m.next = "IDLE"
            if not self.one_epoch:
                with m.State("SNAP"):
                    m.d.comb += [reading.eq(1), self.busy.eq(1)]
                    m.d.sync += self.cycles.eq(self.cycles + 1)
                    with m.If(rb_finish):
                        with m.If(epochs_done):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "RUN"
        with m.If(epoch_restart):
            m.d.sync += [batch_to_go.eq(cfg.batch), batch_one.eq(cfg.batch == 1),
                         kpar.eq(0), first_batch.eq(1), wi.eq(0), rem.eq(n), fi.eq(0),
                         updating.eq(0), row_taken.eq(0), row_sat.eq(0)]
        return m

    capabilities = SGDPipeline.capabilities


def make_trainer(width, n_max, *, max_table_bits=MAX_BITS, serial=False, lanes=None, dsp=False,
                 mul_stages=1, one_epoch=False, mac_counters=False):
    """The trainer of a build: :class:`SerialSGDPipeline` with ``serial`` (and ``one_epoch``,
    ``mac_counters``), else :class:`~zipml.hw.pipeline.SGDPipeline` with ``lanes``, ``dsp`` and
    ``mul_stages``."""
    if serial:
        return SerialSGDPipeline(width, n_max, max_table_bits=max_table_bits,
                                 one_epoch=one_epoch, mac_counters=mac_counters)
    return SGDPipeline(width, n_max, max_table_bits=max_table_bits, lanes=lanes, dsp=dsp,
                       mul_stages=mul_stages)
