"""The pipeline's cycle model: exact cycle counts of a training run (``zipml.hw.pipeline``).

The gateware is built to these constants and the RTL tests assert the counts they predict,
assuming the input stream always offers a word and the model sink is always ready. Cycles are
counted while the pipeline runs (``busy``), from the cycle after ``start``.

The schedule, per row of R words:

- the input accepts one word per cycle (or, in a format with more fields per word than the
  pipeline has lanes, one part of a word, :func:`zipml.contract.pipeline_lanes`: R below is
  then :func:`zipml.contract.pipeline_row_words`); a row's words are back to back;
- the first word of batch k (k >= 1 + delay in its epoch) waits for the cycle in which the last
  word of batch k - 1 - delay is written back (:func:`dot_latency` + R - 1 +
  :func:`update_write` cycles after that batch's last input word); this is the only per-batch
  overhead, and with delay = 1 it is hidden once ``(B - 1) * R >= dot_latency + update_write - 2``;
- an epoch ends when its last row is written back; the next epoch's first word is accepted
  :data:`EPOCH_GAP` cycles later, plus ``n + 1 +`` :data:`READBACK_STAGES` when the pipeline
  streams a snapshot of the model after every epoch.
"""

from zipml import contract

__all__ = ["MUL_STAGES", "FRONT_STAGES", "TREE_LEVELS_PER_STAGE", "ACC_STAGES", "SCALAR_STAGES",
           "SERIAL_SCALAR_STAGES", "UPDATE_WRITE", "EPOCH_GAP", "READBACK_STAGES",
           "SERIAL_ROW_CYCLES", "RESIDENT_START", "SERIAL_RESIDENT_START", "tree_stages",
           "dot_latency", "update_write", "run_cycles", "efficiency", "serial_slots",
           "serial_run_cycles"]

#: Default extra register stages inside the lane products (SGDPipeline's ``mul_stages``): one
#: splits the shift-and-add sums and registers the RAW hard-multiplier outputs.
MUL_STAGES = 1
#: Accept and decode the codes (S0), table and snapshot reads (S1), multiply (S2), before the
#: ``mul_stages`` extra product stages.
FRONT_STAGES = 3
#: Adder-tree levels between two registers.
TREE_LEVELS_PER_STAGE = 2
#: The per-row accumulator.
ACC_STAGES = 1
#: Gradient scalar: D, loss operands, g, the partial products of g * lr, their sum, c
#: (``zipml.hw.scalar.GradientScalar`` with its own multipliers).
SCALAR_STAGES = 6
#: The lane-serial pipeline's gradient scalar: D, loss operands, g, g * lr on the pipeline's
#: multiplier, c.
SERIAL_SCALAR_STAGES = 5
#: From popping (and decoding) a replayed word (U0) to writing its lanes back (U2), before the
#: ``mul_stages`` extra product stages.
UPDATE_WRITE = 2
#: Cycles from an epoch's last write-back to accepting the next epoch's first word.
EPOCH_GAP = 1
#: Registers a read-back word passes after its bank's read (the banks' outputs, the lane
#: select, a 4-word FIFO): a model of n words streams out in n + 1 + READBACK_STAGES cycles.
READBACK_STAGES = 3


def tree_stages(width, lanes=None):
    """Registered stages of the adder tree over the lanes of a word (``lanes``, default
    ``width``: one per bit)."""
    lanes = width if lanes is None else lanes
    levels = max(1, (lanes - 1).bit_length())
    return -(-levels // TREE_LEVELS_PER_STAGE)


def dot_latency(width, mul_stages=MUL_STAGES, lanes=None):
    """Cycles from accepting a row's last word to popping its first word for the update."""
    return FRONT_STAGES + mul_stages + tree_stages(width, lanes) + ACC_STAGES + SCALAR_STAGES


def update_write(mul_stages=MUL_STAGES):
    """Cycles from popping a replayed word to writing it back."""
    return UPDATE_WRITE + mul_stages


def run_cycles(width, config, epochs, snapshots=False, mul_stages=MUL_STAGES, lanes=None):
    """Busy cycles of a run of ``epochs`` epochs of ``config`` (a ``TrainConfig``) on a
    pipeline of ``lanes`` lanes (default ``width``)."""
    r = contract.pipeline_row_words(width, config.fmt, config.n_features, lanes)
    lat = dot_latency(width, mul_stages, lanes)
    write = update_write(mul_stages)
    t = 1                                   # the first cycle a word can be accepted
    last = 0
    for _ in range(epochs):
        written = []                        # per batch: the cycle its last word is written
        left, k = config.rows_per_epoch, 0
        while left:
            rows = min(config.batch, left)
            dep = k - 1 - config.delay
            if dep >= 0:
                t = max(t, written[dep])
            last_word = t + rows * r - 1
            written.append(last_word + lat + r - 1 + write)
            t = last_word + 1
            left -= rows
            k += 1
        last = written[-1] + (config.n_features + 1 + READBACK_STAGES if snapshots else 0)
        t = last + EPOCH_GAP
    return last


def efficiency(width, config, epochs=1, snapshots=False, mul_stages=MUL_STAGES, lanes=None):
    """Input words over busy cycles: 1.0 means one word every cycle (words taken in parts,
    :func:`zipml.contract.pipeline_lanes`, take a cycle per part)."""
    r = contract.row_words(width, config.fmt, config.n_features)
    return config.rows_per_epoch * r * epochs / run_cycles(width, config, epochs, snapshots,
                                                           mul_stages, lanes)


#: The lane-serial pipeline (``zipml.hw.serial``): cycles of a row beyond its two passes over its
#: field slots. The dot pass's last slot reaches the row sum three stages later (F1 .. F3), the
#: gradient scalar takes SERIAL_SCALAR_STAGES, the row buffer's first word is fetched in two
#: cycles, the update's last slot is written four stages later (F1 .. F4), and the next row's
#: first word is taken the cycle after that.
SERIAL_ROW_CYCLES = 3 + SERIAL_SCALAR_STAGES + 2 + 4 + 1


#: Cycles a device's resident epoch adds to its pipeline run (the pipeline's busy cycles, the
#: device's READ_STATUS ``cycles``): the resident memory's first word reaches the W-lane
#: pipeline through the memory's read, its output register and the device's word FIFO
#: (``zipml.hw.device``), the serial trainer straight from the memory's read.
RESIDENT_START = 4
SERIAL_RESIDENT_START = 1


def serial_slots(width, fmt, n_features):
    """Cycles one pass over a row takes in the lane-serial pipeline: a cycle per field, and one
    for a word without fields (the label word at W = 32)."""
    p = contract.lanes_in_word(width, fmt)
    r = contract.row_words(width, fmt, n_features)
    return sum(max(1, min(p, n_features - j * p)) for j in range(r))


def serial_run_cycles(width, config, epochs, snapshots=False):
    """Busy cycles of a run of the lane-serial pipeline, with a steady source and sink: each row
    takes its words for the dot product, then replays them for the update, and the next row
    starts when the last word is written back."""
    row = 2 * serial_slots(width, config.fmt, config.n_features) + SERIAL_ROW_CYCLES
    return epochs * (config.rows_per_epoch * row + (config.n_features + 1 if snapshots else 0))
