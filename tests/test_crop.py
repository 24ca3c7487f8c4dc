"""The training crop cut from a buffered frame window (stages/crop.py: crop_image)."""
from __future__ import annotations

import cv2
import numpy as np

from stages.crop import Crop, crop_image


def _frame(h: int = 1200, w: int = 1600) -> np.ndarray:
    """A smooth colour field with a white square at x 700-800, y 500-600 (frame pixels)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([128 + 100 * np.sin(xx / 90), 128 + 100 * np.cos(yy / 70), 128 + 60 * np.sin((xx + yy) / 130)], -1)
    rgb[500:600, 700:800] = 255
    return rgb.clip(0, 255).astype(np.uint8)


def test_the_crop_lands_where_the_frame_says():
    crop = crop_image(_frame(), Crop(600, 400, 300, 0.0), 150)  # 0.5 crop pixels per frame pixel
    assert crop.shape == (150, 150, 3)
    assert crop[53:97, 53:97].min() >= 250  # the square: crop 50-100 (edges blend)
    assert crop[:45].max(axis=2).min() < 250 and crop[105:, :, 0].max() < 250


def test_a_reduced_window_gives_the_crop_the_native_frame_gives():
    frame = _frame()
    crop = Crop(600, 400, 300, 0.0)
    native = crop_image(frame, crop, 150).astype(np.float32)
    for scale in (0.9, 0.7, 0.4):
        # What curation buffers: a window around the face, area-reduced by `scale`.
        x0, y0 = 250, 150
        window = cv2.resize(frame[y0:1100, x0:1300], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        local = Crop(crop.x0 - x0, crop.y0 - y0, crop.size, 0.0)
        got = crop_image(window, local, 150, frame_scale=window.shape[1] / (1300 - x0)).astype(np.float32)
        assert np.abs(got - native).mean() < 1.5, scale
        assert got[53:97, 53:97].min() >= 245


def test_what_lies_outside_the_buffered_window_is_black():
    frame = _frame()
    window = frame[300:900, 500:1100]  # the crop's left 100 frame pixels are not in it
    got = crop_image(window, Crop(400 - 500, 400 - 300, 300, 0.0), 150)
    assert got[:, :48].max() == 0  # 100 frame px = 50 crop px, less the bilinear edge
    assert got[:, 52:].max(axis=2).min() > 0
    # A crop entirely off the window: all padding.
    assert crop_image(window, Crop(-900, 0, 300, 0.0), 150).max() == 0
