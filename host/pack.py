"""Packing of per-feature fields and labels into the device's stream words (and back).

The row layout is the contract's (:func:`contract.row_words`, docs/NUMERICS.md section 3):
feature i of a row sits in word ``i // P`` at lane ``i % P``, lane j at bits
``[j * fb, (j + 1) * fb)``; the int32 label fills the top 32 bits of the row's last word; unused
bits are zero. A W-bit word is held as ``W // 32`` uint32 limbs, limb 0 = bits 0..31.

Packing works on chunks of about :data:`CHUNK` fields (whole rows) that stay in the CPU caches,
on several threads (:mod:`zipml.host.parallel`). Fields of 8, 16 or 32 bits fill whole bytes, so
a row of fields is one casting copy into the row's bytes (little-endian hosts); fields of 1, 2
or 4 bits are first combined into bytes. Other widths, and unpacking, loop over the lanes of a
word, each step one numpy operation over all rows and words of the chunk; a field may then
straddle two limbs (e.g. 6-bit fields in a 64-bit word).
"""

import sys

import numpy as np

from zipml import contract
from zipml.host.parallel import parallel_chunks, scratch

__all__ = ["CHUNK", "pack_rows", "unpack_rows"]

#: Fields per unit of work of :func:`pack_rows` (whole rows, at least one).
CHUNK = 1 << 18


def _geometry(width, fmt, n_features):
    """(limbs per word, words per row, lanes per word, field bits); ValueError if invalid."""
    if width not in contract.WORD_WIDTHS:
        raise ValueError(f"word width must be one of {contract.WORD_WIDTHS}, not {width}")
    fb = fmt.field_bits
    return width // 32, contract.row_words(width, fmt, n_features), \
        contract.lanes_in_word(width, fmt), fb


