"""One square crop per clip, fixed over the clip: head, hair and shoulders (unaligned).

RealPortrait trains on unaligned 512x512 half-body crops. The crop side is ``scale`` face sizes
(largest face in the clip), centred below the face so shoulders are in; where the frame is
smaller than that, the crop shrinks to fit as long as every face box of the clip stays inside,
then slides to stay within the frame. Whatever still leaves the frame is padded
with black and its share recorded. Crops are in source pixels (display orientation), integers.
Coordinates are continuous throughout: pixel i covers [i, i+1), as mediapipe's normalised
landmarks times the frame size are.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field

from .base import Settings
from .face_geometry import crop_affine, cv2_affine


class CropConfig(Settings):
    """The ``crop:`` section of the build config."""

    out_size: int = Field(
        512, ge=64, multiple_of=8, description="side of the stored square crop (the VAE needs multiples of 8)"
    )
    scale: float = Field(3.2, gt=1, description="crop side / face box side: head, hair and shoulders")
    shift_down: float = Field(0.35, description="crop centre below the face centre, in face sizes")
    jpeg_quality: int = Field(90, ge=50, le=100)


@dataclass(frozen=True)
class Crop:
    x0: int
    y0: int
    size: int
    pad_frac: float  # share of the crop area outside the frame

    def to_crop(self, points: np.ndarray, out_size: int) -> np.ndarray:
        """Frame pixel coordinates -> output crop pixel coordinates."""
        s = out_size / self.size
        return (np.asarray(points, dtype=np.float64) - [self.x0, self.y0]) * s

    def matrix(self, out_size: int) -> np.ndarray:
        """2x3 affine frame -> crop, continuous coordinates (pixel i covers [i, i+1))."""
        return crop_affine((self.x0 + self.size / 2, self.y0 + self.size / 2), self.size, out_size)


def plan_crop(face_boxes: np.ndarray, width: int, height: int, scale: float, shift_down: float) -> Crop:
    """The clip's crop from its per-frame face boxes (n, 4)."""
    boxes = np.asarray(face_boxes, dtype=np.float64).reshape(-1, 4)
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    face = float(np.max(sides))
    cx = float(np.median((boxes[:, 0] + boxes[:, 2]) / 2))
    cy = float(np.median((boxes[:, 1] + boxes[:, 3]) / 2)) + shift_down * face
    union = np.array([boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()])
    needed = max(union[2] - union[0], union[3] - union[1])  # every face box of the clip fits
    side = max(min(scale * face, float(min(width, height))), needed)
    # Slide inside the frame where the crop fits, but never so far that a face box leaves it.
    x0 = _slide(cx - side / 2, side, width, union[0], union[2])
    y0 = _slide(cy - side / 2, side, height, union[1], union[3])
    x0, y0, size = int(round(x0)), int(round(y0)), max(int(round(side)), 1)
    inside_w = max(0, min(x0 + size, width) - max(x0, 0))
    inside_h = max(0, min(y0 + size, height) - max(y0, 0))
    return Crop(x0, y0, size, pad_frac=1.0 - (inside_w * inside_h) / float(size * size))


def _slide(start: float, side: float, limit: float, lo: float, hi: float) -> float:
    if side <= limit:
        start = min(max(start, 0.0), limit - side)
    # Keep the faces inside regardless.
    start = min(start, lo)
    return max(start, hi - side)


def crop_image(rgb: np.ndarray, crop: Crop, out_size: int, frame_scale: float = 1.0) -> np.ndarray:
    """The crop (given in frame pixels) from ``rgb``, which is the frame resized by ``frame_scale``."""
    s = out_size / crop.size  # crop pixels per frame pixel
    g = s / frame_scale  # crop pixels per rgb pixel
    ix0 = iy0 = 0
    fx = fy = 1.0
    if g < 1:
        # Area averaging avoids aliasing when shrinking; the remaining warp is a near-identity.
        # Only the crop's part of ``rgb`` is averaged (a buffered window is up to 9x the crop),
        # with a margin of 2 output pixels for the bilinear warp's neighbours.
        h, w = rgb.shape[:2]
        margin = int(np.ceil(2 / g))
        ix0 = max(0, int(np.floor(crop.x0 * frame_scale)) - margin)
        iy0 = max(0, int(np.floor(crop.y0 * frame_scale)) - margin)
        ix1 = min(w, int(np.ceil((crop.x0 + crop.size) * frame_scale)) + margin)
        iy1 = min(h, int(np.ceil((crop.y0 + crop.size) * frame_scale)) + margin)
        if ix1 <= ix0 or iy1 <= iy0:  # the crop lies off the picture: all padding
            return np.zeros((out_size, out_size, 3), np.uint8)
        region = rgb[iy0:iy1, ix0:ix1]
        rh, rw = region.shape[:2]
        rgb = cv2.resize(region, (max(1, round(rw * g)), max(1, round(rh * g))), interpolation=cv2.INTER_AREA)
        fx, fy = rgb.shape[1] / rw, rgb.shape[0] / rh
    # Continuous coordinates: a frame point p is rgb point p * frame_scale, region point
    # (p * frame_scale - (ix0, iy0)) * f, crop point s * (p - (x0, y0)).
    m = np.array([[s / (frame_scale * fx), 0, s * (ix0 / frame_scale - crop.x0)],
                  [0, s / (frame_scale * fy), s * (iy0 / frame_scale - crop.y0)]])
    return cv2.warpAffine(
        rgb, cv2_affine(m), (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
