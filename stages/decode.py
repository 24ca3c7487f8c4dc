"""Decode frames of a source at a sampling rate, honouring display rotation.

Videos are read with decord (fast batched access by index, timestamps per frame), falling back
to PyAV where decord cannot open or read the file (some codecs, truncated files). Frames are
chosen by timestamp, not index, so variable-frame-rate videos are sampled evenly in time.
Images are read with Pillow (EXIF orientation, CMYK, 16-bit and alpha handled) and reduced
to ``max_image_side`` before analysis; one whose decoded size would exceed the pixel budget is
refused before decoding.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .base import StageError
from .probe import DEFAULT_PIXEL_BUDGET, check_pixel_budget

STAGE = "decode"
log = logging.getLogger(__name__)
_BATCH = 16  # frames per decord batch: bounded memory, amortised seeking


@dataclass
class Frame:
    index: int  # frame number in the source (presentation order)
    t: float  # seconds
    rgb: np.ndarray  # HxWx3 uint8, display orientation; read-only from decord (its own buffer)


def rotate(rgb: np.ndarray, rotation_cw: int) -> np.ndarray:
    k = (rotation_cw // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=-k)) if k else rgb


def choose_samples(times: np.ndarray, fps: float, start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
    """Indices of the frames shown at start_s, start_s + 1/fps, ... (each at most once).

    Only frames whose timestamps lie in [start_s, end_s) are candidates, so a clip's frames never
    leak outside its time range; timestamps get a small tolerance for container rounding.
    """
    eps = 1e-4
    inside = np.flatnonzero((times >= start_s - eps) & ((times < end_s - eps) if end_s is not None else True))
    if len(inside) == 0:
        return np.zeros(0, dtype=np.int64)
    sub = times[inside]
    targets = np.arange(start_s, sub[-1] + eps, 1.0 / fps)
    pos = np.clip(np.searchsorted(sub, targets + eps, side="right") - 1, 0, None)
    return np.unique(inside[pos])


def read_image(path: str, max_side: int, max_pixels: int = DEFAULT_PIXEL_BUDGET) -> np.ndarray:
    """RGB uint8 in display orientation, reduced so its longer side <= max_side.

    Pillow's process-wide limit (``Image.MAX_IMAGE_PIXELS``) is left as it is; the size that
    will really be decoded (after JPEG draft reduction) is checked against ``max_pixels``
    before any pixel is decoded, so a header bomb costs nothing, whatever ran before."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns above its limit; the budget decides (its hard limit still applies).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im_file = Image.open(path)
        with im_file as im:
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale directly
            check_pixel_budget(*im.size, max_pixels, stage=STAGE)
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                im = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            im = im.convert("RGB")
            if max(im.size) > max_side:
                im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            return np.asarray(im, dtype=np.uint8).copy()
    except Image.DecompressionBombError as e:
        raise StageError(STAGE, f"image too large: {str(e).splitlines()[0]}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise StageError(STAGE, f"cannot decode image: {str(e).splitlines()[0]}") from None


class _DLPackCapsule:
    """A DLPack capsule (what decord's ``to_dlpack`` gives) as the object ``np.from_dlpack`` takes."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, stream=None, **kwargs):
        return self.capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU, device 0: decord.cpu(0)


def _frames_array(batch) -> np.ndarray:
    """A decord batch as a read-only numpy array over decord's own buffer (DLPack, no copy).

    ``asnumpy()`` copies the frames at ~1-2 GB/s: 1.3-5 ms a 720p frame (the slower while the
    process's memory is fresh), as much as decoding the frame and twice as much at 1080p. The
    pixels are the same bytes; the buffer lives as long as any frame of the batch does, as the
    copy's did."""
    try:
        return np.from_dlpack(_DLPackCapsule(batch.to_dlpack()))
    except (AttributeError, TypeError, RuntimeError, BufferError):  # a decord or numpy without DLPack
        return batch.asnumpy()


class VideoReader:
    """Frames of one video, by time. Opens decord, or PyAV when decord fails."""

    def __init__(self, path: str, rotation_cw: int = 0, backend: str = "auto"):
        self.path = path
        self.rotation = rotation_cw
        self.backend = None
        self._vr = None
        if backend in ("auto", "decord"):
            try:
                import decord

                self._vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
                if len(self._vr) == 0:
                    raise RuntimeError("no frames")
                self.times = np.asarray(self._vr.get_frame_timestamp(np.arange(len(self._vr)))[:, 0], dtype=np.float64)
                self.backend = "decord"
            except Exception as e:  # decord raises bare DECORDError/RuntimeError on many inputs
                if backend == "decord":
                    raise StageError(STAGE, f"decord cannot read the video: {str(e).splitlines()[0]}") from None
                log.debug("decord failed on %s (%s); using PyAV", path, e)
                self._vr = None
        if self.backend is None:
            self.times = self._pyav_times()
            self.backend = "pyav"
        if len(self.times) == 0:
            raise StageError(STAGE, "no decodable frames")

    def _pyav_times(self) -> np.ndarray:
        import av

        times = []
        try:
            with av.open(self.path) as c:
                s = c.streams.video[0]
                for packet in c.demux(s):
                    if packet.pts is not None and packet.size:
                        times.append(float(packet.pts * s.time_base))
        except (av.FFmpegError, IndexError, OSError) as e:
            if not times:
                raise StageError(STAGE, f"cannot read the video: {str(e).splitlines()[0]}") from None
        times = np.sort(np.asarray(times, dtype=np.float64))
        return times - times[0] if len(times) else times

    def frames(self, fps: float, start_s: float = 0.0, end_s: float | None = None) -> Iterator[Frame]:
        wanted = choose_samples(self.times, fps, start_s, end_s)
        if self.backend == "decord":
            yield from self._decord_frames(wanted)
        else:
            yield from self._pyav_frames(wanted)

    def _decord_frames(self, wanted: np.ndarray) -> Iterator[Frame]:
        for i in range(0, len(wanted), _BATCH):
            chunk = wanted[i : i + _BATCH]
            try:
                batch = _frames_array(self._vr.get_batch(chunk.tolist()))
            except Exception as e:
                # A truncated tail: keep what decoded, report the rest as an error upstream.
                raise StageError(
                    STAGE, f"decode failed near {self.times[chunk[0]]:.2f}s: {str(e).splitlines()[0]}"
                ) from None
            for j, idx in enumerate(chunk):
                # decord applies the display matrix itself (checked by tests/test_decode.py).
                yield Frame(int(idx), float(self.times[idx]), batch[j])

    def _pyav_frames(self, wanted: np.ndarray) -> Iterator[Frame]:
        import av

        if len(wanted) == 0:
            return
        wanted_set = set(int(i) for i in wanted)
        last = int(wanted[-1])
        t0 = None
        try:
            with av.open(self.path) as c:
                s = c.streams.video[0]
                s.thread_type = "NONE"  # one thread per decoder: workers run in parallel already
                index = -1
                for frame in c.decode(s):
                    if frame.pts is None:
                        continue
                    index += 1
                    t = float(frame.pts * s.time_base)
                    t0 = t if t0 is None else t0
                    if index in wanted_set:
                        yield Frame(index, t - t0, rotate(frame.to_ndarray(format="rgb24"), self.rotation))
                    if index >= last:
                        break
        except av.FFmpegError as e:
            raise StageError(STAGE, f"decode failed: {str(e).splitlines()[0]}") from None
