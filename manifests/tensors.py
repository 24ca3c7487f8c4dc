"""NumPy arrays <-> the TENSOR struct of manifests.schemas (data, shape, dtype)."""
from __future__ import annotations

import numpy as np


def encode(array: np.ndarray | None, dtype: str | None = None) -> dict | None:
    """An array as a TENSOR row value, optionally cast to ``dtype`` first."""
    if array is None:
        return None
    a = np.ascontiguousarray(array if dtype is None else np.asarray(array).astype(dtype))
    return {"data": a.tobytes(), "shape": [int(s) for s in a.shape], "dtype": a.dtype.name}


def decode(value: dict | None) -> np.ndarray | None:
    """A TENSOR row value (as pyarrow's to_pylist gives it) back to an array."""
    if value is None or value.get("data") is None:
        return None
    return np.frombuffer(value["data"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
