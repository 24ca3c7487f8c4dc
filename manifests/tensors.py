"""NumPy arrays <-> the array columns of manifests.schemas (nested ``fixed_size_list``).

An array of shape (4, 64, 64) is stored as ``fixed_size_list<fixed_size_list<fixed_size_list<
halffloat, 64>, 64>, 4>``: every tool that reads Arrow or Parquet sees the shape without our
code (DuckDB ``FLOAT[][][]``, Hugging Face ``datasets`` tensors, PyArrow zero-copy flatten).

- :func:`encode` gives a row value (a C-contiguous array of the contract dtype) that
  :func:`to_arrow` (and so ``schemas.table_from_rows``) turns into a column in one copy;
- :func:`to_numpy` / :func:`stack` / :func:`rows` read a column back without Python lists,
  also from a DuckDB result (variable nested lists, float16 widened to float32: the stored
  dtype is restored from the contract).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

# The array columns of manifests.schemas: name -> (default shape, NumPy dtype). The shape of a
# column follows the build's settings (crop size, map size): tables built by
# `schemas.table_from_rows` take it from the arrays themselves and record it in the schema
# metadata. Defined here, not in schemas.py, because schemas.py builds its types with this
# module: the import goes one way.
ARRAYS: dict[str, tuple[tuple[int, ...], str]] = {
    "landmarks": ((478, 2), "float32"),
    "latent": ((4, 64, 64), "float16"),
    "position_map": ((3, 64, 64), "float16"),
    "pose": ((133, 3), "float32"),
    "identity_embedding": ((512,), "float32"),
}
ARRAY_DTYPES = {name: dtype for name, (_, dtype) in ARRAYS.items()}


def array_type(shape: tuple[int, ...], dtype: str) -> pa.DataType:
    """The nested fixed_size_list type of an array of ``shape`` and NumPy ``dtype``."""
    t = pa.from_numpy_dtype(np.dtype(dtype))
    for d in reversed(shape):
        t = pa.list_(t, int(d))
    return t


def shape_of(t: pa.DataType) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) of a nested fixed_size_list type; None for any other type."""
    shape = []
    while pa.types.is_fixed_size_list(t):
        shape.append(t.list_size)
        t = t.value_type
    if not shape or not (pa.types.is_floating(t) or pa.types.is_integer(t)):
        return None
    return tuple(shape), np.dtype(t.to_pandas_dtype())


def encode(array: np.ndarray | None, dtype: str | None = None) -> np.ndarray | None:
    """An array as a row value of an array column, optionally cast to ``dtype`` first."""
    if array is None:
        return None
    return np.ascontiguousarray(array if dtype is None else np.asarray(array).astype(dtype))


def to_arrow(values: list, t: pa.DataType) -> pa.Array:
    """Row values (arrays, nested lists or None) as a column of the fixed_size_list type ``t``.

    One stacked copy, no per-element Python objects; a value of another shape is an error."""
    shape, dtype = shape_of(t)
    valid = np.array([v is not None for v in values], dtype=bool)
    n, size = len(values), int(np.prod(shape))
    flat = np.zeros((n, size), dtype=dtype)
    for i, v in enumerate(values):
        if v is not None:
            a = np.asarray(v)
            if a.shape != shape:
                raise ValueError(f"array of shape {a.shape} for a column of shape {shape}")
            flat[i] = a.reshape(-1)
    arr: pa.Array = pa.array(flat.reshape(-1))
    for d in reversed(shape[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, d)
    mask = None if valid.all() else pa.array(~valid)
    return pa.FixedSizeListArray.from_arrays(arr, shape[0], mask=mask)


def _flatten(arr: pa.Array) -> tuple[np.ndarray, tuple[int, ...]]:
    """Values and per-row shape of the non-null rows of a nested list column (fixed or not)."""
    shape = []
    if pa.types.is_fixed_size_list(arr.type):
        # Null rows still hold their slots in the child: keep them, callers mask them out.
        while pa.types.is_fixed_size_list(arr.type):
            k = arr.type.list_size
            shape.append(k)
            # .values ignores the parent's offset (a slice) and keeps null rows' slots.
            arr = arr.values.slice(arr.offset * k, len(arr) * k)
        return arr.to_numpy(zero_copy_only=False), tuple(shape)
    import pyarrow.compute as pc

    arr = arr.drop_null()
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise ValueError("ragged array column: rows of different shapes")
        shape.append(int(lengths[0]) if len(lengths) else 0)
        arr = arr.flatten()
    return arr.to_numpy(zero_copy_only=False), tuple(shape)


def _as_array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def to_numpy(col: pa.Array | pa.ChunkedArray, dtype: str | None = None) -> list[np.ndarray | None]:
    """One array per row (None for a null row), of ``dtype`` (default: the column's)."""
    arr = _as_array(col)
    valid = ~arr.is_null().to_numpy(zero_copy_only=False)
    values, shape = _flatten(arr)
    fixed = pa.types.is_fixed_size_list(arr.type)
    stacked = values.reshape((len(arr) if fixed else int(valid.sum()), *shape))
    if dtype is not None:
        stacked = stacked.astype(dtype, copy=False)
    out: list[np.ndarray | None] = [None] * len(arr)
    it = iter(range(len(stacked)))
    for i in range(len(arr)):
        k = i if fixed else (next(it) if valid[i] else None)
        if valid[i]:
            out[i] = stacked[k]
    return out


def stack(col: pa.Array | pa.ChunkedArray, dtype: str | None = None) -> np.ndarray:
    """The whole column as one (rows, *shape) array; a null row is an error."""
    arr = _as_array(col)
    if arr.null_count:
        raise ValueError(f"{arr.null_count} null row(s) in an array column")
    values, shape = _flatten(arr)
    if not pa.types.is_fixed_size_list(arr.type) and values.size == 0:
        return np.zeros((len(arr), *shape), dtype=values.dtype)
    out = values.reshape((len(arr), *shape))
    return out if dtype is None else out.astype(dtype, copy=False)


def rows(table: pa.Table, dtypes: dict[str, str] | None = None) -> list[dict]:
    """``table.to_pylist()`` with array columns as NumPy arrays (contract dtypes by default)."""
    dtypes = {**ARRAY_DTYPES, **(dtypes or {})}
    plain = [c for c in table.column_names if c not in dtypes]
    out = table.select(plain).to_pylist() if plain else [{} for _ in range(table.num_rows)]
    for name in table.column_names:
        if name in dtypes:
            for r, v in zip(out, to_numpy(table.column(name), dtypes[name])):
                r[name] = v
    return [{c: r[c] for c in table.column_names} for r in out]


def decode(value, dtype: str | None = None) -> np.ndarray | None:
    """A row value (an array, or nested lists as ``to_pylist`` gives them) as an array."""
    if value is None:
        return None
    a = np.asarray(value)
    return a if dtype is None else a.astype(dtype, copy=False)
