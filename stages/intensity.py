"""Expression and head-motion intensity of a clip or window (HunyuanPortrait, eq. 2-3).

From the 478-point MediaPipe face mesh of each frame (crop pixels):

- I_e (expression) = mean over frames and points of || o_t,k - mean_t(o_t,k) ||, where
  o_t,k = p_t,k - nose_t is point k relative to the nose tip: how much the face deforms
  around its own centre over time. A rigid translation leaves every o_t,k unchanged, so I_e = 0.
- I_h (head motion) = mean over frames of || nose_t - mean_t(nose_t) ||: how far the head wanders.

Both are divided by the face scale of the first frame (the diagonal of the box around its
five points) so they do not depend on crop size. HunyuanPortrait multiplies these ratios by
1024 and 256 and casts to int; we keep the ratios and discretise them into ``d`` levels with
quantile edges computed over the whole dataset after the build (``bin_edges``/``to_levels``), so
levels can be recomputed from the catalog without touching the shards.

Mesh points used (documented because the paper uses a 5-point detector, not the mesh):
- ``hunyuan5`` (default, as in the paper): eye centres = mean of the two corners of each eye
  (33+133 image-left eye, 362+263 image-right eye; corners do not move with gaze, unlike the
  iris), nose tip 1, mouth corners 61 and 291.
- ``expressive``: those five plus lip centres (13 upper inner, 14 lower inner), upper and lower
  eyelids (159, 145, 386, 374) and mid-brows (105, 334), which also see mouth opening, blinks
  and brow raises that the corners alone barely register.
The face scale always uses the five ``hunyuan5`` points so both sets share one normaliser.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from .base import Settings

# Order of the five points: image-left eye, image-right eye, nose tip, image-left mouth
# corner, image-right mouth corner (the ArcFace / RetinaFace keypoint order).
FIVE_POINT_MESH = ((33, 133), (362, 263), (1,), (61,), (291,))
NOSE = 2  # index of the nose tip among the five points
_EXTRA_MESH = ((13,), (14,), (159,), (145,), (386,), (374,), (105,), (334,))
POINT_SETS = {"hunyuan5": FIVE_POINT_MESH, "expressive": FIVE_POINT_MESH + _EXTRA_MESH}
DEFAULT_LEVELS = 64


class IntensityConfig(Settings):
    """The ``features.intensity:`` section of the build config."""

    levels: int = Field(DEFAULT_LEVELS, ge=2, description="d: discrete intensity levels (HunyuanPortrait uses 64)")
    point_set: Literal["hunyuan5", "expressive"] = "hunyuan5"
    window: int = Field(16, ge=2, description="training window, frames")
    window_stride: int = Field(4, ge=1)


def mesh_points(landmarks: np.ndarray, groups=FIVE_POINT_MESH) -> np.ndarray:
    """(..., 478|468, 2) mesh -> (..., len(groups), 2): each point the mean of its mesh indices."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim < 2 or lm.shape[-1] != 2 or lm.shape[-2] < 468:
        raise ValueError(f"expected face-mesh landmarks of shape (..., 478, 2), got {lm.shape}")
    return np.stack([lm[..., list(g), :].mean(axis=-2) for g in groups], axis=-2)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(478, 2) mesh -> (5, 2) eye centres, nose tip, mouth corners (ArcFace order)."""
    return mesh_points(landmarks, FIVE_POINT_MESH)


def face_scale(landmarks: np.ndarray) -> float:
    """Diagonal of the box around the five points of one frame, in crop pixels."""
    p = five_points(landmarks)
    return float(np.linalg.norm(p.max(axis=0) - p.min(axis=0)))


def intensities(landmarks: np.ndarray, point_set: str = "hunyuan5") -> tuple[float, float]:
    """(T, 478, 2) mesh of consecutive frames -> (I_e, I_h), NaN when T == 0 or no face scale."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3:
        raise ValueError(f"expected landmarks of shape (T, 478, 2), got {lm.shape}")
    if point_set not in POINT_SETS:
        raise ValueError(f"unknown point set {point_set!r}; choose one of {sorted(POINT_SETS)}")
    if len(lm) == 0:
        return float("nan"), float("nan")
    scale = face_scale(lm[0])
    if not np.isfinite(scale) or scale <= 0:
        return float("nan"), float("nan")
    pts = mesh_points(lm, POINT_SETS[point_set])  # (T, K, 2)
    nose = pts[:, NOSE : NOSE + 1, :]  # (T, 1, 2)
    rel = pts - nose
    exp = np.linalg.norm(rel - rel.mean(axis=0, keepdims=True), axis=-1).mean()
    head = np.linalg.norm(nose - nose.mean(axis=0, keepdims=True), axis=-1).mean()
    return float(exp / scale), float(head / scale)


def window_intensities(
    landmarks: np.ndarray, window: int, stride: int = 1, point_set: str = "hunyuan5"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intensities of each training window [s, s + window) for s = 0, stride, ...

    Each window is normalised by its own first frame, as the paper does for a driving clip.
    Returns (starts int32, I_e float64, I_h float64); empty arrays if the clip is shorter
    than one window.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window} and {stride}")
    lm = np.asarray(landmarks)
    starts = np.arange(0, len(lm) - window + 1, stride, dtype=np.int32)
    values = [intensities(lm[s : s + window], point_set) for s in starts]
    exp = np.array([v[0] for v in values], dtype=np.float64)
    head = np.array([v[1] for v in values], dtype=np.float64)
    return starts, exp, head


def bin_edges(values, d: int = DEFAULT_LEVELS) -> np.ndarray:
    """d + 1 quantile edges over the finite values of the whole dataset (first = min, last = max).

    Equal-count bins keep every level populated however skewed the intensities are. Store the
    edges in the catalog; recompute them (and the levels) whenever the dataset changes.
    """
    if d < 1:
        raise ValueError(f"number of levels must be >= 1, got {d}")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("cannot compute intensity bins: no finite values in the dataset")
    return np.quantile(v, np.linspace(0.0, 1.0, d + 1))


def to_levels(values, edges: np.ndarray) -> np.ndarray:
    """Values -> int levels in [0, len(edges) - 2]; -1 where the value is NaN.

    Bins are closed on the right, so ties at a repeated edge (e.g. many still clips at 0) fall
    into the lowest bin that holds them, and a still clip gets level 0.
    """
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) < 0):
        raise ValueError("edges must be a non-decreasing 1-D array of at least 2 values")
    v = np.asarray(values, dtype=np.float64)
    levels = np.searchsorted(e[1:-1], v, side="left").astype(np.int32)
    return np.where(np.isfinite(v), levels, -1).astype(np.int32)
