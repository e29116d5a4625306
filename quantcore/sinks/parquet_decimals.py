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

from quantcore.sinks.parquet_format import PRECISION


def _unscaled(values: pa.Array, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Each decimal(38, 18) value as the integer ``m = value * 10**scale`` and whether
    ``m`` fits 64 bits. Arrow rescales the 128-bit integers (in C++, ~3x faster than long
    division in numpy limbs) and refuses to drop a nonzero digit: ``scale`` is the
    number of decimals the value was recorded with, so a refusal means a damaged file."""
    rescaled = pc.cast(values, pa.decimal128(PRECISION, scale))
    count, offset = len(rescaled), rescaled.offset
    words = np.frombuffer(rescaled.buffers()[1], dtype=np.uint64, count=2 * (offset + count))
    words = words[2 * offset :].reshape(-1, 2)
    return words[:, 0], words[:, 1] == 0


_WIDE = Context(prec=PRECISION + 2)


def _whole(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def exact_strings(column: pa.ChunkedArray, scales: np.ndarray) -> pa.Array:
    """A decimal column as the exchange's strings (an Arrow string array, in row order):
    each value with the decimals it came with, built column-wise in Arrow and numpy."""
    values = _whole(column)
    groups, positions = [], []
    found: list[int] = np.flatnonzero(np.bincount(scales)).tolist() if len(scales) else []
    for scale in found:
        single = len(found) == 1  # the usual case: one tick size, no reordering needed
        rows = np.arange(len(values)) if single else np.flatnonzero(scales == scale)
        taken = values if single else values.take(pa.array(rows))
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
