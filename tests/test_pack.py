"""The row layout: packing against a bit-by-bit reference, round trips, exact bit positions."""

import numpy as np
import pytest

from zipml import contract
from zipml.contract import Encoding, Format
from zipml.host import pack as pack_module
from zipml.host.pack import pack_rows, unpack_rows

LABEL_EXTREMES = contract.sat_limits(contract.LABEL_BITS)


def reference_pack(fields, labels, width, fmt):
    """The layout written straight from the contract, one Python integer per word."""
    n = fields.shape[1]
    fb, p = fmt.field_bits, contract.lanes_in_word(width, fmt)
    r = contract.row_words(width, fmt, n)
    limbs = []
    for row, label in zip(fields.tolist(), labels.tolist()):
        words = [0] * r
        for i, f in enumerate(row):
            words[i // p] |= f << (i % p * fb)
        assert words[-1] >> (width - contract.LABEL_BITS) == 0     # features stay below label
        words[-1] |= (label & 0xFFFFFFFF) << (width - contract.LABEL_BITS)
        limbs += [[(w >> (32 * k)) & 0xFFFFFFFF for k in range(width // 32)] for w in words]
    return np.array(limbs, dtype=np.uint32).reshape(-1, width // 32)


def feature_counts(width, fmt):
    p, p_last = contract.lanes_in_word(width, fmt), contract.lanes_in_last_word(width, fmt)
    counts = {1, p - 1, p, p + 1, 3 * p + 2, p_last, p_last + 1, 2 * p + p_last}
    return sorted(n for n in counts if n >= 1)


def random_rows(rng, n_rows, n, fmt):
    fields = rng.integers(0, 1 << fmt.field_bits, (n_rows, n), dtype=np.uint64).astype(np.uint32)
    fields[0] = (1 << fmt.field_bits) - 1                         # all ones: catches spills
    labels = rng.integers(*LABEL_EXTREMES, n_rows, endpoint=True, dtype=np.int64)
    labels[:2] = LABEL_EXTREMES
    return fields, labels.astype(np.int32)


@pytest.mark.parametrize("bits", range(1, contract.MAX_BITS + 1))
@pytest.mark.parametrize("encoding", list(Encoding))
@pytest.mark.parametrize("width", contract.WORD_WIDTHS)
def test_pack_matches_the_reference_and_round_trips(width, encoding, bits):
    fmt = Format(encoding, bits)
    rng = np.random.default_rng(width * 100 + encoding * 10 + bits)
    for n in feature_counts(width, fmt):
        fields, labels = random_rows(rng, 3, n, fmt)
        words = pack_rows(fields, labels, width, fmt)
        r = contract.row_words(width, fmt, n)
        assert words.dtype == np.uint32 and words.shape == (3 * r, width // 32)
        np.testing.assert_array_equal(words, reference_pack(fields, labels, width, fmt),
                                      err_msg=f"n = {n}")
        back, back_labels = unpack_rows(words, width, fmt, n)
        assert back.dtype == np.uint32 and back_labels.dtype == np.int32
        np.testing.assert_array_equal(back, fields, err_msg=f"n = {n}")
        np.testing.assert_array_equal(back_labels, labels)



@pytest.mark.parametrize("width", contract.WORD_WIDTHS)
def test_pack_in_chunks_on_threads_matches_the_reference(monkeypatch, width):
    """Many rows cut into chunks of a few rows, on three threads, every field width; the
    fields also in Fortran order."""
    monkeypatch.setattr(pack_module, "CHUNK", 40)
    monkeypatch.setenv("ZIPML_HOST_THREADS", "3")
    fmts = {Format(e, b).field_bits: Format(e, b) for e in Encoding for b in (1, 2, 3, 4, 5, 7, 8)}
    rng = np.random.default_rng(width)
    for fb, fmt in sorted(fmts.items()):
        p = contract.lanes_in_word(width, fmt)
        for n in sorted({1, contract.lanes_in_last_word(width, fmt) + 1, 2 * p + 3}):
            fields, labels = random_rows(rng, 23, n, fmt)
            expected = reference_pack(fields, labels, width, fmt)
            for f in (fields, np.asfortranarray(fields)):
                np.testing.assert_array_equal(pack_rows(f, labels, width, fmt), expected,
                                              err_msg=f"fb = {fb}, n = {n}")

def test_exact_bits_one_limb_words():
    """W = 32, PAIR b = 3 (6-bit fields, 5 lanes, no room beside the label), n = 6."""
    fmt = Format(Encoding.PAIR, 3)
    a = np.array([1, 2, 3, 4, 5, 6])
    b = np.array([7, 0, 1, 2, 3, 4])
    fields = (a | b << 3)[None, :]                  # 57, 2, 11, 20, 29, 38
    words = pack_rows(fields, np.array([-2], np.int32), 32, fmt)
    expected = [
        [0b00_011101_010100_001011_000010_111001],   # word 0: features 0..4, bits 30-31 unused
        [0b100110],                                  # word 1: feature 5 in lane 0
        [0xFFFFFFFE],                                # word 2: the label alone
    ]
    np.testing.assert_array_equal(words, np.array(expected, np.uint32))


def test_exact_bits_field_straddling_two_limbs():
    """W = 64, PAIR b = 3, n = 11: lane 5 (bits 30..35) spans limbs 0 and 1."""
    fmt = Format(Encoding.PAIR, 3)
    fields = np.array([[1, 2, 3, 4, 5, 0b110110, 7, 8, 9, 10, 11]])
    words = pack_rows(fields, np.array([0x12345678], np.int32), 64, fmt)
    expected = [
        [0b10_000101_000100_000011_000010_000001,        # lanes 0..4, low 2 bits of lane 5
         0b0000_001010_001001_001000_000111_1101],       # high 4 bits of lane 5, lanes 6..9
        [0b001011, 0x12345678],                          # feature 10, then the label
    ]
    np.testing.assert_array_equal(words, np.array(expected, np.uint32))
    back, labels = unpack_rows(words, 64, fmt, 11)
    np.testing.assert_array_equal(back, fields)
    assert labels.tolist() == [0x12345678]


def test_features_share_the_last_word_with_the_label():
    """W = 64, SINGLE b = 8: 8 lanes, 4 of them below the label; n = 4 is one word."""
    fmt = Format(Encoding.SINGLE, 8)
    words = pack_rows(np.array([[0x11, 0x22, 0x33, 0x44]]), np.array([-1], np.int32), 64, fmt)
    np.testing.assert_array_equal(words, np.array([[0x44332211, 0xFFFFFFFF]], np.uint32))


def test_pack_accepts_other_integer_dtypes_in_range():
    fmt = Format(Encoding.PAIR, 2)
    fields = np.array([[1, 15, 3]], np.int64)
    words = pack_rows(fields, np.array([5], np.int64), 64, fmt)
    np.testing.assert_array_equal(words, pack_rows(fields.astype(np.uint32),
                                                   np.array([5], np.int32), 64, fmt))


def test_pack_rejects_bad_input():
    fmt = Format(Encoding.PAIR, 2)
    ok_fields, ok_labels = np.zeros((2, 3), np.uint32), np.zeros(2, np.int32)
    bad = [
        (dict(fields=np.full((2, 3), 16, np.uint32)), "unsigned 4-bit"),
        (dict(fields=np.full((2, 3), -1)), "unsigned 4-bit"),
        (dict(fields=np.zeros((2, 3)) + 0.5), "integers"),
        (dict(fields=np.zeros(3, np.uint32)), "2-D"),
        (dict(fields=np.zeros((2, 0), np.uint32)), "at least one feature"),
        (dict(labels=np.zeros(3, np.int32)), r"shape \(2,\)"),
        (dict(labels=np.array([0, 1 << 31])), "int32"),
        (dict(width=48), "word width"),
    ]
    for change, message in bad:
        args = dict(fields=ok_fields, labels=ok_labels, width=64, fmt=fmt) | change
        with pytest.raises(ValueError, match=message):
            pack_rows(**args)


def test_unpack_rejects_bad_word_counts_and_shapes():
    fmt = Format(Encoding.PAIR, 2)
    words = pack_rows(np.zeros((2, 30), np.uint32), np.zeros(2, np.int32), 64, fmt)
    assert len(words) == 2 * contract.row_words(64, fmt, 30) == 6
    with pytest.raises(ValueError, match="not a whole number of rows of 3 words"):
        unpack_rows(words[:-1], 64, fmt, 30)
    with pytest.raises(ValueError, match="shape"):
        unpack_rows(words.reshape(-1), 64, fmt, 30)
    with pytest.raises(ValueError, match="shape"):
        unpack_rows(words.reshape(-1, 4), 64, fmt, 30)
    fields, labels = unpack_rows(words[:0], 64, fmt, 30)
    assert fields.shape == (0, 30) and labels.shape == (0,)
