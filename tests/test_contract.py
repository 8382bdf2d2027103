"""The numerics contract and its document agree, and its derived quantities are right."""

import math
import re
from pathlib import Path

import pytest

from zipml import contract
from zipml.contract import Encoding, Format, LevelMode

DOC = (Path(__file__).parent.parent / "docs" / "NUMERICS.md").read_text()


def test_document_states_the_contract_shifts():
    """The shifts the document writes out follow from the contract's fractional bits."""
    c_shift = contract.MODEL_FRAC + contract.LR_FRAC - contract.SCALAR_FRAC
    delta_shift = contract.SCALAR_FRAC - contract.MODEL_FRAC
    sig_shift = contract.MODEL_FRAC - contract.SIGMOID_STEP_LOG2
    assert f"round(g * lr_e / 2**{c_shift})" in DOC
    assert f"round(c * vB_i / 2**({delta_shift} + f))" in DOC
    assert f"floor(-s * D / 2**{sig_shift})" in DOC
    assert f"2**{contract.MODEL_FRAC}" in DOC
    assert f"f = {contract.RAW_FRAC}" in DOC
    assert f"\\|table[k]\\| <= {contract.TABLE_MAX}" in DOC
    assert f"signed {contract.TABLE_BITS}-bit" in DOC
    assert f"{contract.SIGMOID_ENTRIES} entries" in DOC
    for width in contract.WORD_WIDTHS:
        assert str(width) in re.search(r"W in \{([^}]*)\}", DOC).group(1)


@pytest.mark.parametrize("bits", range(1, contract.MAX_BITS + 1))
def test_field_bits(bits):
    s = 1 << bits
    assert Format(Encoding.SINGLE, bits).field_bits == bits
    assert Format(Encoding.PAIR, bits).field_bits == 2 * bits
    compact = Format(Encoding.COMPACT, bits)
    assert compact.field_bits == (math.ceil(math.log2(s - 1)) if s > 2 else 0) + 2
    assert compact.field_bits <= Format(Encoding.PAIR, bits).field_bits
    assert Format(Encoding.RAW, bits).field_bits == 32


@pytest.mark.parametrize("bits", range(1, contract.MAX_BITS + 1))
def test_uniform_levels_are_uniform_and_span_top(bits):
    for mode in (LevelMode.UNIFORM_SIGNED, LevelMode.UNIFORM_UNSIGNED):
        ints = contract.uniform_level_ints(bits, mode)
        assert len(ints) == 1 << bits
        steps = {b - a for a, b in zip(ints, ints[1:])}
        assert len(steps) <= 1
        top = Format(Encoding.PAIR, bits, mode).top
        assert ints[-1] / 2**bits == top
        if mode == LevelMode.UNIFORM_SIGNED:
            assert ints[0] == -ints[-1]


@pytest.mark.parametrize("width", contract.WORD_WIDTHS)
@pytest.mark.parametrize("fmt", [Format(Encoding.SINGLE, 1), Format(Encoding.PAIR, 3),
                                 Format(Encoding.COMPACT, 8), Format(Encoding.RAW)], ids=str)
def test_row_words_is_the_smallest_layout_that_fits(width, fmt):
    p = contract.lanes_in_word(width, fmt)
    p_last = contract.lanes_in_last_word(width, fmt)
    assert p_last * fmt.field_bits + contract.LABEL_BITS <= width
    for n in (1, 2, p_last, p_last + 1, p, p + 1, 3 * p + 2, 1000):
        if n < 1:
            continue
        r = contract.row_words(width, fmt, n)
        assert (r - 1) * p + p_last >= n
        assert r == 1 or (r - 2) * p + p_last < n


@pytest.mark.parametrize("width", [64, 128, 256])
def test_words_taken_in_parts_make_rows_of_p_fields(width):
    """A word with more fields than lanes goes to the pipeline in parts of P fields (hw/pipeline
    S0): a word's parts, then the next word's; a last word holding only the label goes with the
    part that ends the row's fields, which is never its word's first part."""
    for lanes in (width // 32, 8, 16, 32):
        for fmt in [Format(e, b) for e in (Encoding.SINGLE, Encoding.PAIR, Encoding.COMPACT)
                    for b in range(1, contract.MAX_BITS + 1)]:
            p_word, p = contract.lanes_in_word(width, fmt), contract.pipeline_lanes(width, fmt,
                                                                                   lanes)
            if p_word <= lanes:
                assert p == p_word
                continue
            assert contract.format_fits(width, fmt, lanes)
            assert p_word % p == 0 and p <= lanes
            assert p * fmt.field_bits + contract.LABEL_BITS <= width
            p_last = contract.lanes_in_last_word(width, fmt)
            for n in {1, p, p + 1, p_last, p_last + 1, p_word, p_word + 1, 2 * p_word + 3, 300}:
                parts, rem = [], n
                for _ in range(contract.row_words(width, fmt, n)):
                    fields = min(rem, p_word)
                    if fields == 0:
                        assert parts[-1] >= 2          # the label rides on a later part
                    parts.append(-(-fields // p))
                    rem -= fields
                assert rem == 0
                assert sum(parts) == contract.pipeline_row_words(width, fmt, n, lanes)


def test_a_w32_word_is_never_taken_in_parts():
    """At W = 32 a row's last word is its label: a build of fewer lanes refuses wider words."""
    assert contract.pipeline_lanes(32, Format(Encoding.SINGLE, 1), 16) == 0
    assert not contract.format_fits(32, Format(Encoding.SINGLE, 1), 16)
    assert contract.fitting_bits(32, Encoding.SINGLE, 16) == list(range(2, 9))


def test_sigmoid_table_is_monotone_and_symmetric():
    table = contract.sigmoid_table()
    one = 1 << contract.MODEL_FRAC
    assert len(table) == contract.SIGMOID_ENTRIES
    assert all(a <= b for a, b in zip(table, table[1:]))
    for i in range(contract.SIGMOID_ENTRIES):
        assert abs(table[i] + table[-1 - i] - one) <= 1


def test_rounding_helpers():
    assert contract.round_shift(3, 1) == 2 and contract.round_shift(-3, 1) == -1
    assert contract.round_shift(5, 2) == 1 and contract.round_shift(6, 2) == 2
    assert contract.floor_shift(-1, 4) == -1
    assert contract.sat(2**40, 32) == 2**31 - 1 and contract.sat(-(2**40), 32) == -(2**31)


def test_bad_formats_are_rejected():
    with pytest.raises(ValueError, match="bits"):
        Format(Encoding.PAIR, 9)
    with pytest.raises(ValueError, match="table"):
        Format(Encoding.PAIR, 1, LevelMode.TABLE)
    with pytest.raises(ValueError, match="at least one feature"):
        contract.row_words(64, Format(), 0)
