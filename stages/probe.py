"""Probe a source: container, codec, size, rotation, fps (and whether it varies), frames, audio.

Videos are probed with PyAV (demuxing packets is cheap; one frame is decoded for the display
rotation). Images are probed from their headers with Pillow, never decoded: an image whose
size exceeds the pixel budget (``sampling.max_image_pixels``) is refused here, before any
pixel is allocated, so a worker's memory does not depend on what a header claims.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from .base import StageError

STAGE = "probe"
# Pixels an image may have (its decoded size, after JPEG draft reduction): keep in step with
# sampling.max_image_pixels in pipeline/config.py, which passes the configured value.
DEFAULT_PIXEL_BUDGET = 50_000_000
# Packets demuxed to judge whether the frame rate varies.
_VFR_PACKETS = 300
# Relative spread of frame intervals above which a stream is called variable-rate.
_VFR_TOLERANCE = 0.05


@dataclass
class ProbeResult:
    container: str | None = None
    codec: str | None = None
    width: int | None = None  # display orientation
    height: int | None = None
    rotation: int = 0  # clockwise degrees to apply for display
    fps: float | None = None
    variable_fps: bool = False
    n_frames: int | None = None
    duration_s: float | None = None
    has_audio: bool = False
    size_bytes: int = 0

    def as_row(self) -> dict:
        return asdict(self)


def probe(path: str, media_type: str, max_pixels: int = DEFAULT_PIXEL_BUDGET) -> ProbeResult:
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise StageError(STAGE, f"cannot read file: {e.strerror}") from None
    if size == 0:
        raise StageError(STAGE, "empty file (0 bytes)")
    if media_type == "image":
        return _probe_image(path, size, max_pixels)
    return _probe_video(path, size)


def check_pixel_budget(width: int, height: int, max_pixels: int, stage: str = STAGE) -> None:
    if width * height > max_pixels:
        raise StageError(stage, f"image too large: {width}x{height} = {width * height:,} pixels, "
                                f"over the budget of {max_pixels:,} (sampling.max_image_pixels)")


def image_exif(im):
    """EXIF without decoding: Pillow's PNG ``getexif()`` decodes the whole image to look for an
    eXIf chunk after the pixels, so PNGs use only what the header held."""
    from PIL import Image

    if im.format == "PNG":
        exif = Image.Exif()
        if "exif" in im.info:
            exif.load(im.info["exif"])
        return exif
    return im.getexif()


def _probe_image(path: str, size: int, max_pixels: int) -> ProbeResult:
    from PIL import Image, UnidentifiedImageError

    try:
        # Pillow's own limit (Image.MAX_IMAGE_PIXELS) stays on: it refuses absurd headers at
        # open. Its warning zone is ours to judge, by the budget below.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                orientation = image_exif(im).get(0x0112, 1)
                fmt, mode = im.format, im.mode
                im.draft("RGB", (1, 1))  # JPEG: the smallest size its decoder can produce
                check_pixel_budget(*im.size, max_pixels)
    except Image.DecompressionBombError as e:
        raise StageError(STAGE, f"image too large: {str(e).splitlines()[0]}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise StageError(STAGE, f"not a readable image: {str(e).splitlines()[0]}") from None
    # EXIF orientations 5..8 swap width and height for display.
    rotation = {3: 180, 6: 90, 8: 270}.get(orientation, 0)
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return ProbeResult(container=(fmt or "").lower(), codec=mode, width=w, height=h, rotation=rotation,
                       n_frames=1, size_bytes=size)


def _probe_video(path: str, size: int) -> ProbeResult:
    import av

    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise StageError(STAGE, f"not a readable video: {str(e).splitlines()[0]}") from None
    with container:
        if not container.streams.video:
            raise StageError(STAGE, "no video stream")
        stream = container.streams.video[0]
        res = ProbeResult(
            container=container.format.name.split(",")[0],
            codec=stream.codec_context.name,
            has_audio=bool(container.streams.audio),
            size_bytes=size,
        )
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        res.fps = float(rate) if rate else None
        if container.duration:
            res.duration_s = container.duration / 1_000_000
        elif stream.duration and stream.time_base:
            res.duration_s = float(stream.duration * stream.time_base)
        pts = _packet_times(container, stream)
        res.variable_fps = _is_variable(pts)
        try:
            container.seek(0)
            frame = next(container.decode(stream))
            res.rotation = int(round(-frame.rotation)) % 360 if frame.rotation else 0
            width, height = frame.width, frame.height
        except (StopIteration, av.FFmpegError) as e:
            raise StageError(
                STAGE, f"no decodable video frame: {str(e).splitlines()[0] if str(e) else 'stream is empty'}"
            ) from None
        if res.rotation in (90, 270):
            width, height = height, width
        res.width, res.height = width, height
        res.n_frames = stream.frames or (len(pts) if pts is not None and len(pts) < _VFR_PACKETS else None)
        if not res.n_frames and res.duration_s and res.fps:
            res.n_frames = int(round(res.duration_s * res.fps))
    return res


def _packet_times(container, stream) -> np.ndarray | None:
    import av

    times = []
    try:
        for packet in container.demux(stream):
            if packet.pts is not None:
                times.append(float(packet.pts * stream.time_base))
            if len(times) >= _VFR_PACKETS:
                break
    except av.FFmpegError:
        pass  # a truncated file: decode will say what is wrong
    return np.sort(np.array(times)) if times else None


def _is_variable(times: np.ndarray | None) -> bool:
    if times is None or len(times) < 3:
        return False
    d = np.diff(times)
    d = d[d > 0]
    if len(d) < 2:
        return False
    return bool(np.std(d) / np.mean(d) > _VFR_TOLERANCE)
