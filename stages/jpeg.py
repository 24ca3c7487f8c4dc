"""JPEG crops: how frames are stored in the shards (RGB in, RGB out)."""
from __future__ import annotations

import cv2
import numpy as np

from .errors import StageError


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise StageError("jpeg", "JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise StageError("jpeg", "a stored JPEG crop does not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