def _lane_slots(n_features, lanes, fb):
    """For each used lane j: (j, words of a row holding lane j, limb, shift within the limb)."""
    for j in range(min(lanes, n_features)):
        bit = j * fb
        yield j, -(-(n_features - j) // lanes), bit // 32, bit % 32


def _as_fields(fields, fb):
    fields = np.asarray(fields)
    if fields.ndim != 2:
        raise ValueError(f"fields must be 2-D (rows, features), got shape {fields.shape}")
    if not np.issubdtype(fields.dtype, np.integer):
        raise ValueError(f"fields must be integers, got {fields.dtype}")
    if fields.dtype != np.uint32:
        if fields.size and (fields.min() < 0 or int(fields.max()) >> fb):
            raise ValueError(f"fields must be unsigned {fb}-bit values")
        return fields.astype(np.uint32)
    if fb < 32 and fields.size and int(fields.max()) >> fb:
        raise ValueError(f"fields must be unsigned {fb}-bit values, found {int(fields.max())}")
    return fields


def _as_labels(labels, n_rows):
    labels = np.asarray(labels)
    if labels.shape != (n_rows,):
        raise ValueError(f"labels must have shape ({n_rows},), got {labels.shape}")
    if labels.dtype == np.int32:
        return labels
    lo, hi = contract.sat_limits(contract.LABEL_BITS)
    if not np.issubdtype(labels.dtype, np.integer) or (
            labels.size and (labels.min() < lo or labels.max() > hi)):
        raise ValueError("labels must be int32 fixed-point values (see quantize.encode_labels)")
    return labels.astype(np.int32)


def pack_rows(fields, labels, width, fmt):
    """Pack rows of fields and their labels into words.

    Parameters
    ----------
    fields : unsigned integer array (N, n)
        One field per feature, each below ``2**fmt.field_bits`` (see ``quantize.encode``).
    labels : int32 array (N,)
        Fixed-point labels (see ``quantize.encode_labels``).
    width : int
        W, one of ``contract.WORD_WIDTHS``.
    fmt : contract.Format

    Returns
    -------
    uint32 array (N * R, W // 32), R = ``contract.row_words(W, fmt, n)``
    """
    fields = _as_fields(fields, fmt.field_bits)
    n_rows, n = fields.shape
    limbs, r, lanes, fb = _geometry(width, fmt, n)
    labels = _as_labels(labels, n_rows).view(np.uint32)
    out = np.empty((n_rows, r, limbs), dtype=np.uint32)

    def work(a, b):
        chunk = out[a:b]
        chunk.fill(0)
        _pack_fields(fields[a:b], chunk, lanes, fb)
        chunk[:, r - 1, limbs - 1] = labels[a:b]

    parallel_chunks(n_rows, work, max(1, CHUNK // max(n, 1)))
    return out.reshape(n_rows * r, limbs)


_WHOLE = {8: np.uint8, 16: np.uint16, 32: np.uint32}


def _pack_fields(fields, out, lanes, fb):
    """OR the fields (rows, n) into zeroed words (rows, R, limbs)."""
    rows, n = fields.shape
    r, limbs = out.shape[1], out.shape[2]
    little = sys.byteorder == "little"
    if little and fb in _WHOLE:
        # Lane j of word w is element w * P + j of the row's words seen as fb-bit integers.
        np.copyto(out.reshape(rows, -1).view(_WHOLE[fb])[:, :n], fields, casting="unsafe")
        return
    if little and fb in (1, 2, 4):                     # 8 / fb fields to a byte
        per = 8 // fb
        row_bytes = out.reshape(rows, -1).view(np.uint8)
        small = scratch("pack_small", rows * n, np.uint8).reshape(rows, n)
        np.copyto(small, fields, casting="unsafe")
        if fb == 1:
            row_bytes[:, :-(-n // 8)] = np.packbits(small, axis=1, bitorder="little")
            return
        whole, rest = divmod(n, per)
        acc = row_bytes[:, :whole]
        np.copyto(acc, small[:, 0:whole * per:per])
        part = scratch("pack_part", rows * whole, np.uint8).reshape(rows, whole)
        for q in range(1, per):
            np.left_shift(small[:, q:whole * per:per], np.uint8(q * fb), out=part)
            np.bitwise_or(acc, part, out=acc)
        for q in range(rest):                           # a partly filled last byte
            row_bytes[:, whole] |= small[:, whole * per + q] << np.uint8(q * fb)
        return
    # One lane of every word at a time: fields laid out (rows * R, P), zero past the row's end,
    # so that each step is one long strided loop.
    if n == r * lanes:
        by_word = fields.reshape(rows * r, lanes)
    else:
        padded = scratch("pack_padded", rows * r * lanes, np.uint32).reshape(rows, r * lanes)
        padded[:, :n] = fields
        padded[:, n:] = 0
        by_word = padded.reshape(rows * r, lanes)
    words = out.reshape(rows * r, limbs)
    tmp = scratch("pack_tmp", rows * r, np.uint32)
    for j in range(lanes):
        limb, shift = divmod(j * fb, 32)
        np.left_shift(by_word[:, j], np.uint32(shift), out=tmp)
        np.bitwise_or(words[:, limb], tmp, out=words[:, limb])
        if shift + fb > 32:
            np.right_shift(by_word[:, j], np.uint32(32 - shift), out=tmp)
            np.bitwise_or(words[:, limb + 1], tmp, out=words[:, limb + 1])


def unpack_rows(words, width, fmt, n_features):
    """The inverse of :func:`pack_rows`: words back to (fields, labels).

    Parameters
    ----------
    words : uint32 array (N * R, W // 32)
    width : int
    fmt : contract.Format
    n_features : int
        n, the features per row (bias column included).

    Returns
    -------
    (uint32 array (N, n), int32 array (N,))
    """
    limbs, r, lanes, fb = _geometry(width, fmt, n_features)
    words = np.asarray(words)
    if words.ndim != 2 or words.shape[1] != limbs:
        raise ValueError(f"words must have shape (rows * {r}, {limbs}) for W = {width}, "
                         f"got {words.shape}")
    if len(words) % r:
        raise ValueError(f"{len(words)} words is not a whole number of rows of {r} words "
                         f"(W = {width}, {n_features} features, {fmt})")
    words = words.astype(np.uint32, copy=False).reshape(-1, r, limbs)
    n_rows = len(words)
    fields = np.empty((n_rows, n_features), dtype=np.uint32)
    mask = np.uint32((1 << fb) - 1)
    for j, count, limb, shift in _lane_slots(n_features, lanes, fb):
        col = words[:, :count, limb] >> np.uint32(shift)
        if shift + fb > 32:
            col |= words[:, :count, limb + 1] << np.uint32(32 - shift)
        fields[:, j::lanes] = col & mask
    labels = words[:, r - 1, limbs - 1].view(np.int32).copy()
    return fields, labels
