"""Position maps against any reference frame, composed from the maps the build stored.

The build stores, for every frame f of a clip, the map M_f against one reference frame R of the
clip: for each face cell p of f, the position M_f(p) in R's crop that p shows (channels x, y,
validity; see stages/position_maps.py). For a pair (driving f, reference r) we need p -> its
position in r's crop. Frame r's own map says where each of r's face cells is in R, so inverting
it gives R -> r, and

    M_{f->r}(p) = inverse(M_r)(M_f(p)).

The inverse is a scatter: each valid cell q of r's map lands in the R cell under M_r(q), which
then holds q's centre (averaged where several land). R cells nothing lands on are holes; a
one-cell fill from their filled neighbours closes the gaps a forward scatter leaves where r's
face is magnified relative to R. Lookups are nearest-cell, so positions are accurate to about a
cell (1/P of the crop). Cells whose position falls on a hole are invalid (zero), as the build's
maps are outside the face. Pure NumPy, any backend's maps (mesh or LivePortrait).
"""
from __future__ import annotations

import numpy as np


def invert_map(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3, P, P) map of frame r against R -> (positions in r of each R cell (2, P, P), filled (P, P))."""
    p = m.shape[-1]
    valid = m[2] > 0.5
    ys, xs = np.nonzero(valid)
    centres = np.stack([(xs + 0.5) / p, (ys + 0.5) / p])  # (2, n): where in r
    cols = np.clip((m[0][valid] * p).astype(np.int64), 0, p - 1)
    rows = np.clip((m[1][valid] * p).astype(np.int64), 0, p - 1)
    total = np.zeros((2, p, p), np.float64)
    count = np.zeros((p, p), np.float64)
    np.add.at(total, (slice(None), rows, cols), centres)
    np.add.at(count, (rows, cols), 1.0)
    # One-cell fill of holes surrounded by filled cells (at least 3 of the 4 neighbours).
    filled = count > 0
    mean = np.where(filled, total / np.maximum(count, 1), 0.0)
    pad_m, pad_f = np.pad(mean, ((0, 0), (1, 1), (1, 1))), np.pad(filled, 1)
    shifts = [(0, 1), (2, 1), (1, 0), (1, 2)]
    n_near = sum(pad_f[a : a + p, b : b + p] for a, b in shifts)
    near_sum = sum(pad_m[:, a : a + p, b : b + p] * pad_f[a : a + p, b : b + p] for a, b in shifts)
    hole = ~filled & (n_near >= 3)
    mean = np.where(hole, near_sum / np.maximum(n_near, 1), mean)
    return mean, filled | hole


def compose_map(driving: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The (3, P, P) map of the driving frame against the reference frame, from both frames'
    stored maps (against the clip's stored reference). Same dtype as ``driving``."""
    p = driving.shape[-1]
    inverse, filled = invert_map(reference.astype(np.float64))
    valid = driving[2] > 0.5
    cols = np.clip((driving[0].astype(np.float64) * p).astype(np.int64), 0, p - 1)
    rows = np.clip((driving[1].astype(np.float64) * p).astype(np.int64), 0, p - 1)
    ok = valid & filled[rows, cols]
    out = np.zeros((3, p, p), np.float64)
    out[0] = np.where(ok, inverse[0][rows, cols], 0.0)
    out[1] = np.where(ok, inverse[1][rows, cols], 0.0)
    out[2] = ok
    return out.astype(driving.dtype)


def compose_maps(drivings: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``compose_map`` for several driving frames (T, 3, P, P) against one reference frame: the
    reference's map is inverted once."""
    p = drivings.shape[-1]
    inverse, filled = invert_map(reference.astype(np.float64))
    d = drivings.astype(np.float64)
    valid = d[:, 2] > 0.5
    cols = np.clip((d[:, 0] * p).astype(np.int64), 0, p - 1)
    rows = np.clip((d[:, 1] * p).astype(np.int64), 0, p - 1)
    ok = valid & filled[rows, cols]
    out = np.zeros(d.shape, np.float64)
    out[:, 0] = np.where(ok, inverse[0][rows, cols], 0.0)
    out[:, 1] = np.where(ok, inverse[1][rows, cols], 0.0)
    out[:, 2] = ok
    return out.astype(drivings.dtype)
