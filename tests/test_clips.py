"""Cut detection between sampled frames (stages/clips.py)."""
from __future__ import annotations

import cv2
import numpy as np

from stages.clips import _HIST_BINS, _HIST_SIDE, frame_histogram, histogram_distance
from stages.decode import VideoReader


def _area_histogram(rgb: np.ndarray) -> np.ndarray:
    """The histogram of the whole frame area-averaged (what frame_histogram approximates)."""
    small = cv2.resize(rgb, (_HIST_SIDE, _HIST_SIDE), interpolation=cv2.INTER_AREA)
    hist = cv2.calcHist([cv2.cvtColor(small, cv2.COLOR_RGB2HSV)], [0, 1], None, _HIST_BINS, [0, 180, 0, 256])
    return cv2.normalize(hist, None).flatten()


def test_a_cut_between_two_shots_and_none_within_one(media_dir):
    # Two HD shots (the 1280x720 and the 480x908 fixture, the second letterboxed to 16:9).
    a = [f.rgb for f in VideoReader(str(media_dir / "videos" / "s18.mp4")).frames(2.0)][:6]
    b = [cv2.resize(f.rgb, (405, 720)) for f in VideoReader(str(media_dir / "videos" / "s20.mp4")).frames(2.0)][:6]
    b = [cv2.copyMakeBorder(x, 0, 0, 437, 438, cv2.BORDER_CONSTANT) for x in b]
    frames = a + b
    got = [histogram_distance(frame_histogram(x), frame_histogram(y)) for x, y in zip(frames, frames[1:])]
    full = [histogram_distance(_area_histogram(x), _area_histogram(y)) for x, y in zip(frames, frames[1:])]
    threshold = 0.5  # clips.cut_threshold's default
    assert [d > threshold for d in got] == [i == len(a) - 1 for i in range(len(got))]
    # The subsampled frame gives the distances the whole frame gives.
    assert np.abs(np.array(got) - np.array(full)).max() < 0.05
