"""The store's exact decimals back as the exchange's strings, column-wise.

Each ``decimal(38, 18)`` value is printed with the number of decimals its exchange string
had (the store's packed ``scales``), so ``0.10`` comes back as ``0.10``; done in Arrow and
numpy, as a Python loop over 525,600 Decimals a column would dominate ``exact=True`` loads.
"""

from __future__ import annotations

from decimal import Context, Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quantcore.sinks.parquet_format import PRECISION, SCALE


def _unscaled(values: pa.Array, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Each decimal(38, 18) value as the integer ``m = value * 10**scale`` (exact when the
    value has at most ``scale`` decimals) and whether ``m`` fits 64 bits.

    The 128-bit integers are divided by ``10**(18 - scale)`` in 32-bit limbs (long
    division by at most ``10**9`` a step, so every partial fits 64 bits), all in numpy.
    """
    count = len(values)
    words = np.frombuffer(values.buffers()[1], dtype=np.uint64, count=2 * (values.offset + count))
    words = words[2 * values.offset :].reshape(-1, 2)
    low, high = words[:, 0], words[:, 1]
    limbs = [high >> _32, high & _MASK, low >> _32, low & _MASK]
    shift = SCALE - scale
    while shift:
        step = min(shift, 9)
        divisor = np.uint64(10**step)
        rest = np.zeros(count, dtype=np.uint64)
        quotients = []
        for limb in limbs:
            partial = (rest << _32) | limb
            quotients.append(partial // divisor)
            rest = partial % divisor
        limbs, shift = quotients, shift - step
    return (limbs[2] << _32) | limbs[3], (limbs[0] == 0) & (limbs[1] == 0)


_WIDE = Context(prec=PRECISION + 2)
_32 = np.uint64(32)
_MASK = np.uint64(0xFFFFFFFF)


def _whole(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def exact_strings(column: pa.ChunkedArray, scales: np.ndarray) -> pa.Array:
    """A decimal column as the exchange's strings (an Arrow string array, in row order):
    each value with the decimals it came with, built column-wise in Arrow and numpy."""
    values = _whole(column)
    groups, positions = [], []
    for scale in (int(s) for s in np.unique(scales)):
        rows = np.flatnonzero(scales == scale)
        taken = values.take(pa.array(rows))
        unscaled, fits = _unscaled(taken, scale)
        if scale:
            unit = np.uint64(10**scale)
            whole = pa.array(unscaled // unit).cast(pa.string())
            fraction = pc.ascii_lpad(pa.array(unscaled % unit).cast(pa.string()), scale, "0")
            digits = pc.binary_join_element_wise(whole, fraction, ".")
        else:
            digits = pa.array(unscaled).cast(pa.string())
        wide = np.flatnonzero(~fits)
        if len(wide):
            step = Decimal(1).scaleb(-scale)
            texts = [format(taken[int(i)].as_py().quantize(step, context=_WIDE), "f") for i in wide]
            mask = np.zeros(len(rows), dtype=bool)
            mask[wide] = True
            digits = pc.replace_with_mask(digits, pa.array(mask), pa.array(texts))
        groups.append(digits)
        positions.append(rows)
    if len(groups) == 1:
        return groups[0]
    if not groups:
        return pa.array([], pa.string())
    order = np.argsort(np.concatenate(positions), kind="stable")
    return pa.concat_arrays(groups).take(pa.array(order))
