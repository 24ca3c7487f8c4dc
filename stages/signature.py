"""A clip's perceptual signature, for finding the same footage across datasets.

Computed from the stored view-0 crops of a kept clip (square RGB, in time order, with their
timestamps), so it describes exactly what training reads. Cheap: one 48x48 area reduction per
frame, then arithmetic on 6x6 grids and 64-bin histograms (about 0.7 ms a frame for a 512-px
crop). The layout, and what each part is for, is in manifests/duplicates.py.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from manifests import duplicates as dup

_SMALL = 48  # every crop is reduced to this side first (area average: noise and detail go)
_GRID = 6  # motion cells per side; the 4 corner cells are left out (32 = one uint32 word)
_CELLS = np.array([k for k in range(_GRID * _GRID) if k not in (0, _GRID - 1, _GRID * (_GRID - 1), _GRID * _GRID - 1)])
_HIST_FRAMES = 32  # the colour histogram is taken over at most this many frames spread over the clip


def clip_signature(crops: Sequence[np.ndarray], timestamps: Sequence[float]) -> bytes:
    """The clip's signature (manifests/duplicates.py layout) from its crops (HxWx3 uint8 RGB, in
    time order) and their timestamps in seconds."""
    if len(crops) == 0 or len(crops) != len(timestamps):
        raise ValueError(f"{len(crops)} crops for {len(timestamps)} timestamps")
    t = np.asarray(timestamps, np.float64)
    if np.any(np.diff(t) < 0):
        raise ValueError("timestamps are not in time order")
    small = [_small(c) for c in crops]
    key = dup.key_from_histogram(colour_histogram(small))
    # Motion words: luma grid per frame -> mean over a window around each step -> signed change.
    luma = np.stack([cv2.resize(cv2.cvtColor(s, cv2.COLOR_RGB2GRAY).astype(np.float32), (_GRID, _GRID),
                                interpolation=cv2.INTER_AREA).reshape(-1)[_CELLS] for s in small])
    return dup.pack_signature(key, motion_words(luma, t), float(t[0]))


def colour_histogram(small: Sequence[np.ndarray]) -> np.ndarray:
    """64-bin RGB histogram (counts) of up to _HIST_FRAMES of the reduced crops, spread evenly."""
    pick = np.unique(np.linspace(0, len(small) - 1, min(len(small), _HIST_FRAMES)).round().astype(int))
    px = np.concatenate([small[k].reshape(-1, 3) for k in pick]).astype(np.int32) * dup.HIST_LEVELS // 256
    return np.bincount((px[:, 0] * dup.HIST_LEVELS + px[:, 1]) * dup.HIST_LEVELS + px[:, 2],
                       minlength=dup.HIST_LEVELS ** 3)


def _small(crop: np.ndarray) -> np.ndarray:
    crop = np.asarray(crop)
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise ValueError(f"a crop must be HxWx3 uint8 RGB, not {crop.shape} {crop.dtype}")
    return cv2.resize(crop, (_SMALL, _SMALL), interpolation=cv2.INTER_AREA)


def motion_words(cells: np.ndarray, t: np.ndarray) -> np.ndarray:
    """uint32 motion words from per-frame cell values (n_frames, 32) at times ``t``: one word per
    STEP_S step after the first (see manifests/duplicates.py)."""
    n_steps = int(np.floor((t[-1] - t[0]) / dup.STEP_S + 1e-6)) + 1
    if n_steps < 2:
        return np.zeros(0, np.uint32)
    centres = t[0] + (np.arange(n_steps) + 0.5) * dup.STEP_S
    # Frames within WINDOW_S / 2 of each centre (timestamps are sorted: two binary searches).
    lo = np.searchsorted(t, centres - dup.WINDOW_S / 2 - 1e-6, side="left")
    hi = np.searchsorted(t, centres + dup.WINDOW_S / 2 + 1e-6, side="right")
    empty = hi <= lo
    if empty.any():  # frames sparser than the window (a low sampling rate): the nearest frame
        c = centres[empty]
        right = np.clip(np.searchsorted(t, c), 0, len(t) - 1)
        left = np.clip(right - 1, 0, len(t) - 1)
        near = np.where(np.abs(t[left] - c) <= np.abs(t[right] - c), left, right)
        lo[empty], hi[empty] = near, near + 1
    csum = np.vstack([np.zeros((1, cells.shape[1])), np.cumsum(cells, axis=0, dtype=np.float64)])
    steps = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    change = np.diff(steps, axis=0)
    change -= change.mean(axis=1, keepdims=True)
    bits = (change > 0).astype(np.uint64)
    return (bits << np.arange(dup.WORD_BITS, dtype=np.uint64)).sum(axis=1, dtype=np.uint64).astype(np.uint32)
