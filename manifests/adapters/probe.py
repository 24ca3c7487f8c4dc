"""Cheap, cached look at a media file's size and frame rate, for metadata given in frames or
at a reference resolution. Only container headers are read (PyAV for video, Pillow for images).
Sizes are the coded width/height (display rotation is not applied: dataset boxes are given
on the stored frames).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .textfiles import EntryError


@dataclass(frozen=True)
class MediaInfo:
    width: int
    height: int
    fps: float | None = None  # None for images


@lru_cache(maxsize=8192)
def video_info(path: str) -> MediaInfo:
    """Width, height and average frame rate of a video's first video stream."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise EntryError(f"no video stream in {path}")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate or not stream.width or not stream.height:
                raise EntryError(f"cannot read frame rate or size of {path}")
            return MediaInfo(int(stream.width), int(stream.height), float(rate))
    except EntryError:
        raise
    except Exception as e:  # PyAV raises many kinds of errors on broken files
        raise EntryError(f"cannot open video {path}: {e}") from None


@lru_cache(maxsize=65536)
def image_info(path: str) -> MediaInfo:
    """Width and height of an image (header only)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:
        raise EntryError(f"cannot open image {path}: {e}") from None
    return MediaInfo(int(w), int(h), None)
