"""The device top: the command protocol of :mod:`zipml.protocol` around the SGD pipeline.

Data flow::

    rx -> UARTReceiver -> FrameReceiver --header--> dispatcher --bytes--> FrameEncoder
                                        --payload->     |   |                   |
                                                        |   StatusBank     UARTTransmitter -> tx
                     ResidentMemory <- STORE_DATA words |
                     ResidentMemory -> RUN_EPOCHS words +--> 3-word FIFO --> SGDPipeline
                                 TRAIN_STREAM words ----+      (i_stream; i_model, i_table
                                                                from the dispatcher; o_model
                                                                to it through a 2-word FIFO)

The serial build (:class:`~zipml.hw.serial.SerialSGDPipeline`, the iCE40's) has none of the
short FIFOs: the words go straight into its trainer, the dispatcher takes its bytes straight
from the frame receiver and gives the encoder its bytes through one register. The others keep a
3-byte FIFO on each side of the dispatcher.

:class:`DeviceCore` is everything after the UART (bytes in, bytes out); :class:`Device` adds
the UART. The dispatcher follows :class:`zipml.sim.protocol_device.ProtocolDevice`, the
executable specification, byte for byte: the same checks in the same order, the same state
machine, the same replies, and the response cache for retried ``seq`` values. It handles one
frame at a time; the frame receiver buffers the next one meanwhile (or answers BUSY when it
does not fit).

How the commands map onto the pipeline:

- every pipeline run is one epoch (``config.epochs = 1``); the device counts epochs, rows,
  saturated rows and cycles across runs, and applies the learning-rate decay itself
  (``lr >> floor(epoch / lr_decay_epochs)``), so streamed and resident epochs can be mixed;
- CONFIGURE resets the pipeline (aborting a half-streamed epoch) and loads n zero words;
- LOAD_MODEL reads the whole model into a staging memory, merges the payload words at
  ``offset`` and loads the whole model back; READ_MODEL reads the whole model and forwards
  words ``offset .. offset + count - 1``;
- TRAIN_STREAM starts a run at the first word of every epoch and answers once every whole row
  it carried has been written back, so its reply is the specification's;
- RUN_EPOCHS answers at once; the device stays BUSY while runs read the resident memory at
  one word per cycle, and RESET aborts them.

Differences from the Python specification (none affects a host that, like
:class:`zipml.host.client.DeviceClient`, reads and writes the model at epoch boundaries):

- LOAD_MODEL and READ_MODEL are refused with BAD_STATE while STREAMING (mid-epoch): the
  pipeline cannot reach its model while a run waits for words;
- READ_STATUS's ``cycles`` counts the pipeline's busy cycles (streamed runs include the time
  spent waiting for words), not the words consumed;
- a LOAD_LEVELS in the middle of a streamed row changes the level values of that row's words
  already consumed only for the update, not for the dot product.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.hdl import ResetInserter
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .. import contract, protocol
from ..contract import MAX_BITS, Encoding, LevelMode, Loss
from ..protocol import (
    MAX_PAYLOAD,
    RESPONSE_HEADER_BYTES,
    RX_TIMEOUT,
    Cmd,
    ConfigureRequest,
    DeviceState,
    Header,
    IdentifyReply,
    ModelOffset,
    ReadModelRequest,
    RunEpochsRequest,
    Status,
    StatusReply,
    StoreDataHeader,
    StoreDataReply,
    TrainStreamReply,
    struct_bytes,
)
from .dsp import down_counter
from .framing import FrameByte, FrameEncoder, FrameReceiver
from .lanes import all_formats, format_constants
from .ram import unchecked_read_port
from .resident import ResidentMemory
from .scalar import decay_epoch
from .serial import make_trainer
from .status import CONSTANTS_AT, COUNTERS, StatusBank
from .uart import DEFAULT_BAUD, UARTReceiver, UARTTransmitter

__all__ = ["frame_timeout_cycles", "DeviceCore", "Device"]

#: Request payload prefixes parsed before a command is checked.
_PREFIX = {Cmd.CONFIGURE: ConfigureRequest, Cmd.LOAD_MODEL: ModelOffset,
           Cmd.READ_MODEL: ReadModelRequest, Cmd.STORE_DATA: StoreDataHeader,
           Cmd.RUN_EPOCHS: RunEpochsRequest}
_PREFIX_BYTES = max(struct_bytes(s) for s in _PREFIX.values())
_MW = protocol.MODEL_WORD_BYTES
_LE = protocol.LEVEL_ENTRY_BYTES


def frame_timeout_cycles(rx_timeout, clk_freq):
    """Cycles of input silence after which the frame receiver drops a partial frame."""
    return max(2, round(rx_timeout * clk_freq))


#: The replies with a payload a device sends: ``None`` for none, the model's words (READ_MODEL),
#: and the replies out of its status bank.
_MODEL = "model"
_REPLIES = (None, _MODEL, IdentifyReply, StatusReply, TrainStreamReply, StoreDataReply)


def _reply_window(layout):
    """Where a reply ``layout`` lies in the device's status bank: ``(first byte, bytes)``.
    IDENTIFY's follows the status snapshot; TRAIN_STREAM's and STORE_DATA's are windows of the
    snapshot (their fields are where :class:`~zipml.protocol.StatusReply` holds them)."""
    if layout is IdentifyReply:
        return CONSTANTS_AT, struct_bytes(IdentifyReply)
    status = data.Layout.cast(StatusReply)
    fields = list(data.Layout.cast(layout))
    start = status[fields[0][0]].offset
    for name, field in fields:
        if name not in status.members or status[name].offset != start + field.offset or \
                status[name].width != field.width:
            raise ValueError(f"{layout.__name__}.{name} is not where StatusReply holds it")
    return start // 8, struct_bytes(layout)


class DeviceCore(wiring.Component):
    """The protocol device on byte streams: frame receiver, dispatcher, pipeline, resident
    memory, frame transmitter.

    Parameters
    ----------
    width : int
        W, bits per stream word.
    n_max : int
        Largest ``n_features``.
    memory_words : int
        Resident memory for STORE_DATA, in W-bit words.
    clk_freq : float
        Core clock, Hz (frame timeout; reported by IDENTIFY).
    baud : int
        Reported by IDENTIFY (0 for links other than a UART).
    max_payload : int
        Largest request payload accepted (the receive buffer holds the next power of two).
    batch_max : int
        Largest mini-batch accepted by CONFIGURE.
    tables : bool
        Build level tables (``LevelMode.TABLE``).
    lanes : int
        Fields processed per cycle (default W): a word with more goes through the pipeline
        in parts (:func:`zipml.contract.pipeline_lanes`); CONFIGURE refuses what a build
        cannot take (:func:`zipml.contract.format_fits`: more fields than lanes at W = 32).
    dsp : bool or int
        Lane products on hard multipliers, every lane's or the first k lanes'
        (:class:`~zipml.hw.pipeline.SGDPipeline`).
    mul_stages : int
        Registers in the lane products (:class:`~zipml.hw.pipeline.SGDPipeline`).
    serial : bool
        Train with the lane-serial :class:`~zipml.hw.serial.SerialSGDPipeline` (one field per
        cycle, every format; ``lanes``, ``dsp`` and ``mul_stages`` do not apply).
    spram : bool
        Build on the iCE40UP5K's hard blocks: the resident data in its SPRAM
        (:class:`~zipml.hw.resident.ResidentMemory`; ``memory_words`` a multiple of 16,384),
        the rows of an epoch counted in SB_MAC16 accumulators (:mod:`zipml.hw.dsp`).
    build_id : int
        Reported by IDENTIFY.
    rx_timeout : float
        Seconds of input silence after which a partial frame is dropped.

    Members
    -------
    i_stream : In(stream.Signature(8))
        Request bytes (always ready).
    o_stream : Out(stream.Signature(8))
        Response bytes.
    """

    def __init__(self, width=128, n_max=1024, memory_words=4096, *, clk_freq, baud=0,
                 max_payload=1024, batch_max=256, tables=True, build_id=0,
                 rx_timeout=RX_TIMEOUT, lanes=None, dsp=False, mul_stages=1, serial=False,
                 spram=False):
        if width not in contract.WORD_WIDTHS:
            raise ValueError(f"width must be one of {contract.WORD_WIDTHS}, not {width}")
        if not 1 <= n_max <= 0xFFFF:
            raise ValueError(f"n_max must be within 1..65535, not {n_max}")
        if not 1 <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be within 1..{MAX_PAYLOAD}")
        if not 1 <= batch_max <= 0xFFFF:
            raise ValueError(f"batch_max must be within 1..65535, not {batch_max}")
        if memory_words < 1:
            raise ValueError("memory_words must be at least 1")
        self.width, self.n_max, self.memory_words = width, n_max, memory_words
        self.clk_freq, self.baud = clk_freq, baud
        self.max_payload, self.batch_max = max_payload, batch_max
        self.tables, self.build_id = tables, build_id
        self.lanes = width if lanes is None or serial else lanes
        self.dsp, self.mul_stages, self.serial = dsp, mul_stages, serial
        self.spram = spram
        if not width // 32 <= self.lanes <= width:
            raise ValueError(f"lanes must be within {width // 32}..{width}, not {lanes}")
        self.formats = all_formats(width, self.lanes)
        self.rx_timeout = rx_timeout
        self.timeout_cycles = frame_timeout_cycles(rx_timeout, clk_freq)
        self.encodings = tuple(Encoding)
        self.level_modes = tuple(LevelMode) if tables else (
            LevelMode.UNIFORM_SIGNED, LevelMode.UNIFORM_UNSIGNED)
        self.losses = tuple(Loss)
        self.max_bits = MAX_BITS
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            "o_stream": Out(stream.Signature(8)),
        })

    @property
    def capabilities(self):
        """Keyword arguments that make :class:`zipml.sim.protocol_device.ProtocolDevice` (and
        its :class:`~zipml.sim.golden.GoldenDevice`) this device."""
        return dict(width=self.width, n_max=self.n_max, batch_max=self.batch_max,
                    memory_words=self.memory_words, max_payload=self.max_payload,
                    encodings=self.encodings, level_modes=self.level_modes,
                    losses=self.losses, max_bits=self.max_bits, lanes=self.lanes,
                    clock_hz=int(self.clk_freq), baud=self.baud, build_id=self.build_id)

    def elaborate(self, platform):
        m = Module()
        W, wb = self.width, self.width // 8

        # --- framing ------------------------------------------------------------------------------
        m.submodules.receiver = rx = FrameReceiver(max_payload=self.max_payload,
                                                   timeout=self.timeout_cycles)
        m.submodules.encoder = encoder = FrameEncoder()
        wiring.connect(m, wiring.flipped(self.i_stream), rx.i_stream)
        wiring.connect(m, encoder.o_stream, wiring.flipped(self.o_stream))
        if self.serial:
            # the small build: the dispatcher takes the receive buffer's bytes
            # directly, and gives the encoder its bytes through one register (a byte every
            # other cycle: the encoder's byte-dependent ready then starts at a flip-flop)
            m.submodules.tx_fifo = txf = fifo.SyncFIFO(width=FrameByte.size, depth=1)
            rx_payload, tx_bytes = rx.o_payload, txf.w_stream
        else:
            # short FIFOs keep each handshake in a cycle of its own: the receive buffer's
            # block RAM output apart from the dispatcher's checks, and block RAM data apart
            # from the encoder's byte-dependent ready
            m.submodules.rx_fifo = rxf = fifo.SyncFIFOBuffered(width=8, depth=3)
            m.submodules.tx_fifo = txf = fifo.SyncFIFOBuffered(width=FrameByte.size, depth=3)
            wiring.connect(m, rx.o_payload, rxf.w_stream)
            rx_payload, tx_bytes = rxf.r_stream, txf.w_stream
        m.d.comb += [encoder.i_stream.valid.eq(txf.r_stream.valid),
                     encoder.i_stream.payload.eq(txf.r_stream.payload),
                     txf.r_stream.ready.eq(encoder.i_stream.ready)]
        tx_byte = Signal(FrameByte)                # the response's next byte
        m.d.comb += tx_bytes.payload.eq(tx_byte)

        # --- training datapath --------------------------------------------------------------------
        pipe_rst = Signal()                        # the dispatcher's request (RESET, CONFIGURE)
        # ... applied a cycle later from registers, one per part of the datapath: the reset
        # reaches every control register there, so each part's fan-out starts at a flip-flop of
        # its own (the build keeps ``*_replica*`` registers apart; the dispatcher's next use of
        # the pipeline is cycles later)
        datapath_rst = {part: Signal(name=f"{part}_rst_replica")
                        for part in ("pipeline", "resident", "fifos")}
        m.d.sync += [rst.eq(pipe_rst) for rst in datapath_rst.values()]
        pipe = make_trainer(W, self.n_max, max_table_bits=MAX_BITS if self.tables else 1,
                            serial=self.serial, lanes=self.lanes, dsp=self.dsp,
                            mul_stages=self.mul_stages, one_epoch=True,
                            mac_counters=self.spram)
        # (the W-lane build registers the memory's read data: its word FIFO is a LUT RAM
        # anywhere on the part; the serial trainer takes the data at its own register)
        mem = ResidentMemory(W, self.memory_words, spram=self.spram,
                             output_register=not self.serial)
        m.submodules.pipeline = ResetInserter(datapath_rst["pipeline"])(pipe)
        m.submodules.resident = ResetInserter(datapath_rst["resident"])(mem)
        # the pipeline takes its words from a short FIFO: its valid and the source's ready are
        # registers, so the dispatcher's logic and the pipeline's accept logic stay separate
        # paths (three words: one per cycle through it); the serial trainer's ready is a
        # function of a few of its registers, and it takes the words as they come
        if self.serial:
            words_in = pipe.i_stream
        else:
            words = fifo.SyncFIFOBuffered(width=W, depth=3)
            m.submodules.words = ResetInserter(datapath_rst["fifos"])(words)
            wiring.connect(m, words.r_stream, pipe.i_stream)
            words_in = words.w_stream
        # ... and gives its model words to a short FIFO: the dispatcher's ready is then not a
        # path into the pipeline's read-back (the model banks' read enables across the lanes)
        # (the serial trainer's read-back is one block RAM port: it needs none)
        if self.serial:
            model_out = pipe.o_model
        else:
            model_words = fifo.SyncFIFOBuffered(width=32, depth=2)
            m.submodules.model_words = ResetInserter(datapath_rst["fifos"])(model_words)
            wiring.connect(m, pipe.o_model, model_words.w_stream)
            model_out = model_words.r_stream
        m.submodules.staging = staging = memory.Memory(shape=32, depth=self.n_max, init=[])
        # (both are read only in states that do not write them: LM_LOAD, LL_COPY)
        st_wr = staging.write_port()
        st_rd = unchecked_read_port(m, staging, st_wr, platform, "st_rd")
        m.submodules.table_buf = table_buf = memory.Memory(
            shape=contract.TABLE_BITS, depth=1 << MAX_BITS, init=[])
        tb_wr = table_buf.write_port()
        tb_rd = unchecked_read_port(m, table_buf, tb_wr, platform, "tb_rd")

        # --- device state -------------------------------------------------------------------------
        configured = Signal()
        creq = Signal(ConfigureRequest)            # the configuration in force
        row_words_max = max(contract.row_words(W, f, self.n_max) for f in self.formats)
        r_bits = row_words_max.bit_length()
        row_words = Signal(r_bits)                 # R
        # rows_per_epoch * R, as far as RUN_EPOCHS' check needs it: an epoch of 2**mw rows or
        # more is more than the resident memory holds (epoch_big)
        mw = self.memory_words.bit_length()
        epoch_words = Signal(mw + r_bits)
        epoch_big = Signal()
        table_log2 = Signal(4)                     # 0: no table loaded
        stored_words = Signal(range(self.memory_words + 1))
        epochs_left = Signal(32)
        epochs_pending = Signal()                  # epochs_left != 0, kept as a register
        last_error = Signal(Status)
        last_error_cmd = Signal(8)

        run_active = Signal()                      # a pipeline run (one epoch) is under way
        resident_run = Signal()                    # ... fed from the resident memory
        rows_pending = Signal(16)                  # rows streamed, not yet written back
        lr_now = Signal(contract.LR_BITS)          # the rate of the current epoch
        decay_left = Signal(16)                    # epochs to the next decay step

        mid_epoch = Signal()                       # a streamed epoch has words in
        rows_to_go_load, rows_to_go_dec = Signal(), Signal()
        rows_to_go = down_counter(m, "rows_to_go", load=rows_to_go_load,   # rows of it from
                                  value=creq.rows_per_epoch, dec=rows_to_go_dec,   # the current
                                  hard=self.spram)                                 # one on
        row_pos = Signal(r_bits)
        started = Signal()                         # the current streamed epoch has its run

        # the counters since CONFIGURE, from the pipeline's strobes (its own counters restart
        # every run; a pipeline being reset has none), kept with READ_STATUS's snapshots and
        # IDENTIFY's reply in block RAM
        m.submodules.status = status_bank = StatusBank(
            constants=protocol.identify_reply(**self.capabilities))
        # (registered, as is the counters' clear: both reach the bank a cycle late, so the
        # events of a reset's cycle still go uncounted)
        ev = Signal.like(pipe.events)
        ev_cycle = Signal()
        m.d.sync += [ev.eq(Mux(datapath_rst["pipeline"] | pipe_rst, 0, pipe.events)),
                     ev_cycle.eq(run_active & pipe.busy & ~pipe_rst)]
        events = {"rows": ev.row, "epochs": ev.epoch, "saturated_rows": ev.saturated,
                  "cycles": ev_cycle}
        m.d.comb += status_bank.inc.eq(Cat(events[name] for name in COUNTERS))
        row_pushed = Signal()                      # TRAIN_STREAM pushed a row's last word
        with m.If(row_pushed != (ev.row & ~resident_run)):
            m.d.sync += rows_pending.eq(Mux(row_pushed, rows_pending + 1, rows_pending - 1))
        with m.If(ev.epoch):
            # (halving the rate itself: after k steps it is lr >> k, with no barrel shifter)
            decay_epoch(m, creq.lr_decay_epochs, decay_left, [lr_now.eq(lr_now >> 1)])

        state = Signal(DeviceState)
        with m.If(epochs_pending):
            m.d.comb += state.eq(DeviceState.BUSY)
        with m.Elif(~configured):
            m.d.comb += state.eq(DeviceState.UNCONFIGURED)
        with m.Elif(mid_epoch):
            m.d.comb += state.eq(DeviceState.STREAMING)
        with m.Else():
            m.d.comb += state.eq(DeviceState.IDLE)

        # --- constants of the configuration, registered (a cycle after CONFIGURE writes creq):
        # features per word and in a row's last word, the last feature's index
        n_last = Signal(16)
        m.d.sync += n_last.eq(creq.n_features - 1)
        fc = format_constants(m, "format_constants", creq.encoding, creq.bits, self.formats, {
            "per_word": (range(W + 1), lambda f: contract.lanes_in_word(W, f)),
            "per_last": (range(W + 1), lambda f: contract.lanes_in_last_word(W, f)),
        })
        # ... and once more through registers (CONFIGURE's loop compares with them: block RAM
        # outputs are slow on ECP5, 5.6 ns clock-to-out)
        per_word, per_last = Signal.like(fc.per_word), Signal.like(fc.per_last)
        m.d.sync += [per_word.eq(fc.per_word), per_last.eq(fc.per_last)]

        # --- the pipeline's configuration ---------------------------------------------------------
        pc = pipe.config
        m.d.comb += [
            pc.n_features.eq(creq.n_features), pc.encoding.eq(creq.encoding),
            pc.bits.eq(creq.bits), pc.levels.eq(creq.levels), pc.loss.eq(creq.loss),
            pc.lr.eq(lr_now), pc.lr_decay_epochs.eq(0), pc.batch.eq(creq.batch),
            pc.delay.eq(creq.delay), pc.rows_per_epoch.eq(creq.rows_per_epoch),
            pc.epochs.eq(1), pc.snapshots.eq(0),
        ]
        fmt_table = (creq.levels == LevelMode.TABLE) & (creq.encoding != Encoding.RAW)
        table_ok = ~fmt_table | (table_log2 == creq.bits)

        # --- the pipeline's input: streamed words or the resident memory --------------------------
        ts_valid = Signal()
        ts_word = Signal(W)
        m.d.comb += [
            words_in.valid.eq(Mux(resident_run, mem.o_stream.valid, ts_valid)),
            words_in.payload.eq(Mux(resident_run, mem.o_stream.payload, ts_word)),
            mem.o_stream.ready.eq(resident_run & words_in.ready),
            mem.length.eq(stored_words),
        ]
        ts_fire = ts_valid & ~resident_run & words_in.ready
        # TRAIN_STREAM's position tests, registered: their inputs change only when a word is
        # pushed or a run starts (which clears ts_new_epoch itself), and a push follows at least
        # W/8 cycles of taking bytes
        ts_new_epoch, ts_row_end, ts_epoch_end = Signal(), Signal(), Signal()
        m.d.sync += [ts_new_epoch.eq(~mid_epoch & ~started),
                     ts_row_end.eq(row_pos == row_words - 1),
                     ts_epoch_end.eq((row_pos == row_words - 1) & (rows_to_go == 1))]

        # --- end of a run, and resident runs ------------------------------------------------------
        # A run asked for starts a cycle later, from registers (the pipeline's start reaches
        # every register an epoch restarts: it begins at a flip-flop), the resident memory's
        # read-out with it. (A run's end waits for a snapshot of the status: epochs_left holds
        # still for it.)
        start_run, start_resident = Signal(), Signal()
        m.d.sync += [pipe.start.eq(start_run & ~pipe_rst),
                     mem.start.eq(start_resident & ~pipe_rst)]
        run_end = run_active & ~pipe.start & ~pipe.busy & ~status_bank.busy
        with m.If(run_end):
            m.d.sync += run_active.eq(0)
            with m.If(resident_run & epochs_pending):
                m.d.sync += [epochs_left.eq(epochs_left - 1), epochs_pending.eq(epochs_left != 1)]
        with m.Elif(epochs_pending & ~run_active & ~pipe.busy):
            m.d.comb += [start_run.eq(1), start_resident.eq(1)]
            m.d.sync += [run_active.eq(1), resident_run.eq(1)]

        # --- dispatcher ---------------------------------------------------------------------------
        hdr = Signal(Header)                       # the request being served
        cmd = hdr.cmd.as_value()
        length = hdr.length
        remaining = Signal(16)                     # payload bytes still to take
        payload_left = Signal()                    # remaining != 0, kept as a register
        take = rx_payload.valid & rx_payload.ready
        byte = rx_payload.payload
        with m.If(take):
            m.d.sync += [remaining.eq(remaining - 1), payload_left.eq(remaining != 1)]

        # the payload's fixed-size prefix: written only by HEAD, so it stays until the next
        # executed request (a retried READ_MODEL replays its window from it); a request shorter
        # than its prefix leaves older bytes behind, but its length check refuses it first
        head = Signal(_PREFIX_BYTES * 8)
        head_idx = Signal(range(_PREFIX_BYTES))
        # HEAD takes bytes while head_more: up to the prefix's last byte (head_last) and the
        # payload's, min(length, prefix) in all; kept as a register, so that the header FIFO's
        # block RAM output meets no length compare on its way into it
        head_more = Signal()
        head_last = Signal(range(_PREFIX_BYTES))
        has_prefix = Signal()
        prefix_last = Signal(range(_PREFIX_BYTES))
        with m.Switch(rx.o_header.payload.cmd.as_value()):
            for c, layout in _PREFIX.items():
                with m.Case(c.value):
                    m.d.comb += [has_prefix.eq(1), prefix_last.eq(struct_bytes(layout) - 1)]
        req_cfg = ConfigureRequest(head[:struct_bytes(ConfigureRequest) * 8])
        req_off = ModelOffset(head[:struct_bytes(ModelOffset) * 8])
        req_read = ReadModelRequest(head[:struct_bytes(ReadModelRequest) * 8])
        req_store = StoreDataHeader(head[:struct_bytes(StoreDataHeader) * 8])
        req_run = RunEpochsRequest(head[:struct_bytes(RunEpochsRequest) * 8])

        # The response cache: the last executed request's cmd/seq, status and reply (one of
        # _REPLIES: its length and bytes follow from it and from the request prefix, which
        # stays as long as the cache does)
        cache_valid = Signal()
        cache = Signal(Header)                     # (its length is reply_length)
        cache_reply = Signal(range(len(_REPLIES)))
        reply_length = Signal(16)
        # a reply other than the model's is a window of the status bank: READ_STATUS's,
        # TRAIN_STREAM's and STORE_DATA's of a snapshot taken once per executed request (the
        # cache keeps it), or IDENTIFY's
        win_first = Signal(range(status_bank.depth + 1))
        win_end = Signal(range(status_bank.depth + 1))
        with m.Switch(cache_reply):
            for code, reply in enumerate(_REPLIES):
                with m.Case(code):
                    if reply is _MODEL:
                        m.d.comb += reply_length.eq(req_read.count * _MW)
                    elif reply is not None:
                        first, count = _reply_window(reply)
                        m.d.comb += [reply_length.eq(count), win_first.eq(first),
                                     win_end.eq(first + count)]
        verdict = Signal()                         # answering a frame the receiver rejected
        hdr_byte = Signal(range(RESPONSE_HEADER_BYTES))   # the response header's byte to send

        def respond(status, reply=None):
            """Cache the response to the request being served and go send it (a snapshot
            first, for a status window)."""
            m.d.sync += [cache.status.eq(status), cache_reply.eq(_REPLIES.index(reply))]
            if reply not in (None, _MODEL, IdentifyReply):
                m.d.comb += status_bank.snap.eq(1)
            m.next = "RESP_HDR"

        def refuse(status):
            m.d.sync += [last_error.eq(status), last_error_cmd.eq(cmd)]
            m.d.sync += [cache.status.eq(status), cache_reply.eq(_REPLIES.index(None))]
            m.next = "DRAIN"

        # Word assembly: payload bytes, least significant first, shifted in at the top (and,
        # for READ_MODEL, a model word's bytes shifted out at the bottom).
        asm = Signal(W)
        asm_next = Cat(asm[8:], byte)
        bcnt = Signal(range(max(wb, 4)))
        small_next = asm_next[-32:]                 # 4-byte model words, 2-byte table entries
        # a word index: into the model, a level table or the resident memory (the checks keep
        # every value in range)
        idx = Signal(range(max(self.memory_words, self.n_max, 1 << MAX_BITS) + 1))
        idx_end = Signal.like(idx)
        lvalid = Signal()
        tb_bad = Signal()
        cp_valid = Signal()
        sd_write = Signal()
        cp_index = Signal(MAX_BITS)
        cfg_rem = Signal(17)

        # READ_STATUS's fields besides the counters
        fields = status_bank.fields
        m.d.comb += [
            fields.state.eq(state), fields.last_error.eq(last_error),
            fields.last_error_cmd.eq(last_error_cmd), fields.flags.eq(table_log2 != 0),
            fields.stored_words.eq(stored_words), fields.epochs_left.eq(epochs_left),
        ]

        # The checks, in the specification's order (every one before any change).
        status = Signal(Status)
        verdict_status = Signal(Status)
        st = state
        in_any = Cat(cmd == c.value for c in (Cmd.IDENTIFY, Cmd.READ_STATUS, Cmd.RESET)).any()
        not_busy = Cat(cmd == c.value
                       for c in (Cmd.CONFIGURE, Cmd.LOAD_LEVELS, Cmd.STORE_DATA)).any()
        streamable = cmd == Cmd.TRAIN_STREAM.value
        model_cmd = (cmd == Cmd.LOAD_MODEL.value) | (cmd == Cmd.READ_MODEL.value)
        allowed = (in_any | (not_busy & (st != DeviceState.BUSY)) |
                   (streamable & ((st == DeviceState.IDLE) | (st == DeviceState.STREAMING))) |
                   ((model_cmd | (cmd == Cmd.RUN_EPOCHS.value)) & (st == DeviceState.IDLE)))
        known = Cat(cmd == c.value for c in Cmd).any()
        n = creq.n_features
        lm_count = (length - ModelOffset.as_shape().size // 8) >> 2
        sd_count = (length - struct_bytes(StoreDataHeader)) >> ceil_log2(wb)
        # STORE_DATA's offset, tested against stored_words first: past that test it is as
        # narrow as stored_words
        sd_offset = req_store.offset[:len(stored_words)]
        sd_beyond = req_store.offset[len(stored_words):].any() | (sd_offset > stored_words)
        ll_n = length >> 1
        c = req_cfg
        fmt_fits = Signal()                # the requested format has at most `lanes` fields
        with m.If(c.encoding == Encoding.RAW):
            m.d.comb += fmt_fits.eq(1)
        with m.Else():
            with m.Switch(Cat(c.bits[:4], c.encoding[:2])):
                for f in self.formats[:-1]:
                    with m.Case(f.bits | (int(f.encoding) << 4)):
                        m.d.comb += fmt_fits.eq(1)
        cfg_bad = (~fmt_fits | (c.n_features == 0) | (c.rows_per_epoch == 0) | (c.lr == 0) |
                   (c.encoding > int(max(self.encodings))) | (c.loss > int(max(self.losses))) |
                   (c.levels > int(max(self.level_modes))) |
                   (c.bits == 0) | (c.bits > self.max_bits) |
                   (c.batch == 0) | (c.batch > self.batch_max) | (c.delay > 1) |
                   ((c.levels == LevelMode.TABLE) & (c.bits < 2) &
                    (c.encoding != Encoding.RAW)))
        # the checks' arithmetic (sums and compares of the prefix against the device state)
        # settles into registers while HEAD's last cycle and SETTLE pass (the prefix is whole
        # from then on): the ranges' ends are summed in the first cycle, compared in the second
        def settled(value, name):
            reg = Signal(value.shape(), name=name)
            m.d.sync += reg.eq(value)
            return reg

        lm_bytes, sd_bytes = struct_bytes(ModelOffset), struct_bytes(StoreDataHeader)
        lm_end = settled(req_off.offset + lm_count, "lm_end")
        rm_end = settled(req_read.offset + req_read.count, "rm_end")
        sd_end = settled(sd_offset + sd_count, "sd_end")
        too_many = settled(c.n_features > self.n_max, "too_many")
        cfg_refused = settled(cfg_bad, "cfg_refused")
        lm_length_bad = settled((length < lm_bytes) | (length - lm_bytes)[:2].any(),
                                "lm_length_bad")
        lm_beyond = settled(lm_end > n, "lm_beyond")
        lm_empty = settled(lm_count == 0, "lm_empty")
        rm_too_large = settled(req_read.count * _MW > self.max_payload, "rm_too_large")
        rm_beyond = settled(rm_end > n, "rm_beyond")
        sd_length_bad = settled((length < sd_bytes) |
                                (length - sd_bytes)[:ceil_log2(wb)].any(), "sd_length_bad")
        sd_refused = settled(sd_beyond, "sd_refused")
        sd_too_large = settled(sd_end > self.memory_words, "sd_too_large")
        no_epochs = settled(req_run.epochs == 0, "no_epochs")
        not_an_epoch = settled(epoch_big | (stored_words != epoch_words), "not_an_epoch")
        with m.If(~known):
            m.d.comb += status.eq(Status.UNKNOWN_CMD)
        with m.Elif(~allowed):
            m.d.comb += status.eq(Status.BAD_STATE)
        with m.Else():
            with m.Switch(cmd):
                with m.Case(Cmd.IDENTIFY.value, Cmd.READ_STATUS.value, Cmd.RESET.value):
                    with m.If(length != 0):
                        m.d.comb += status.eq(Status.BAD_LENGTH)
                with m.Case(Cmd.CONFIGURE.value):
                    with m.If(length != struct_bytes(ConfigureRequest)):
                        m.d.comb += status.eq(Status.BAD_LENGTH)
                    with m.Elif(too_many):
                        m.d.comb += status.eq(Status.TOO_LARGE)
                    with m.Elif(cfg_refused):
                        m.d.comb += status.eq(Status.BAD_CONFIG)
                with m.Case(Cmd.LOAD_MODEL.value):
                    with m.If(lm_length_bad):
                        m.d.comb += status.eq(Status.BAD_LENGTH)
                    with m.Elif(lm_beyond):
                        m.d.comb += status.eq(Status.BAD_ARGUMENT)
                with m.Case(Cmd.READ_MODEL.value):
                    with m.If(length != struct_bytes(ReadModelRequest)):
                        m.d.comb += status.eq(Status.BAD_LENGTH)
                    with m.Elif(rm_too_large):
                        m.d.comb += status.eq(Status.TOO_LARGE)
                    with m.Elif(rm_beyond):
                        m.d.comb += status.eq(Status.BAD_ARGUMENT)
                with m.Case(Cmd.LOAD_LEVELS.value):
                    if not self.tables:
                        m.d.comb += status.eq(Status.BAD_CONFIG)
                    else:
                        with m.If(length[0]):
                            m.d.comb += status.eq(Status.BAD_LENGTH)
                        # 4, 8, .. 2**max_bits entries
                        with m.Elif(~Cat(ll_n == (1 << k)
                                         for k in range(2, self.max_bits + 1)).any()):
                            m.d.comb += status.eq(Status.BAD_ARGUMENT)
                with m.Case(Cmd.TRAIN_STREAM.value):
                    with m.If(length[:ceil_log2(wb)].any()):
                        m.d.comb += status.eq(Status.BAD_LENGTH)
                    with m.Elif(~table_ok):
                        m.d.comb += status.eq(Status.BAD_STATE)
                with m.Case(Cmd.STORE_DATA.value):
                    with m.If(sd_length_bad):
                        m.d.comb += status.eq(Status.BAD_LENGTH)
                    with m.Elif(sd_refused):
                        m.d.comb += status.eq(Status.BAD_ARGUMENT)
                    with m.Elif(sd_too_large):
                        m.d.comb += status.eq(Status.TOO_LARGE)
                with m.Case(Cmd.RUN_EPOCHS.value):
                    with m.If(length != struct_bytes(RunEpochsRequest)):
                        m.d.comb += status.eq(Status.BAD_LENGTH)
                    with m.Elif(no_epochs):
                        m.d.comb += status.eq(Status.BAD_ARGUMENT)
                    with m.Elif(~table_ok):
                        m.d.comb += status.eq(Status.BAD_STATE)
                    with m.Elif(not_an_epoch):
                        m.d.comb += status.eq(Status.BAD_STATE)

        # the checks bound CONFIGURE's small fields: the configuration keeps the bits they
        # leave (the rest stay 0)
        kept_fields = [getattr(creq, name).eq(getattr(req_cfg, name)[:int(limit).bit_length()])
                       for name, limit in (("n_features", self.n_max),
                                           ("batch", self.batch_max),
                                           ("encoding", max(self.encodings)),
                                           ("bits", self.max_bits),
                                           ("levels", max(self.level_modes)),
                                           ("loss", max(self.losses)), ("delay", 1))]

        # RESET's and CONFIGURE's common part: abort any run, clear the counters (one
        # condition for both: two would put two selects in front of every bit)
        power_up = Signal()
        with m.If(power_up):
            m.d.comb += pipe_rst.eq(1)

        # a response byte's `last`: a sum of products over the states that send, each state's
        # test computed outside the state machine (inside, they chain one select per state)
        header_end = hdr_byte == RESPONSE_HEADER_BYTES - 1
        no_payload = verdict | (reply_length == 0)

        # READ_MODEL's words: idx is within the window, past the model's last word
        rm_in, rm_over = Signal(), Signal()

        def in_window(i):
            return (i >= req_read.offset) & (i < rm_end)

        with m.FSM(name="dispatch") as dispatch:
            with m.State("IDLE"):
                m.d.comb += rx.o_header.ready.eq(1)
                m.d.sync += hdr_byte.eq(0)
                with m.If(rx.o_header.valid):
                    h = rx.o_header.payload
                    m.d.sync += [hdr.eq(h), remaining.eq(h.length),
                                 payload_left.eq(h.length != 0), verdict.eq(0),
                                 head_idx.eq(0), head_last.eq(prefix_last),
                                 head_more.eq(has_prefix & (h.length != 0))]
                    with m.If(h.status != Status.OK):
                        m.d.sync += verdict.eq(1)  # h.length is 0: hdr is the reply
                        m.next = "RESP_HDR"
                    with m.Elif(cache_valid & (h.cmd == cache.cmd) & (h.seq == cache.seq)):
                        m.next = "DRAIN"           # a retry: answered from the cache
                    with m.Else():
                        m.d.sync += [cache_valid.eq(1), cache.cmd.eq(h.cmd),
                                     cache.seq.eq(h.seq)]
                        m.next = "HEAD"

            with m.State("HEAD"):
                m.d.comb += rx_payload.ready.eq(head_more)
                with m.If(take):
                    m.d.sync += [head.word_select(head_idx, 8).eq(byte),
                                 head_idx.eq(head_idx + 1),
                                 head_more.eq((head_idx != head_last) & (remaining != 1))]
                with m.If(~head_more):
                    m.next = "SETTLE"

            with m.State("SETTLE"):
                m.next = "VERIFY"

            with m.State("VERIFY"):
                # the request's checks settle into a register: they are a long path (wide
                # compares of the prefix against the device state) ahead of CHECK's actions
                m.d.sync += verdict_status.eq(status)
                m.next = "CHECK"

            with m.State("CHECK"):
                with m.If(verdict_status != Status.OK):
                    refuse(verdict_status)
                with m.Else():
                    with m.Switch(cmd):
                        with m.Case(Cmd.IDENTIFY.value):
                            respond(Status.OK, reply=IdentifyReply)
                        with m.Case(Cmd.READ_STATUS.value):
                            respond(Status.OK, reply=StatusReply)
                        with m.Case(Cmd.RESET.value):
                            m.d.comb += power_up.eq(1)
                            m.d.sync += [configured.eq(0), table_log2.eq(0),
                                         stored_words.eq(0), last_error.eq(Status.OK),
                                         last_error_cmd.eq(0)]
                            respond(Status.OK)
                        with m.Case(Cmd.CONFIGURE.value):
                            m.d.comb += power_up.eq(1)
                            m.d.sync += [configured.eq(1), creq.eq(req_cfg), *kept_fields,
                                         lr_now.eq(req_cfg.lr),
                                         cfg_rem.eq(req_cfg.n_features), row_words.eq(1)]
                            m.next = "CFG_FMT"
                        with m.Case(Cmd.LOAD_MODEL.value):
                            with m.If(lm_empty):
                                respond(Status.OK)
                            with m.Else():
                                m.next = "LM_RWAIT"
                        with m.Case(Cmd.READ_MODEL.value):
                            respond(Status.OK, _MODEL)
                        with m.Case(Cmd.LOAD_LEVELS.value):
                            m.d.sync += [idx.eq(0), bcnt.eq(0), tb_bad.eq(0)]
                            m.next = "LL_DATA"
                        with m.Case(Cmd.TRAIN_STREAM.value):
                            m.d.sync += bcnt.eq(0)
                            m.next = "TS_BYTE"
                        with m.Case(Cmd.STORE_DATA.value):
                            m.d.sync += [idx.eq(sd_offset), idx_end.eq(sd_end),
                                         bcnt.eq(0)]
                            m.next = "SD_BYTE"
                        with m.Case(Cmd.RUN_EPOCHS.value):
                            m.d.sync += [epochs_left.eq(req_run.epochs),
                                         epochs_pending.eq(1)]     # (checked: not 0)
                            respond(Status.OK)

            with m.State("DRAIN"):
                m.d.comb += rx_payload.ready.eq(payload_left)
                with m.If(~payload_left):
                    m.next = "RESP_HDR"

            # --- CONFIGURE: R, the epoch's words, a zero model ------------------------------------
            with m.State("CFG_FMT"):
                # per_word and per_last take creq in (two cycles); the counters that start from
                # it load it (from creq, as when they restart: one source each)
                m.d.comb += rows_to_go_load.eq(1)
                m.d.sync += [decay_left.eq(creq.lr_decay_epochs)]
                m.next = "CFG_CONST"
            with m.State("CFG_CONST"):
                m.next = "CFG_R"
            with m.State("CFG_R"):
                with m.If(cfg_rem <= per_last):
                    m.d.sync += [epoch_words.eq(creq.rows_per_epoch[:mw] * row_words),
                                 epoch_big.eq(creq.rows_per_epoch[mw:].any())]
                    m.next = "CFG_LWAIT"
                with m.Else():
                    m.d.sync += [cfg_rem.eq(Mux(cfg_rem > per_word, cfg_rem - per_word, 0)),
                                 row_words.eq(row_words + 1)]
            with m.State("CFG_LWAIT"):
                with m.If(~pipe.busy):
                    m.d.comb += pipe.load.eq(1)
                    m.d.sync += idx.eq(0)
                    m.next = "CFG_LOAD"
            with m.State("CFG_LOAD"):
                m.d.comb += [pipe.i_model.valid.eq(1), pipe.i_model.payload.eq(0)]
                with m.If(pipe.i_model.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == n_last):
                        respond(Status.OK)

            # --- LOAD_MODEL: read all, merge, load all --------------------------------------------
            with m.State("LM_RWAIT"):
                with m.If(~pipe.busy):
                    m.d.comb += pipe.read.eq(1)
                    m.d.sync += idx.eq(0)
                    m.next = "LM_READ"
            with m.State("LM_READ"):
                m.d.comb += [model_out.ready.eq(1), st_wr.addr.eq(idx),
                             st_wr.data.eq(model_out.payload),
                             st_wr.en.eq(model_out.valid)]
                with m.If(model_out.valid):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == n_last):
                        m.d.sync += [idx.eq(req_off.offset), bcnt.eq(0)]
                        m.next = "LM_DATA"
            with m.State("LM_DATA"):
                m.d.comb += [rx_payload.ready.eq(payload_left), st_wr.addr.eq(idx),
                             st_wr.data.eq(small_next),
                             st_wr.en.eq(take & (bcnt == _MW - 1))]
                with m.If(take):
                    m.d.sync += [asm.eq(asm_next), bcnt.eq(bcnt + 1)]
                    with m.If(bcnt == _MW - 1):
                        m.d.sync += [bcnt.eq(0), idx.eq(idx + 1)]
                with m.If(~payload_left):
                    m.next = "LM_LWAIT"
            with m.State("LM_LWAIT"):
                with m.If(~pipe.busy):
                    m.d.comb += pipe.load.eq(1)
                    m.d.sync += [idx.eq(0), lvalid.eq(0)]
                    m.next = "LM_LOAD"
            with m.State("LM_LOAD"):
                fetch = ~lvalid | pipe.i_model.ready
                m.d.comb += [st_rd.addr.eq(idx), st_rd.en.eq(fetch),
                             pipe.i_model.valid.eq(lvalid), pipe.i_model.payload.eq(st_rd.data)]
                with m.If(fetch):
                    m.d.sync += lvalid.eq(idx != n)
                    with m.If(idx != n):
                        m.d.sync += idx.eq(idx + 1)
                # (the word loaded is idx - 1: the last once idx is n)
                with m.If(lvalid & pipe.i_model.ready & (idx == n)):
                    respond(Status.OK)

            # --- LOAD_LEVELS: check every entry into a buffer, then write the pipeline ------------
            with m.State("LL_DATA"):
                entry = small_next[16:].as_signed()
                m.d.comb += [rx_payload.ready.eq(payload_left), tb_wr.addr.eq(idx),
                             tb_wr.data.eq(entry), tb_wr.en.eq(take & (bcnt == _LE - 1))]
                with m.If(take):
                    m.d.sync += [asm.eq(asm_next), bcnt.eq(bcnt + 1)]
                    with m.If(bcnt == _LE - 1):
                        m.d.sync += [bcnt.eq(0), idx.eq(idx + 1)]
                        previous = small_next[:16].as_signed()     # the entry before
                        with m.If((entry > contract.TABLE_MAX) | (entry < -contract.TABLE_MAX) |
                                  ((idx != 0) & (entry <= previous))):
                            m.d.sync += tb_bad.eq(1)
                with m.If(~payload_left):
                    m.next = "LL_END"
            with m.State("LL_END"):
                with m.If(tb_bad):
                    m.d.sync += [last_error.eq(Status.BAD_ARGUMENT), last_error_cmd.eq(cmd)]
                    respond(Status.BAD_ARGUMENT)
                with m.Else():
                    # idx entries: a power of two, 4 .. 2**MAX_BITS (the checks); its log2 is
                    # the position of its one set bit
                    m.d.sync += table_log2.eq(Cat(
                        Cat(idx[k] for k in range(2, MAX_BITS + 1) if k >> j & 1).any()
                        for j in range(len(table_log2))))
                    m.d.sync += [idx_end.eq(idx), idx.eq(0), cp_valid.eq(0)]
                    m.next = "LL_COPY"
            with m.State("LL_COPY"):
                fetch = ~cp_valid | pipe.i_table.ready
                m.d.comb += [tb_rd.addr.eq(idx), tb_rd.en.eq(fetch),
                             pipe.i_table.valid.eq(cp_valid),
                             pipe.i_table.payload.index.eq(cp_index),
                             pipe.i_table.payload.value.eq(tb_rd.data)]
                with m.If(fetch):
                    m.d.sync += [cp_valid.eq(idx != idx_end), cp_index.eq(idx)]
                    with m.If(idx != idx_end):
                        m.d.sync += idx.eq(idx + 1)
                    with m.Elif(~cp_valid):
                        respond(Status.OK)

            # --- TRAIN_STREAM: words into the pipeline, a run per epoch ---------------------------
            with m.State("TS_BYTE"):
                m.d.comb += rx_payload.ready.eq(payload_left)
                with m.If(take):
                    m.d.sync += [asm.eq(asm_next), bcnt.eq(bcnt + 1)]
                    with m.If(bcnt == wb - 1):
                        m.d.sync += bcnt.eq(0)
                        m.next = "TS_PUSH"
                with m.Elif(~payload_left):
                    m.next = "TS_WAIT"
            with m.State("TS_PUSH"):
                with m.If(ts_new_epoch):
                    m.next = "TS_START"
                with m.Else():
                    m.d.comb += [ts_valid.eq(1), ts_word.eq(asm)]
                    with m.If(ts_fire):
                        with m.If(ts_row_end):
                            m.d.comb += row_pushed.eq(1)
                            m.d.sync += row_pos.eq(0)
                            m.d.comb += [rows_to_go_load.eq(ts_epoch_end),
                                         rows_to_go_dec.eq(~ts_epoch_end)]
                        with m.Else():
                            m.d.sync += row_pos.eq(row_pos + 1)
                        m.d.sync += mid_epoch.eq(~ts_epoch_end)
                        with m.If(ts_epoch_end):
                            m.d.sync += started.eq(0)
                        m.next = "TS_BYTE"
            with m.State("TS_START"):
                with m.If(~run_active & ~pipe.busy):
                    m.d.comb += start_run.eq(1)
                    m.d.sync += [run_active.eq(1), resident_run.eq(0), started.eq(1),
                                 ts_new_epoch.eq(0)]
                    m.next = "TS_PUSH"
            with m.State("TS_WAIT"):
                with m.If(~run_active | (rows_pending == 0)):
                    respond(Status.OK, reply=TrainStreamReply)

            # --- STORE_DATA -----------------------------------------------------------------------
            with m.State("SD_BYTE"):
                # a word is written the cycle after its last byte, from registers (asm, idx,
                # sd_write): the byte handshake stays apart from the memory's write enables
                m.d.comb += [rx_payload.ready.eq(payload_left), mem.w_addr.eq(idx),
                             mem.w_data.eq(asm), mem.w_en.eq(sd_write)]
                with m.If(sd_write):
                    m.d.sync += [sd_write.eq(0), idx.eq(idx + 1)]
                with m.If(take):
                    m.d.sync += [asm.eq(asm_next), bcnt.eq(bcnt + 1)]
                    with m.If(bcnt == wb - 1):
                        m.d.sync += [bcnt.eq(0), sd_write.eq(1)]
                with m.If(~payload_left & ~sd_write):
                    m.d.sync += stored_words.eq(idx_end)
                    respond(Status.OK, reply=StoreDataReply)

            # --- the response: header, then bytes from the cache or the pipeline's model ----------
            with m.State("RESP_HDR"):
                # the request's cmd and seq (a retry's are the cached ones), the receiver's
                # verdict or the cached status and reply
                header = Signal(Header)
                m.d.comb += [header.eq(hdr), header.status.eq(Mux(verdict, hdr.status,
                                                                      cache.status)),
                             header.length.eq(Mux(verdict, 0, reply_length))]
                m.d.comb += [tx_bytes.valid.eq(1),
                             tx_byte.data.eq(header.as_value().word_select(hdr_byte, 8))]
                with m.If(tx_bytes.ready):
                    m.d.sync += hdr_byte.eq(hdr_byte + 1)
                with m.If(tx_bytes.ready & header_end):
                    m.d.sync += idx.eq(0)
                    with m.If(no_payload):
                        m.next = "IDLE"
                    with m.Elif(cache_reply == _REPLIES.index(_MODEL)):
                        m.next = "RM_WAIT"
                    with m.Else():
                        m.next = "RESP_WAIT"
            with m.State("RESP_WAIT"):              # for the snapshot
                with m.If(~status_bank.busy):
                    m.d.sync += [idx.eq(win_first), lvalid.eq(0)]
                    m.next = "RESP_WINDOW"
            with m.State("RESP_WINDOW"):
                fetch = ~lvalid | tx_bytes.ready
                m.d.comb += [status_bank.rd_addr.eq(idx), status_bank.rd_en.eq(fetch),
                             tx_bytes.valid.eq(lvalid), tx_byte.data.eq(status_bank.rd_data)]
                with m.If(fetch):
                    m.d.sync += lvalid.eq(idx != win_end)
                    with m.If(idx != win_end):
                        m.d.sync += idx.eq(idx + 1)
                    with m.Else():
                        m.next = "IDLE"
            with m.State("RM_WAIT"):
                with m.If(~pipe.busy):
                    m.d.comb += pipe.read.eq(1)
                    m.d.sync += [idx.eq(0), rm_in.eq(in_window(0)), rm_over.eq(0)]
                    m.next = "RM_WORD"
            with m.State("RM_WORD"):
                # (where idx is, from registers set as it moves: the compares are paths into
                # them, not into the word's handshake)
                with m.If(rm_over):
                    m.next = "IDLE"
                with m.Elif(model_out.valid):
                    m.d.comb += model_out.ready.eq(1)
                    m.d.sync += [idx.eq(idx + 1), rm_in.eq(in_window(idx + 1)),
                                 rm_over.eq(idx == n_last)]
                    with m.If(rm_in):
                        m.d.sync += [asm.eq(model_out.payload), bcnt.eq(0)]
                        m.next = "RM_BYTES"
            with m.State("RM_BYTES"):
                m.d.comb += [tx_bytes.valid.eq(1), tx_byte.data.eq(asm[:8])]
                with m.If(tx_bytes.ready):
                    m.d.sync += [asm.eq(asm_next), bcnt.eq(bcnt + 1)]
                    with m.If(bcnt == _MW - 1):
                        m.next = "RM_WORD"

        m.d.comb += tx_byte.last.eq(
            (dispatch.ongoing("RESP_HDR") & header_end & no_payload) |
            (dispatch.ongoing("RESP_WINDOW") & (idx == win_end)) |     # (offering idx - 1)
            (dispatch.ongoing("RM_BYTES") & (bcnt == _MW - 1) & (idx == rm_end)))

        m.d.sync += status_bank.clear.eq(power_up)
        with m.If(power_up):
            m.d.sync += [run_active.eq(0), resident_run.eq(0), mid_epoch.eq(0), row_pos.eq(0),
                         started.eq(0), rows_pending.eq(0), epochs_left.eq(0),
                         epochs_pending.eq(0)]
        return m


class Device(wiring.Component):
    """The protocol device on a UART: :class:`DeviceCore` between a UART receiver and
    transmitter (8N1, ``baud`` from ``clk_freq``).

    Parameters
    ----------
    width, n_max, memory_words
        As :class:`DeviceCore`.
    clk_freq : float
        Core clock, Hz.
    baud : int
        Line rate.
    **params
        Passed to :class:`DeviceCore` (``max_payload``, ``batch_max``, ``tables``, ``build_id``,
        ``rx_timeout``, ``lanes``, ``dsp``, ``mul_stages``, ``serial``, ``spram``).

    Members
    -------
    rx : In(1)
        Serial input from the host (asynchronous, idle high).
    tx : Out(1)
        Serial output to the host, idle high.
    """

    def __init__(self, width=128, n_max=1024, memory_words=4096, *, clk_freq,
                 baud=DEFAULT_BAUD, **params):
        self.core = DeviceCore(width, n_max, memory_words, clk_freq=clk_freq, baud=baud,
                               **params)
        self.clk_freq, self.baud = clk_freq, baud
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    @property
    def capabilities(self):
        return self.core.capabilities

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = uart_rx = UARTReceiver(clk_freq=self.clk_freq, baud=self.baud)
        m.submodules.uart_tx = uart_tx = UARTTransmitter(clk_freq=self.clk_freq, baud=self.baud)
        m.submodules.core = self.core
        m.d.comb += [uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx)]
        wiring.connect(m, uart_rx.o_stream, self.core.i_stream)
        wiring.connect(m, self.core.o_stream, uart_tx.i_stream)
        return m

