"""The streaming double-sampled SGD pipeline: packed rows in, a trained model out.

Data flow (one word per cycle; stage names as in :mod:`zipml.sim.timing`)::

    i_stream -> S0 accept --+--> replay FIFO, its head, codes vB ----------+
                codes vA    |                                              |
                            S1 table + snapshot reads                      U0 pop
                            S2 vA * w_hat (shift-and-add / RAW '*')        U1 delta = c * vB,
                            adder tree, row accumulator                       w read
                            GradientScalar: D, g, c  -------------------->  U2 w = sat(w - delta)
                                                                              (banks: U2 + 1)

A word with more fields than the pipeline has lanes is taken in parts of P fields, one per
cycle (:func:`zipml.contract.pipeline_lanes`); everything after S0 sees a part as a word.

Model memory, per lane j (feature i lives in lane ``i % P`` at address ``i // P``):

- ``work[j]``: the working model, read-modify-written by every update (the read is transparent
  for the write port, registered, and the two writes behind it are forwarded, so back-to-back
  rows see each other's updates; the new word is written a cycle after U2);
- ``snap[j]``: two snapshot banks read by the dot products. The last row of batch k also writes
  its results into bank ``E ^ 1 ^ (k & 1)`` (every row updates every feature, so that bank then
  holds the model after batch k), a cycle after U2 like the working model; batch k >= 1 reads
  bank ``E ^ (k & 1) ^ delay``, batch 0 bank ``E``, where ``E`` is the bank holding the model
  at the start of the epoch.

The first word of a batch waits until the batch it depends on (k - 1 - delay) is written back;
an epoch drains before the next begins. Cycle counts follow :mod:`zipml.sim.timing` exactly.
A batch of one-word rows may read a snapshot word in the cycle its bank is written: that word
comes from the lane's register of the write instead.

The model layout depends on P, i.e. on the format: after changing the format (or n_features),
load the model again before training or reading it back.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
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
    lanes_in_last_word,
    lanes_in_word,
    pipeline_lanes,
    pipeline_row_words,
)
from ..sim import timing
from .lanes import (
    BLOCK_RAM,
    FMT_ID_BITS,
    VALUE_FRAC,
    VALUE_SHAPE,
    all_formats,
    fmt_id,
    format_cases,
    format_id,
    lane_codes,
    lane_table_bits,
    lanes_word_bits,
    shift_add_mul,
    sum_tree,
    uniform_value,
)
from .ram import unchecked_read_port
from .scalar import GradientScalar, count_decay_step, decay_epoch, decayed_lr, saturate

__all__ = ["ConfigLayout", "TableEntry", "RunEvents", "SGDPipeline"]


#: Run-time configuration (hold it stable while ``busy``).
ConfigLayout = data.StructLayout({
    "n_features": unsigned(16),     # n, 1..n_max, bias column included
    "encoding": unsigned(2),        # contract.Encoding
    "bits": unsigned(4),            # b, 1..8 (ignored for RAW)
    "levels": unsigned(2),          # contract.LevelMode
    "loss": unsigned(2),            # contract.Loss
    "lr": unsigned(LR_BITS),        # learning rate, LR_FRAC fractional bits
    "lr_decay_epochs": unsigned(16),
    "batch": unsigned(16),          # B >= 1
    "delay": unsigned(1),
    "rows_per_epoch": unsigned(32),
    "epochs": unsigned(16),         # epochs per run, >= 1
    "snapshots": unsigned(1),       # stream the model on o_model after every epoch
})

#: One level-table entry.
TableEntry = data.StructLayout({"index": unsigned(MAX_BITS), "value": VALUE_SHAPE})

#: The counters' strobes: a row written back, an epoch finished, a row counted as saturated.
RunEvents = data.StructLayout({"row": 1, "epoch": 1, "saturated": 1})

_LO_SHIFT = RAW_FRAC - VALUE_FRAC        # RAW product bits kept out of the main adder tree
_DELTA_SHIFT = SCALAR_FRAC - 24          # delta = round(c * v / 2**(6 + f))
_GROUP = 8                               # lanes per replica of a broadcast signal
_DSP_SPLIT = 17                          # low bits of a 32-bit factor in the first multiplier


class SGDPipeline(wiring.Component):
    """Low-precision SGD over a stream of packed rows, every format selected at run time.

    Parameters
    ----------
    width : int
        W, bits per input word (32, 64, 128 or 256).
    n_max : int
        Largest n_features.
    max_table_bits : int
        Largest b for which level tables are held (1 drops tables; default all).
    mul_stages : int
        0, 1 or 2: extra register stages inside the lane products (1 splits the shift-and-add
        sums and registers the multiplier outputs; 2 also registers their inputs) for a faster
        clock; :mod:`zipml.sim.timing` counts them.
    lanes : int
        Fields processed per cycle (``W // 32 .. W``, default W), which saves the arithmetic
        of lanes ``lanes ..`` where a board is too small for W of them: a word with more
        fields is taken in parts, one per cycle (:func:`zipml.contract.pipeline_lanes`).
    dsp : bool or int
        Lane products on hard multipliers (two per product; the RAW lanes' multipliers carry
        their code products too) instead of shift-and-add logic: ``True`` for every lane, an
        int k for lanes ``0 .. k - 1`` (balancing multipliers against logic on a board).

    Members
    -------
    config : In(ConfigLayout)
    start, load, read : In(1)
        Strobes, honoured when not ``busy``: train ``config.epochs`` epochs; take n words on
        ``i_model``; send n words on ``o_model``.
    busy : Out(1)
    i_stream : In(stream.Signature(width))
        Packed rows (``zipml.host.pack``).
    i_model : In(stream.Signature(signed(32)))
        Model words in feature order, after ``load``.
    o_model : Out(stream.Signature(signed(32)))
        Model words in feature order, after ``read`` and after every epoch if
        ``config.snapshots``.
    i_table : In(stream.Signature(TableEntry))
        Level-table writes (always ready; write only when not ``busy``).
    rows, saturated : Out(32)
        Rows written back and rows in which g, c or a model word saturated, since ``start``.
    epochs : Out(16)
    cycles : Out(48)
        Busy cycles of the current run (:func:`zipml.sim.timing.run_cycles`).
    events : Out(RunEvents)
        A strobe for each row written back, each epoch finished and each row counted in
        ``saturated``, for counters kept across runs.
    """

    def __init__(self, width=128, n_max=1024, *, max_table_bits=MAX_BITS,
                 mul_stages=timing.MUL_STAGES, lanes=None, dsp=False):
        if width % 32 or width < 32:
            raise ValueError(f"width must be a multiple of 32, not {width}")
        if mul_stages not in (0, 1, 2):
            raise ValueError(f"mul_stages must be 0, 1 or 2, not {mul_stages}")
        lanes = width if lanes is None else lanes
        if not width // 32 <= lanes <= width:
            raise ValueError(f"lanes must be within {width // 32}..{width}, not {lanes}")
        self.width, self.n_max, self.max_table_bits = width, n_max, max_table_bits
        self.mul_stages, self.dsp = mul_stages, dsp
        if not isinstance(dsp, (bool, int)) or dsp < 0:
            raise ValueError(f"dsp must be a bool or a lane count, not {dsp!r}")
        self.formats = all_formats(width, lanes)
        #: P per format: fields per word, or per part of a word (contract.pipeline_lanes)
        self.per_word = {f: pipeline_lanes(width, f, lanes) for f in self.formats}
        #: formats whose words are taken in parts
        self.in_parts = [f for f in self.formats if self.per_word[f] < lanes_in_word(width, f)]
        # lanes that some format fills
        self.lanes = max(self.per_word.values())
        self.raw_lanes = width // 32
        #: lanes whose products are on hard multipliers
        self.dsp_lanes = self.lanes if dsp is True else min(int(dsp), self.lanes)
        p_all = sorted(set(self.per_word.values()))
        self.depths = []
        for j in range(self.lanes):
            p = min(q for q in p_all if q > j)
            self.depths.append(max(1, -(-(n_max - j) // p)))
        self.table_bits = [lane_table_bits(width, j, max_table_bits, self.lanes)
                           for j in range(self.lanes)]
        self.row_words_max = max(pipeline_row_words(width, f, n_max, lanes)
                                 for f in self.formats)
        self.dot_latency = timing.dot_latency(width, mul_stages, self.lanes)
        self.tree_stages = timing.tree_stages(width, self.lanes)
        # (+ 2: the replay FIFOs are written a cycle after the accept, their room a cycle old)
        self.fifo_depth = self.row_words_max + self.dot_latency + 6
        self.acc_width = 42 + max(1, (n_max - 1).bit_length()) + 1
        self.lo_width = _LO_SHIFT + max(1, (n_max - 1).bit_length()) + 1
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

    # --- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _pipe(m, value, stages, name):
        """``value`` delayed by ``stages`` registers."""
        for i in range(stages):
            reg = Signal.like(value, name=f"{name}_d{i}")
            m.d.sync += reg.eq(value)
            value = reg
        return value

    def _operands(self, m, name, *values):
        """``values``, registered once more with ``mul_stages = 2`` (multiplier inputs)."""
        if self.mul_stages < 2:
            return values
        regs = []
        for i, v in enumerate(values):
            reg = Signal.like(v, name=f"{name}_in{i}", reset_less=True)
            m.d.sync += reg.eq(v)
            regs.append(reg)
        return regs

    def _raw_product(self, m, a, b, name, dsp):
        """The full 64-bit ``a * b`` of a RAW lane, registered if ``mul_stages``; with ``dsp``
        its four 18 x 18 partial products are what is registered, summed after."""
        a, b = self._operands(m, name, a, b)
        if dsp and self.mul_stages:
            lo, hi = _DSP_SPLIT, 2 * _DSP_SPLIT
            a_lo, a_hi, b_lo, b_hi = a[:lo], a[lo:].as_signed(), b[:lo], b[lo:].as_signed()
            parts = []
            for i, (part, shift) in enumerate([(a_lo * b_lo, 0), (a_hi * b_lo, lo),
                                               (a_lo * b_hi, lo), (a_hi * b_hi, hi)]):
                reg = Signal(signed(len(part) + 1) if not part.shape().signed
                             else part.shape(), name=f"{name}_{i}", reset_less=True)
                m.d.sync += reg.eq(part)
                parts.append(reg << shift)
            full = Signal(signed(64), name=name)
            m.d.comb += full.eq(sum_tree(m, parts, f"{name}_sum"))
            return full
        full = Signal(signed(64), name=name, reset_less=True)
        if self.mul_stages:
            m.d.sync += full.eq(a * b)
        else:
            m.d.comb += full.eq(a * b)
        return full

    def _product(self, m, a, b, name, dsp, offset=0):
        """``a * b + offset`` (32-bit ``a``, narrow ``b``) in parts, summed after
        ``mul_stages`` registers (the first on the operands when there are two): with ``dsp``
        two hard multiplies (``a``'s low 17 bits, unsigned, and its high bits, signed: 18 x 18
        multipliers take either); otherwise shift-and-add in three partial sums, ``offset``
        a fourth term of their sum (two levels of additions on each side of the register)."""
        a, b = self._operands(m, name, a, b)
        if dsp:
            parts = [a[:_DSP_SPLIT] * b, (a[_DSP_SPLIT:].as_signed() * b) << _DSP_SPLIT]
        elif self.mul_stages:
            parts = shift_add_mul(m, a, b, name, parts=3)
        else:
            parts = [shift_add_mul(m, a, b, name)]
        if not self.mul_stages:
            return sum_tree(m, parts + ([offset] if offset else []), f"{name}_sum")
        regs = []
        for i, part in enumerate(parts):
            reg = Signal(signed(len(a) + len(b) + 1), name=f"{name}_{i}", reset_less=True)
            m.d.sync += reg.eq(part)
            regs.append(reg)
        return sum_tree(m, regs + ([offset] if offset else []), f"{name}_sum")

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        W, L = self.width, self.lanes
        groups = range(-(-L // _GROUP))

        def replicas(name, shape, value=None, reset_less=True):
            """One register per group of lanes for a signal every lane reads (loaded with
            ``value`` every cycle, if given): each drives its group only, where a single copy
            would run wires across the whole lane array. The build keeps ``*_replica*``
            registers from being merged back into one."""
            regs = [Signal(shape, name=f"{name}_replica{g}", reset_less=reset_less)
                    for g in groups]
            if value is not None:
                m.d.sync += [r.eq(value) for r in regs]
            return regs

        def lane_mask(count):
            """Bit j set for the lanes below ``count``."""
            return Cat(count > j for j in range(L))

        def decode_into_registers(words, sample, name, load=None):
            """Every lane's code of ``sample`` (k and k left-aligned, :func:`lane_codes`) in
            ``words[group]``, decoded into registers (loaded when ``load[group]``, if given):
            the table read after them starts from a flip-flop."""
            codes = []
            for j in range(L):
                g = j // _GROUP
                k, nk = lane_codes(m, words[g], j, W, fsel_g[g], sample, L)
                reg_k = Signal(MAX_BITS, name=f"{name}_k{j}", reset_less=True)
                reg_n = Signal(MAX_BITS, name=f"{name}_n{j}", reset_less=True)
                loads = [reg_k.eq(k), reg_n.eq(nk)]
                if load is None:
                    m.d.sync += loads
                else:
                    with m.If(load[g]):
                        m.d.sync += loads
                codes.append((reg_k, reg_n))
            return codes

        # --- format constants of the run-time format (registered) --------------------------------
        fid = Signal(FMT_ID_BITS)
        m.d.comb += fid.eq(format_id(cfg.encoding, cfg.bits))
        is_raw = Signal()
        per_word = Signal(range(L + 1))
        per_last = Signal(range(L + 1))
        raw_now = cfg.encoding == Encoding.RAW
        m.d.sync += is_raw.eq(raw_now)
        # the lanes' copies (one cycle after the configuration, like the constants above)
        # ... and the code format's select, a flag per code format (lane_codes)
        code_ids = [fmt_id(f.encoding, f.bits) for f in self.formats[:-1]]
        fsel = [Signal(name=f"fsel_replica{g}_{i}") for g in groups for i in code_ids]
        fsel_g = [dict(zip(code_ids, fsel[g * len(code_ids):(g + 1) * len(code_ids)]))
                  for g in groups]
        m.d.sync += [sel.eq(~raw_now & (fid == i))
                     for sel_g in fsel_g for i, sel in sel_g.items()]
        half_g = replicas("half", MAX_BITS + 1)
        raw_g = replicas("is_raw", 1, raw_now)
        table_g = replicas("table_mode", 1, cfg.levels == LevelMode.TABLE)
        unsigned_g = replicas("unsigned_levels", 1, cfg.levels == LevelMode.UNIFORM_UNSIGNED)
        # words taken in parts: a word's own field counts, and the shift from a part to the
        # next, a flag per distinct shift
        word_p = Signal(range(W + 1))
        word_p_last = Signal(range(W + 1))
        per_two = Signal(range(2 * L + 1))
        steps = sorted({self.per_word[f] * f.field_bits for f in self.in_parts})
        step_sel = {st: Signal(name=f"part_step{st}") for st in steps}
        for f in format_cases(m, cfg.encoding, fid, self.formats):
            in_parts = f in self.in_parts
            m.d.sync += [per_word.eq(self.per_word[f]),
                         per_last.eq(self.per_word[f] if in_parts else lanes_in_last_word(W, f))]
            if self.in_parts:
                m.d.sync += [word_p.eq(lanes_in_word(W, f)),
                             word_p_last.eq(lanes_in_last_word(W, f)),
                             per_two.eq(2 * self.per_word[f])]
                m.d.sync += [sel.eq(in_parts and st == self.per_word[f] * f.field_bits)
                             for st, sel in step_sel.items()]
            if f.encoding != Encoding.RAW:
                m.d.sync += [h.eq(1 << (MAX_BITS - f.bits)) for h in half_g]
        n = cfg.n_features

        # --- memories ----------------------------------------------------------------------------
        work_rd, work_wr, snap_rd, snap_wr, tab_a, tab_b = [], [], [], [], [], []
        twrite_g = replicas("twrite", data.StructLayout({"valid": 1, "entry": TableEntry}),
                            Cat(self.i_table.valid, self.i_table.payload), reset_less=False)
        for j in range(L):
            depth = self.depths[j]
            abits = ceil_log2(depth)
            # block RAM even when shallow: a 32-bit bank in LUT RAM costs logic cells (about
            # 9 per 64 bits on the ECP5) that the lane arithmetic needs
            work = memory.Memory(shape=signed(MODEL_BITS), depth=depth, init=[],
                                 attrs=BLOCK_RAM)
            snap = memory.Memory(shape=signed(MODEL_BITS), depth=2 << abits, init=[],
                                 attrs=BLOCK_RAM)
            m.submodules[f"work{j}"] = work
            m.submodules[f"snap{j}"] = snap
            wr = work.write_port()
            work_wr.append(wr)
            work_rd.append(work.read_port(transparent_for=(wr,)))
            snap_wr.append(snap.write_port())
            # no collision check: no read of a snapshot word is used in the cycle the word is
            # written (a batch reads a bank no batch in flight writes; loads and read-backs run
            # with the pipeline idle), and the check's compare and select per bit would sit
            # between the block RAM's output and the product's operand register
            snap_rd.append(unchecked_read_port(m, snap, snap_wr[-1], platform, f"snap{j}_rd"))
            tb = self.table_bits[j]
            if tb:
                tab = memory.Memory(shape=VALUE_SHAPE, depth=1 << tb, init=[])
                m.submodules[f"table{j}"] = tab
                twr = tab.write_port()
                tw = twrite_g[j // _GROUP]
                m.d.comb += [twr.addr.eq(tw.entry.index), twr.data.eq(tw.entry.value),
                             twr.en.eq(tw.valid & (tw.entry.index < (1 << tb)))]
                tab_a.append(tab.read_port())
                tab_b.append(tab.read_port())
            else:
                tab_a.append(None)
                tab_b.append(None)
        m.d.comb += self.i_table.ready.eq(1)

        # the replay FIFO, one per group of lanes, each holding the bits its group decodes
        group_bits = [lanes_word_bits(W, range(g * _GROUP, min(L, (g + 1) * _GROUP)), L)
                      for g in groups]
        replays = []
        for g, (lo, hi) in enumerate(group_bits):
            m.submodules[f"replay{g}"] = replay = fifo.SyncFIFOBuffered(
                width=hi - lo, depth=self.fifo_depth)
            replays.append(replay)
        replay = replays[0]

        # --- control state -----------------------------------------------------------------------
        epoch_bank = Signal()               # E: the snapshot bank holding the epoch-start model
        outstanding = Signal(3)             # batches started by the input, not yet written back
        lr_shift = Signal(6)
        decay_left = Signal(16)
        lr_e = Signal(LR_BITS)
        m.d.sync += lr_e.eq(decayed_lr(cfg.lr, lr_shift))

        # input-side counters
        in_wi = Signal(range(self.row_words_max + 1))
        in_rem = Signal(17)
        in_row_epoch = Signal(32)
        in_row_batch = Signal(16)
        in_kpar = Signal()
        in_first_batch = Signal()
        in_rbank = Signal()
        in_done = Signal()                  # every row of the epoch accepted
        in_batch_start = Signal()           # in_wi == 0 and in_row_batch == 0, as a flag

        def restart_input():
            return [in_wi.eq(0), in_rem.eq(n), in_row_epoch.eq(0), in_row_batch.eq(0),
                    in_kpar.eq(0), in_first_batch.eq(1), in_done.eq(0), in_batch_start.eq(1)]

        # update-side completion pulses (U2), defined below
        row_done_now = Signal()
        batch_done_now = Signal()
        epoch_done_now = Signal()
        done_wbank = Signal()

        # --- S0: accept --------------------------------------------------------------------------
        running = Signal()
        batch_start = in_batch_start
        may_start = (outstanding - batch_done_now) <= cfg.delay
        # The replay FIFOs are written from S1's registers, a cycle after the accept (which
        # would otherwise reach every group's FIFO across the lane array); their room is a
        # register, two words short of full (the word in S1, and the level it reads is a cycle
        # old). U0 never waits, so the FIFOs hold a row and a dot latency at most, and the
        # depth keeps ready from ever falling for lack of room.
        replay_room = Signal()
        m.d.sync += replay_room.eq(replay.w_level <= self.fifo_depth - 3)
        s0_ready = Signal()
        m.d.comb += s0_ready.eq(running & ~in_done & replay_room & (~batch_start | may_start))
        word = Signal(W)        # what S0 takes: a word, or a part of one (fields from bit 0)
        word_valid = Signal()
        accept = word_valid & s0_ready
        if not self.in_parts:
            m.d.comb += [word.eq(self.i_stream.payload), word_valid.eq(self.i_stream.valid),
                         self.i_stream.ready.eq(s0_ready)]
        else:
            # A word with more fields than per_word: S0 takes its first part from the input and
            # the rest from `part`, shifted down a part at a time. The part that ends a row
            # carries the label: the word's own top bits, or, when the row's fields end before
            # its last word (which then holds only the label), that word's, consumed with it.
            body = W - LABEL_BITS
            head = self.i_stream.payload
            part = Signal(W, reset_less=True)
            part_label = Signal(LABEL_BITS, reset_less=True)
            part_valid = Signal()
            part_fields = Signal(range(W + 1))  # fields of the word from the part in `part` on
            part_final = Signal()               # part_fields <= per_word, as a flag
            label_next = Signal()               # the row's label is in the next input word
            with_next = label_next & part_final
            m.d.comb += [
                word.eq(Mux(part_valid, Cat(part[:body], Mux(label_next, head[body:], part_label)),
                            head)),
                word_valid.eq(Mux(part_valid, ~with_next | self.i_stream.valid,
                                  self.i_stream.valid)),
                self.i_stream.ready.eq(s0_ready & (~part_valid | with_next)),
            ]
            head_fields = Mux(in_rem < word_p, in_rem, word_p)
            whole = Mux(part_valid, part, head)
            next_part = Signal(W)
            m.d.comb += next_part.eq(0)
            for st, sel in step_sel.items():
                with m.If(sel):
                    m.d.comb += next_part.eq(whole >> st)
            with m.If(accept):
                m.d.sync += part_final.eq(Mux(part_valid, part_fields, head_fields) <= per_two)
                with m.If(part_valid):
                    m.d.sync += [part.eq(next_part), part_fields.eq(part_fields - per_word),
                                 part_valid.eq(~part_final)]
                with m.Elif(head_fields > per_word):
                    m.d.sync += [part.eq(next_part), part_fields.eq(head_fields - per_word),
                                 part_valid.eq(1), part_label.eq(head[body:]),
                                 label_next.eq((in_rem > word_p_last) & (in_rem <= word_p))]
        s1_word = Signal(W, reset_less=True)
        s1_write = replicas("s1_write", 1, accept, reset_less=False)
        m.d.sync += s1_word.eq(word)
        for g, (replay_g, (lo, hi)) in enumerate(zip(replays, group_bits)):
            m.d.comb += [replay_g.w_data.eq(s1_word[lo:hi]), replay_g.w_en.eq(s1_write[g])]

        last_word = in_rem <= per_last
        last_of_epoch = in_row_epoch == cfg.rows_per_epoch - 1
        last_of_batch = (in_row_batch == cfg.batch - 1) | last_of_epoch
        rbank_now = Signal()
        m.d.comb += rbank_now.eq(in_rbank)
        with m.If(batch_start):
            m.d.comb += rbank_now.eq(Mux(in_first_batch, epoch_bank,
                                         epoch_bank ^ in_kpar ^ cfg.delay))
        wbank_now = epoch_bank ^ 1 ^ in_kpar

        s1_valid = Signal()
        # S0 decodes the codes of sample A into S1's registers; RAW lanes keep their bits
        s1_codes = decode_into_registers([word for _ in groups], "A", "s1")
        s1_raw = s1_word[:32 * self.raw_lanes]
        s1_lane_ok = Signal(L, reset_less=True)     # lanes holding a field of this word
        s1_rd_g = replicas("s1_rd", data.StructLayout({"wi": len(in_wi), "rbank": 1}),
                           Cat(in_wi, rbank_now))
        meta_layout = data.StructLayout({
            "first": 1, "last": 1, "last_of_batch": 1, "last_of_epoch": 1, "wbank": 1,
            "label": signed(LABEL_BITS)})
        s1_meta = Signal(meta_layout)
        # S1's data registers load every cycle (s1_valid says when they hold a word): an
        # enable on them would be one more net across every lane
        m.d.sync += [
            s1_valid.eq(accept),
            s1_lane_ok.eq(lane_mask(Mux(in_rem < per_word, in_rem, per_word))),
            s1_meta.first.eq(in_wi == 0), s1_meta.last.eq(last_word),
            s1_meta.last_of_batch.eq(last_of_batch), s1_meta.wbank.eq(wbank_now),
            s1_meta.last_of_epoch.eq(last_of_epoch),
            s1_meta.label.eq(word[W - LABEL_BITS:]),
        ]
        with m.If(accept):
            m.d.sync += in_rbank.eq(rbank_now)
            with m.If(batch_start):
                m.d.sync += [outstanding.eq(outstanding + 1 - batch_done_now),
                             in_first_batch.eq(0)]
            m.d.sync += in_batch_start.eq(last_word & last_of_batch)
            with m.If(last_word):
                m.d.sync += [in_wi.eq(0), in_rem.eq(n), in_row_epoch.eq(in_row_epoch + 1)]
                with m.If(last_of_batch):
                    m.d.sync += [in_row_batch.eq(0), in_kpar.eq(~in_kpar)]
                with m.Else():
                    m.d.sync += in_row_batch.eq(in_row_batch + 1)
                with m.If(last_of_epoch):
                    m.d.sync += in_done.eq(1)
            with m.Else():
                m.d.sync += [in_wi.eq(in_wi + 1),
                             in_rem.eq(Mux(in_rem > per_word, in_rem - per_word, 0))]
        with m.If(~(accept & batch_start) & batch_done_now):
            m.d.sync += outstanding.eq(outstanding - 1)

        # --- S1: table reads, snapshot reads --------------------------------------------------
        s2_valid = Signal()
        s2_meta = Signal(meta_layout)
        m.d.sync += [s2_valid.eq(s1_valid), s2_meta.eq(s1_meta)]
        s2_uni, s2_raw, s2_lane_ok = [], [], []
        for j in range(L):
            abits = ceil_log2(self.depths[j])
            g = j // _GROUP
            rd = s1_rd_g[g]
            m.d.comb += snap_rd[j].addr.eq(Cat(rd.wi[:abits], rd.rbank))
            k, nk = s1_codes[j]
            ok = Signal(name=f"s2_ok{j}", reset_less=True)
            uni = Signal(VALUE_SHAPE, name=f"s2_uni{j}", reset_less=True)
            m.d.sync += [ok.eq(s1_lane_ok[j]),
                         uni.eq(uniform_value(nk, half_g[g], unsigned_g[g]))]
            if tab_a[j] is not None:
                m.d.comb += tab_a[j].addr.eq(k)
            s2_lane_ok.append(ok)
            s2_uni.append(uni)
            if j < self.raw_lanes:
                raw = Signal(signed(32), name=f"s2_raw{j}", reset_less=True)
                m.d.sync += raw.eq(Mux(s1_lane_ok[j], s1_raw[32 * j:32 * (j + 1)], 0))
                s2_raw.append(raw)

        # --- S2: products ------------------------------------------------------------------------
        prod_shape = signed(42)
        t_valid = self._pipe(m, s2_valid, 1 + self.mul_stages, "t_valid")
        t_meta = self._pipe(m, s2_meta, 1 + self.mul_stages, "t_meta")
        prods, los = [], []
        # a snapshot word read in the cycle it is written (a batch whose rows are one word,
        # started as soon as the batch it depends on wrote its last word back) comes from the
        # lane's copy of that write instead (``w_before`` when the read's data is taken)
        w_befores = [Signal(signed(MODEL_BITS), name=f"w_before{j}", reset_less=True)
                     for j in range(L)]
        snap_fwd = [Signal(name=f"snap_fwd{j}", reset_less=True) for j in range(L)]
        for j in range(L):
            g = j // _GROUP
            w_hat = Signal(signed(MODEL_BITS), name=f"w_hat{j}")
            m.d.comb += w_hat.eq(Mux(snap_fwd[j], w_befores[j], snap_rd[j].data))
            va = Signal(VALUE_SHAPE, name=f"va{j}")
            value = s2_uni[j]
            if tab_a[j] is not None:
                value = Mux(table_g[g], tab_a[j].data, s2_uni[j])
            m.d.comb += va.eq(Mux(s2_lane_ok[j], value, 0))
            p = Signal(prod_shape, name=f"prod{j}", reset_less=True)
            dsp = j < self.dsp_lanes
            if j < self.raw_lanes:
                # with dsp, the code value rides the RAW lane's multiplier
                operand = Mux(raw_g[g], s2_raw[j], va) if dsp else s2_raw[j]
                full = self._raw_product(m, w_hat, operand, f"rawprod{j}", dsp)
                code_p = full if dsp else self._product(m, w_hat, va, f"dotpart{j}", dsp)
                lo = Signal(_LO_SHIFT, name=f"lo{j}", reset_less=True)
                m.d.sync += [p.eq(Mux(raw_g[g], full >> _LO_SHIFT, code_p)),
                             lo.eq(Mux(raw_g[g], full[:_LO_SHIFT], 0))]
                los.append(lo)
            else:
                m.d.sync += p.eq(self._product(m, w_hat, va, f"dotpart{j}", dsp))
            prods.append(p)

        # --- adder tree (TREE_LEVELS_PER_STAGE levels per register) ------------------------------
        level = prods
        tree_w = prod_shape.width
        lo_sum = sum_tree(m, los, "lo")
        lo_w = _LO_SHIFT + max(1, (len(los) - 1).bit_length()) + 1
        stages = 0
        while len(level) > 1 or stages == 0:
            for lvl in range(timing.TREE_LEVELS_PER_STAGE):
                if len(level) > 1:
                    tree_w += 1
                    level = [sum_tree(m, level[i:i + 2], f"tree{stages}_{lvl}_{i // 2}")
                             for i in range(0, len(level), 2)]
            regs = []
            for i, v in enumerate(level):
                r = Signal(signed(tree_w), name=f"tree{stages}_{i}", reset_less=True)
                m.d.sync += r.eq(v)
                regs.append(r)
            level = regs
            lo_reg = Signal(lo_w, name=f"lotree{stages}", reset_less=True)
            m.d.sync += lo_reg.eq(lo_sum)
            lo_sum = lo_reg
            stages += 1
            t_meta_n = Signal(meta_layout, name=f"tmeta{stages}")
            t_valid_n = Signal(name=f"tvalid{stages}")
            m.d.sync += [t_meta_n.eq(t_meta), t_valid_n.eq(t_valid)]
            t_meta, t_valid = t_meta_n, t_valid_n
        assert stages == self.tree_stages, (stages, self.tree_stages)
        tree_sum = level[0]

        # --- row accumulator ---------------------------------------------------------------------
        acc = Signal(signed(self.acc_width))
        acc_lo = Signal(self.lo_width)
        acc_next = Signal(signed(self.acc_width))
        lo_next = Signal(self.lo_width)
        m.d.comb += [acc_next.eq(Mux(t_meta.first, 0, acc) + tree_sum),
                     lo_next.eq(Mux(t_meta.first, 0, acc_lo) + lo_sum)]
        sc_valid = Signal()
        sc_meta = Signal(meta_layout)
        sc_sum = Signal(signed(self.acc_width))
        sc_lo = Signal(self.lo_width)
        m.d.sync += sc_valid.eq(t_valid & t_meta.last)
        with m.If(t_valid):
            m.d.sync += [acc.eq(acc_next), acc_lo.eq(lo_next)]
            with m.If(t_meta.last):
                m.d.sync += [sc_sum.eq(acc_next), sc_lo.eq(lo_next), sc_meta.eq(t_meta)]

        # --- gradient scalar ---------------------------------------------------------------------
        m.submodules.scalar = scalar = GradientScalar(
            sum_width=self.acc_width, lo_width=self.lo_width, frac=VALUE_FRAC,
            lo_shift=_LO_SHIFT, signed_table=True)
        m.d.comb += [scalar.i_valid.eq(sc_valid), scalar.i_sum.eq(sc_sum),
                     scalar.i_lo.eq(sc_lo), scalar.i_label.eq(sc_meta.label),
                     scalar.raw.eq(is_raw), scalar.loss.eq(cfg.loss), scalar.lr.eq(lr_e)]
        c_meta = self._pipe(m, sc_meta, scalar.latency, "c_meta")

        # --- U0: replay the row once c is known --------------------------------------------------
        u_busy = Signal()
        u_wi = Signal.like(in_wi)
        u_rem = Signal(17)
        row_layout = data.StructLayout({
            "c": signed(32), "sat": 1, "last_of_batch": 1, "last_of_epoch": 1, "wbank": 1})
        u_row = Signal(row_layout)
        u_first = scalar.o_valid
        wi0 = Mux(u_first, 0, u_wi)
        rem0 = Mux(u_first, n, u_rem)
        last0 = rem0 <= per_last
        # U0 pops a word (u_first | u_busy), from a register and its replicas per group of
        # lanes: it enables the replay FIFOs' reads and the head registers across the array,
        # so it is computed a cycle early, from the scalar's valid a cycle before its output
        u_go = Signal()
        u_go_next = Signal()
        m.d.comb += u_go_next.eq(scalar.o_valid_next | Mux(u_go, ~last0, u_busy))
        m.d.sync += u_go.eq(u_go_next)
        u_go_g = replicas("u_go", 1, u_go_next, reset_less=False)
        row_now = Signal(row_layout)
        m.d.comb += row_now.eq(u_row)
        with m.If(u_first):
            m.d.comb += [row_now.c.eq(scalar.o_c), row_now.sat.eq(scalar.o_sat),
                         row_now.last_of_batch.eq(c_meta.last_of_batch),
                         row_now.last_of_epoch.eq(c_meta.last_of_epoch),
                         row_now.wbank.eq(c_meta.wbank)]
            m.d.sync += u_row.eq(row_now)
        # each replay FIFO's head word moves into a register, and from there, decoded into the
        # codes of sample B, into the registers U0 pops (a word is accepted a dot latency before
        # it is replayed, so they are always loaded when U0 pops them)
        takes, heads = [], []
        for g, (replay_g, (lo, hi)) in enumerate(zip(replays, group_bits)):
            head = Signal(hi - lo, name=f"replay_head{g}", reset_less=True)
            head_valid = Signal(name=f"replay_head_valid{g}")
            codes_valid = Signal(name=f"replay_codes_valid{g}")
            take_head = Signal(name=f"replay_take_head{g}")
            take_codes = Signal(name=f"replay_take_codes{g}")
            m.d.comb += [take_codes.eq(~codes_valid | u_go_g[g]),
                         take_head.eq(~head_valid | take_codes),
                         replay_g.r_en.eq(take_head)]
            with m.If(take_codes):
                m.d.sync += codes_valid.eq(head_valid)
            with m.If(take_head):
                m.d.sync += [head.eq(replay_g.r_data), head_valid.eq(replay_g.r_rdy)]
            takes.append(take_codes)
            heads.append(Cat(Const(0, lo), head, Const(0, W - hi)))
        head_codes = decode_into_registers(heads, "B", "head", takes)
        head_raw = Signal(32 * self.raw_lanes, reset_less=True)
        with m.If(takes[0]):
            m.d.sync += head_raw.eq(heads[0])
        with m.If(u_go):
            m.d.sync += [u_wi.eq(wi0 + 1), u_rem.eq(Mux(rem0 > per_word, rem0 - per_word, 0)),
                     u_busy.eq(~last0)]

        u1_valid, u1_last = Signal(), Signal()   # U0, combinational
        u1_wi = Signal.like(in_wi)
        u1_cnt = Signal(range(L + 1))
        u1_row = Signal(row_layout)
        # U0 pops the head registers.
        m.d.comb += [u1_valid.eq(u_go), u1_wi.eq(wi0),
                     u1_cnt.eq(Mux(rem0 < per_word, rem0, per_word)), u1_last.eq(last0),
                     u1_row.eq(row_now)]

        # --- U0 (continued): codes of sample B -------------------------------------------------
        u2_valid, u2_last = Signal(), Signal()
        u2_row = Signal(row_layout)
        m.d.sync += [u2_valid.eq(u1_valid), u2_last.eq(u1_last),
                     u2_row.eq(u1_row)]
        c_g = replicas("c", signed(32), u1_row.c)
        u2_wi_g = replicas("u2_wi", len(in_wi), u1_wi)
        u1_lane_ok = Signal(L)
        m.d.comb += u1_lane_ok.eq(lane_mask(u1_cnt))
        u2_uni, u2_raw, u2_ok = [], [], []
        for j in range(L):
            g = j // _GROUP
            k, nk = head_codes[j]
            ok = Signal(name=f"u2_ok{j}", reset_less=True)
            uni = Signal(VALUE_SHAPE, name=f"u2_uni{j}", reset_less=True)
            m.d.sync += [ok.eq(u1_lane_ok[j]),
                         uni.eq(uniform_value(nk, half_g[g], unsigned_g[g]))]
            if tab_b[j] is not None:
                m.d.comb += tab_b[j].addr.eq(k)
            u2_ok.append(ok)
            u2_uni.append(uni)
            if j < self.raw_lanes:
                raw = Signal(signed(32), name=f"u2_raw{j}", reset_less=True)
                m.d.sync += raw.eq(head_raw[32 * j:32 * (j + 1)])
                u2_raw.append(raw)

        # --- U1: delta = round(c * vB / 2**(6 + f)); read the working model ----------------------
        # the stage before the one feeding U2 issues the working-model read (U0 itself, from its
        # word index, without product stages)
        x_valid = self._pipe(m, u2_valid, self.mul_stages, "x_valid")
        x_last = self._pipe(m, u2_last, self.mul_stages, "x_last")
        x_row = self._pipe(m, u2_row, self.mul_stages, "x_row")
        u3_valid, u3_last = Signal(), Signal()
        u3_row = Signal(row_layout)
        m.d.sync += [u3_valid.eq(x_valid), u3_last.eq(x_last),
                     u3_row.eq(x_row)]
        # the banks' addresses and write strobes, one copy per group of lanes
        if self.mul_stages:
            rd_wi_g = [self._pipe(m, wi, self.mul_stages - 1, f"rd_wi_replica{g}")
                       for g, wi in enumerate(u2_wi_g)]
            x_wi_g = [self._pipe(m, wi, 1, f"x_wi_replica{g}") for g, wi in enumerate(rd_wi_g)]
        else:
            rd_wi_g, x_wi_g = [u1_wi for _ in groups], u2_wi_g
        wr_layout = data.StructLayout({"wi": len(in_wi), "wbank": 1, "last_of_batch": 1})
        u3_wr_g = replicas("u3_wr", wr_layout)
        for wr, wi in zip(u3_wr_g, x_wi_g):
            m.d.sync += [wr.wi.eq(wi), wr.wbank.eq(x_row.wbank),
                         wr.last_of_batch.eq(x_row.last_of_batch)]
        deltas, u3_ok = [], []
        for j in range(L):
            g = j // _GROUP
            c = c_g[g]
            vb = Signal(VALUE_SHAPE, name=f"vb{j}")
            value = u2_uni[j]
            if tab_b[j] is not None:
                value = Mux(table_g[g], tab_b[j].data, u2_uni[j])
            m.d.comb += vb.eq(value)
            shift = _DELTA_SHIFT + VALUE_FRAC
            d = Signal(signed(30), name=f"delta{j}", reset_less=True)
            dsp = j < self.dsp_lanes
            if j < self.raw_lanes:
                rshift = _DELTA_SHIFT + RAW_FRAC
                operand = Mux(raw_g[g], u2_raw[j], vb) if dsp else u2_raw[j]
                full = self._raw_product(m, c, operand, f"rawupd{j}", dsp)
                code = full if dsp else self._product(m, c, vb, f"updpart{j}", dsp)
                raw_d = (full + (1 << (rshift - 1))) >> rshift
                code_d = (code + (1 << (shift - 1))) >> shift
                m.d.sync += d.eq(Mux(raw_g[g], raw_d, code_d))
            else:
                code = self._product(m, c, vb, f"updpart{j}", dsp, offset=1 << (shift - 1))
                m.d.sync += d.eq(code >> shift)
            ok = Signal(name=f"u3_ok{j}")
            m.d.sync += ok.eq(self._pipe(m, u2_ok[j] & u2_valid, self.mul_stages, f"x_ok{j}"))
            deltas.append(d)
            u3_ok.append(ok)

        # --- U2: w = sat32(w - delta), written back a cycle later (working model, snapshot) ---
        # The working model's word was read two cycles before (transparent for the write port)
        # into a register, so it misses the two writes behind it: the one in flight now and the
        # one before; their values are forwarded from the lane's own registers (whether a lane
        # writes a word index is the same for every row, so a forwarded value is right whenever
        # it is written). No block RAM sits in the loop that updates a word every cycle.
        w4_valid = Signal()
        m.d.sync += w4_valid.eq(u3_valid)
        w4_wr_g = replicas("w4_wr", wr_layout)
        fwd_g = replicas("fwd", data.StructLayout({"last": 1, "before": 1}))
        for g in groups:
            m.d.sync += [w4_wr_g[g].eq(u3_wr_g[g]),
                         fwd_g[g].last.eq(u3_valid & (u3_wr_g[g].wi == x_wi_g[g])),
                         fwd_g[g].before.eq(w4_valid & (w4_wr_g[g].wi == x_wi_g[g]))]
        row_sat = Signal()
        lane_sat, w4_data, w4_ok, w_reads = [], [], [], []
        for j in range(L):
            fwd = fwd_g[j // _GROUP]
            w_read = Signal(signed(MODEL_BITS), name=f"w_read{j}", reset_less=True)
            last = Signal(signed(MODEL_BITS), name=f"w_last{j}", reset_less=True)
            before = w_befores[j]
            ok = Signal(name=f"w4_ok{j}")
            w_in = Mux(fwd.last, last, Mux(fwd.before, before, w_read))
            w, flag = saturate(m, w_in - deltas[j], MODEL_BITS, f"w{j}")
            m.d.sync += [w_read.eq(work_rd[j].data), last.eq(w), before.eq(last),
                         ok.eq(u3_ok[j])]
            w_reads.append(w_read)
            w4_data.append(last)
            w4_ok.append(ok)
            lane_sat.append(flag & u3_ok[j])
        # the saturation flags, registered off the write-back path and counted a cycle
        # later (the ``saturated`` output adds the row still being counted)
        u4_valid, u4_last, u4_row_flag = Signal(), Signal(), Signal()
        u4_lane_sat = Signal(L)
        m.d.sync += [u4_valid.eq(u3_valid), u4_last.eq(u3_last), u4_row_flag.eq(u3_row.sat),
                     u4_lane_sat.eq(Cat(*lane_sat))]
        any_sat = u4_lane_sat.any() | u4_row_flag
        with m.If(u4_valid):
            m.d.sync += row_sat.eq(Mux(u4_last, 0, row_sat | any_sat))
        sat_rows = Signal(32)
        sat_row_done = Signal()
        m.d.comb += [sat_row_done.eq(u4_valid & u4_last & (row_sat | any_sat)),
                     self.saturated.eq(sat_rows + sat_row_done)]
        with m.If(sat_row_done):
            m.d.sync += sat_rows.eq(sat_rows + 1)
        m.d.comb += [row_done_now.eq(u3_valid & u3_last),
                     batch_done_now.eq(row_done_now & u3_row.last_of_batch),
                     done_wbank.eq(u3_row.wbank)]

        # --- model load / read-back --------------------------------------------------------------
        ld_lane = Signal(range(L))
        ld_addr = Signal.like(in_wi)
        ld_cnt = Signal(16)
        rb_lane = Signal(range(L))
        rb_addr = Signal.like(in_wi)
        rb_cnt = Signal(16)
        loading = Signal()
        reading = Signal()
        # A read-back word takes READBACK_STAGES registers after its bank's read: the lanes'
        # w_read registers (loaded every cycle), the lane select into a 4-word FIFO, the FIFO.
        # A read is issued only when the FIFO has room for it and the words in flight, so
        # nothing in flight ever waits (the banks have no read enable: it would reach every
        # bit of their read registers across the lane array).
        m.submodules.readback = rb_fifo = fifo.SyncFIFO(width=MODEL_BITS, depth=4)
        rb_v1, rb_v2 = Signal(), Signal()
        rb_lane_d1, rb_lane_d2 = Signal(range(L)), Signal(range(L))
        rb_room = rb_fifo.level + rb_v1 + rb_v2 < rb_fifo.depth
        rb_issue = reading & rb_room & (rb_cnt != n)
        rb_finish = reading & (rb_cnt == n) & ~rb_v1 & ~rb_v2 & ~rb_fifo.r_rdy
        m.d.sync += [rb_v1.eq(rb_issue), rb_v2.eq(rb_v1),
                     rb_lane_d1.eq(rb_lane), rb_lane_d2.eq(rb_lane_d1)]
        m.d.comb += [rb_fifo.w_en.eq(rb_v2),
                     rb_fifo.w_data.eq(Array(w_reads)[rb_lane_d2]),
                     self.o_model.valid.eq(rb_fifo.r_rdy),
                     self.o_model.payload.eq(rb_fifo.r_data),
                     rb_fifo.r_en.eq(self.o_model.ready),
                     self.i_model.ready.eq(loading)]
        with m.If(rb_issue):
            m.d.sync += rb_cnt.eq(rb_cnt + 1)
            with m.If(rb_lane == per_word - 1):
                m.d.sync += [rb_lane.eq(0), rb_addr.eq(rb_addr + 1)]
            with m.Else():
                m.d.sync += rb_lane.eq(rb_lane + 1)
        ld_fire = self.i_model.valid & loading
        with m.If(ld_fire):
            m.d.sync += ld_cnt.eq(ld_cnt + 1)
            with m.If(ld_lane == per_word - 1):
                m.d.sync += [ld_lane.eq(0), ld_addr.eq(ld_addr + 1)]
            with m.Else():
                m.d.sync += ld_lane.eq(ld_lane + 1)

        # a model word is written a cycle after it is taken, from the copy of its group (the
        # run, read-back or next load that follows starts later than that)
        ld_g = replicas("ld", data.StructLayout({
            "on": 1, "fire": 1, "lane": len(ld_lane), "addr": len(ld_addr), "bank": 1,
            "data": signed(MODEL_BITS)}),
            Cat(loading, ld_fire, ld_lane, ld_addr, epoch_bank, self.i_model.payload))
        for j in range(L):
            abits = ceil_log2(self.depths[j])
            wr4, rd = w4_wr_g[j // _GROUP], s1_rd_g[j // _GROUP]
            ld = ld_g[j // _GROUP]
            m.d.sync += snap_fwd[j].eq(w4_ok[j] & wr4.last_of_batch & (wr4.wi == rd.wi) &
                                       (wr4.wbank == rd.rbank))
            with m.If(ld.on):
                m.d.comb += [
                    work_wr[j].addr.eq(ld.addr), work_wr[j].data.eq(ld.data),
                    work_wr[j].en.eq(ld.fire & (ld.lane == j)),
                    snap_wr[j].addr.eq(Cat(ld.addr[:abits], ld.bank)),
                    snap_wr[j].data.eq(ld.data),
                    snap_wr[j].en.eq(ld.fire & (ld.lane == j)),
                ]
            with m.Else():
                m.d.comb += [
                    work_wr[j].addr.eq(wr4.wi), work_wr[j].data.eq(w4_data[j]),
                    work_wr[j].en.eq(w4_ok[j]),
                    snap_wr[j].addr.eq(Cat(wr4.wi[:abits], wr4.wbank)),
                    snap_wr[j].data.eq(w4_data[j]),
                    snap_wr[j].en.eq(w4_ok[j] & wr4.last_of_batch),
                ]
            m.d.comb += work_rd[j].addr.eq(Mux(reading, rb_addr, rd_wi_g[j // _GROUP]))

        # --- counters and the run's state machine ------------------------------------------------
        # the run's end tests, registered: the epoch count changes only as an epoch ends, at
        # least a row before they are read again
        last_epoch, epochs_done = Signal(), Signal()
        m.d.sync += [last_epoch.eq(self.epochs + 1 == cfg.epochs),
                     epochs_done.eq(self.epochs == cfg.epochs)]
        with m.If(row_done_now):
            m.d.sync += self.rows.eq(self.rows + 1)
        m.d.comb += epoch_done_now.eq(row_done_now & u3_row.last_of_epoch)
        m.d.comb += [self.events.row.eq(row_done_now), self.events.epoch.eq(epoch_done_now),
                     self.events.saturated.eq(sat_row_done)]

        def reset_run():
            return [self.rows.eq(0), sat_rows.eq(0), self.epochs.eq(0), self.cycles.eq(0),
                    lr_shift.eq(0), decay_left.eq(cfg.lr_decay_epochs), outstanding.eq(0),
                    *restart_input()]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += reset_run()
                    m.next = "RUN"
                with m.Elif(self.load):
                    m.d.sync += [epoch_bank.eq(0), ld_cnt.eq(0), ld_lane.eq(0), ld_addr.eq(0)]
                    m.next = "LOAD"
                with m.Elif(self.read):
                    m.d.sync += [rb_cnt.eq(0), rb_lane.eq(0), rb_addr.eq(0)]
                    m.next = "READ"
            with m.State("LOAD"):
                m.d.comb += [loading.eq(1), self.busy.eq(1)]
                with m.If(ld_fire & (ld_cnt == n - 1)):
                    m.next = "IDLE"
            with m.State("READ"):
                m.d.comb += [reading.eq(1), self.busy.eq(1)]
                with m.If(rb_finish):
                    m.next = "IDLE"
            with m.State("RUN"):
                m.d.comb += [running.eq(1), self.busy.eq(1)]
                m.d.sync += self.cycles.eq(self.cycles + 1)
                with m.If(accept & last_word & last_of_epoch):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += self.cycles.eq(self.cycles + 1)
                with m.If(epoch_done_now):
                    m.d.sync += [self.epochs.eq(self.epochs + 1), epoch_bank.eq(done_wbank),
                                 *restart_input()]
                    decay_epoch(m, cfg.lr_decay_epochs, decay_left, count_decay_step(lr_shift))
                    with m.If(cfg.snapshots):
                        m.d.sync += [rb_cnt.eq(0), rb_lane.eq(0), rb_addr.eq(0)]
                        m.next = "SNAP"
                    with m.Elif(last_epoch):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "RUN"
            with m.State("SNAP"):
                m.d.comb += [reading.eq(1), self.busy.eq(1)]
                m.d.sync += self.cycles.eq(self.cycles + 1)
                with m.If(rb_finish):
                    with m.If(epochs_done):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "RUN"
        return m

    @property
    def capabilities(self):
        """What this build supports, for a system top to report."""
        return {"width": self.width, "n_max": self.n_max, "max_table_bits": self.max_table_bits,
                "lanes": self.lanes, "encodings": [e.name for e in Encoding],
                "raw_lanes": self.raw_lanes}
