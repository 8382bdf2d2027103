"""Packing of per-feature fields and labels into the device's stream words (and back).

The row layout is the contract's (:func:`contract.row_words`, docs/NUMERICS.md section 3):
feature i of a row sits in word ``i // P`` at lane ``i % P``, lane j at bits
``[j * fb, (j + 1) * fb)``; the int32 label fills the top 32 bits of the row's last word; unused
bits are zero. A W-bit word is held as ``W // 32`` uint32 limbs, limb 0 = bits 0..31.

Both directions loop over the lanes of a word; each step is one numpy operation over all rows
and words. A field may straddle two limbs (e.g. 6-bit fields in a 64-bit word).
"""

import numpy as np

from zipml import contract

__all__ = ["pack_rows", "unpack_rows"]


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
    labels = _as_labels(labels, n_rows)
    out = np.zeros((n_rows, r, limbs), dtype=np.uint32)
    for j, words, limb, shift in _lane_slots(n, lanes, fb):
        col = fields[:, j::lanes]
        out[:, :words, limb] |= col << np.uint32(shift)
        if shift + fb > 32:
            out[:, :words, limb + 1] |= col >> np.uint32(32 - shift)
    out[:, r - 1, limbs - 1] = labels.view(np.uint32)
    return out.reshape(n_rows * r, limbs)


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
