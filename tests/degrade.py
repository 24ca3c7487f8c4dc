"""Deterministic degraded variants of the real fixture media, for the quality tests.

Video makers read ``src`` with PyAV and write ``dst`` as H.264 mp4 at the source frame rate
(no audio): the same input always gives the same frames. Image occluders paint a hand-like,
microphone-like or flat patch over the mouth or the eyes located by FaceMesh landmarks.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import cv2
import numpy as np

# FaceMesh indices (see stages/quality.py).
LIPS_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
EYES = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
        263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
CHEEKS = [50, 280, 205, 425, 118, 347]


# ------------------------------------------------------------------------------ video plumbing

def _frames(src: str | Path, max_frames: int | None = None) -> tuple[Fraction, Iterator[np.ndarray]]:
    """Frame rate and the RGB frames of ``src`` (the first ``max_frames`` only, if given)."""
    container = av.open(str(src))
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)

    def gen():
        try:
            for i, frame in enumerate(container.decode(stream)):
                if max_frames is not None and i >= max_frames:
                    break
                yield frame.to_ndarray(format="rgb24")
        finally:
            container.close()

    return Fraction(rate), gen()


def _count_frames(src: str | Path, max_frames: int | None = None) -> int:
    with av.open(str(src)) as container:
        n = sum(1 for _ in container.demux(video=0) if _.size)  # packets: no decoding needed
    return n if max_frames is None else min(n, max_frames)


def _write(dst: str | Path, rate: Fraction, frames: Iterator[np.ndarray]) -> Path:
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(dst), "w") as out:
        stream = None
        for rgb in frames:
            if stream is None:
                h, w = rgb.shape[:2]
                stream = out.add_stream("libx264", rate=rate)
                stream.width, stream.height = w - w % 2, h - h % 2  # yuv420p needs even sides
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "18", "preset": "veryfast"}
            rgb = np.ascontiguousarray(rgb[: stream.height, : stream.width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        if stream is None:
            raise ValueError("source video has no frames")
        for packet in stream.encode():
            out.mux(packet)
    return dst


def map_video(src: str | Path, dst: str | Path, fn: Callable[[int, np.ndarray], np.ndarray],
              max_frames: int | None = None) -> Path:
    """Write ``fn(frame_number, rgb)`` of every frame of ``src`` to ``dst``."""
    rate, frames = _frames(src, max_frames)
    return _write(dst, rate, (fn(i, rgb) for i, rgb in enumerate(frames)))


# -------------------------------------------------------------------------------- the makers

def darken(src, dst, factor: float = 0.25, max_frames: int | None = None) -> Path:
    """Every pixel value times ``factor`` (an under-exposed shot)."""
    return map_video(src, dst, lambda i, rgb: np.clip(rgb.astype(np.float32) * factor + 0.5, 0, 255).astype(np.uint8),
                     max_frames)


def downscale(src, dst, factor: int = 4, max_frames: int | None = None) -> Path:
    """Frames reduced ``factor`` times (area averaging): a low-resolution source."""
    def shrink(i, rgb):
        h, w = rgb.shape[:2]
        return cv2.resize(rgb, (max(2, round(w / factor)), max(2, round(h / factor))), interpolation=cv2.INTER_AREA)

    return map_video(src, dst, shrink, max_frames)


def natural_texture(height: int, width: int, seed: int) -> np.ndarray:
    """A colourful multi-scale noise texture (foliage / gravel-like), RGB uint8."""
    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float32)
    for cell in (64, 24, 8, 3):
        gh, gw = height // cell + 2, width // cell + 2
        grid = rng.random((gh, gw, 3)).astype(np.float32)
        up = cv2.resize(grid, (gw * cell, gh * cell), interpolation=cv2.INTER_CUBIC)[:height, :width]
        out += up * (cell ** 0.5)
    out -= out.min()
    out /= max(out.max(), 1e-6)
    tint = rng.uniform(0.5, 1.0, 3).astype(np.float32)
    return np.clip(out * tint * 255, 0, 255).astype(np.uint8)


def green_mask(rgb: np.ndarray) -> np.ndarray:
    """Soft alpha (1 = green screen) of a chroma-key background."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    key = (hsv[..., 0] >= 35) & (hsv[..., 0] <= 90) & (hsv[..., 1] >= 60) & (hsv[..., 2] >= 40)
    key = cv2.morphologyEx(key.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    alpha = cv2.GaussianBlur(key.astype(np.float32), (0, 0), 1.0)
    return alpha[..., None]


def replace_green_background(src, dst, texture_seed: int = 0, speed_px: float = 3.0,
                             max_frames: int | None = None) -> Path:
    """Key out a flat green background and put a texture behind the person that drifts
    ``speed_px`` pixels per frame in a seed-chosen direction, with a little wobble (as a
    hand-held camera or wind-blown foliage would)."""
    rate, frames = _frames(src, max_frames)
    rng = np.random.default_rng(texture_seed)
    angle = rng.uniform(0, 2 * np.pi)
    vel = speed_px * np.array([np.cos(angle), np.sin(angle)])
    state: dict = {}

    def gen():
        for i, rgb in enumerate(frames):
            h, w = rgb.shape[:2]
            if "tex" not in state:
                margin = int(speed_px * 400) + 16
                state["tex"] = natural_texture(h + 2 * margin, w + 2 * margin, texture_seed)
                state["margin"] = margin
            m = state["margin"]
            off = vel * i + 1.5 * np.array([np.sin(i * 0.7), np.cos(i * 0.5)])
            ox = int(np.clip(m + off[0], 0, 2 * m))
            oy = int(np.clip(m + off[1], 0, 2 * m))
            bg = state["tex"][oy: oy + h, ox: ox + w].astype(np.float32)
            alpha = green_mask(rgb)
            yield np.clip(alpha * bg + (1 - alpha) * rgb, 0, 255).astype(np.uint8)

    return _write(dst, rate, gen())


def mouth_patch(src, dst, fraction: float = 0.8, colour=(128, 128, 128), analyzer=None,
                max_frames: int | None = None) -> Path:
    """An opaque rectangle over the mouth in the middle ``fraction`` of the frames, placed from
    FaceMesh landmarks found on every frame (frames without a face are left as they are)."""
    from stages.faces import FaceAnalyzer

    own = analyzer is None
    if own:
        analyzer = FaceAnalyzer()
        analyzer.setup()
    n = _count_frames(src, max_frames)
    rate, frames = _frames(src, max_frames)
    first = int(round(n * (1 - fraction) / 2))
    last = first + int(round(n * fraction))
    previous = None

    def gen():
        nonlocal previous
        for i, rgb in enumerate(frames):
            if first <= i < last:
                obs = analyzer.analyze(rgb, previous=previous)
                previous = obs.face_box if obs.face_box is not None else previous
                if obs.landmarks is not None:
                    rgb = paint_patch(rgb, obs.landmarks, "mouth", colour)
            yield rgb

    try:
        return _write(dst, rate, gen())
    finally:
        if own:
            analyzer.close()


# ------------------------------------------------------------------------------ image occluders

def _target(landmarks: np.ndarray, where: str) -> tuple[np.ndarray, float, float]:
    """Centre, width and height of the mouth or of both eyes."""
    if where not in ("mouth", "eyes"):
        raise ValueError(f"where must be 'mouth' or 'eyes', got {where!r}")
    pts = landmarks[LIPS_OUTER if where == "mouth" else EYES]
    lo, hi = pts.min(0), pts.max(0)
    return (lo + hi) / 2, float(hi[0] - lo[0]), float(hi[1] - lo[1])


def skin_colour(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    samples = []
    for x, y in np.round(landmarks[CHEEKS]).astype(int):
        samples.append(rgb[max(y - 3, 0): min(y + 4, h), max(x - 3, 0): min(x + 4, w)].reshape(-1, 3))
    return np.median(np.concatenate(samples), axis=0)


def paint_patch(rgb: np.ndarray, landmarks: np.ndarray, where: str, colour="skin") -> np.ndarray:
    """An opaque rectangle of ``colour`` (RGB, or "skin" for the face's own cheek colour) over
    the mouth (lips plus a margin) or over both eyes."""
    c, w, h = _target(landmarks, where)
    hw = 0.7 * w
    hh = max(0.7 * h, 0.4 * w) if where == "mouth" else max(0.9 * h, 0.12 * w)
    col = skin_colour(rgb, landmarks) if isinstance(colour, str) else np.asarray(colour, np.float64)
    out = rgb.copy()
    cv2.rectangle(out, (int(c[0] - hw), int(c[1] - hh)), (int(c[0] + hw), int(c[1] + hh)),
                  tuple(int(v) for v in col), -1)
    return out


def paint_microphone(rgb: np.ndarray, landmarks: np.ndarray, angle_deg: float = 60.0) -> np.ndarray:
    """A dark metallic rounded bar (a handheld microphone) across the mouth, with a specular stripe."""
    c, w, _ = _target(landmarks, "mouth")
    h, wd = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:wd].astype(np.float32)
    d = np.array([np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))], np.float32)
    along = (xx - c[0]) * d[0] + (yy - c[1]) * d[1]
    across = -(xx - c[0]) * d[1] + (yy - c[1]) * d[0]
    radius = 0.6 * w
    dist = np.hypot(along - np.clip(along, -0.6 * w, 3.0 * w), across)
    inside = dist < radius
    shade = 35 + 70 * np.exp(-((across / radius - 0.3) ** 2) / 0.04)
    out = rgb.astype(np.float32)
    out[inside] = np.stack([shade, shade, shade * 1.05], -1)[inside]
    return np.clip(out, 0, 255).astype(np.uint8)


def paint_hand(rgb: np.ndarray, landmarks: np.ndarray, where: str) -> np.ndarray:
    """A skin-coloured hand-like blob (palm and four touching fingers, rounded shading, faint
    creases between fingers) over the mouth or the eyes, in the face's own skin colour."""
    c, w, h = _target(landmarks, where)
    col = skin_colour(rgb, landmarks).astype(np.float32)
    hgt, wid = rgb.shape[:2]
    finger = (0.3 if where == "mouth" else 0.14) * w
    length = (1.3 if where == "mouth" else 0.75) * w
    mask = np.zeros((hgt, wid), np.uint8)
    shade = np.zeros((hgt, wid), np.float32)
    yy, xx = np.mgrid[0:hgt, 0:wid].astype(np.float32)
    for k in range(4):
        cy = c[1] + (k - 1.5) * finger
        cx = c[0] - 0.15 * length
        m = np.zeros_like(mask)
        cv2.ellipse(m, (int(cx), int(cy)), (int(length / 2), int(finger * 0.62)), 0, 0, 360, 1, -1)
        # Rounded finger: brighter along its axis, a little darker at its sides.
        profile = 1.0 - 0.18 * np.clip(np.abs(yy - cy) / (finger * 0.62), 0, 1) ** 2
        shade = np.where(m > 0, np.maximum(shade, profile), shade)
        mask |= m
    palm = np.zeros_like(mask)
    cv2.ellipse(palm, (int(c[0] + 0.5 * length), int(c[1])), (int(0.4 * length), int(2.4 * finger)), 0, 0, 360, 1, -1)
    shade = np.where((palm > 0) & (shade == 0), 0.95, shade)
    mask |= palm
    out = rgb.astype(np.float32)
    inside = mask > 0
    out[inside] = (shade[..., None] * col)[inside]
    return np.clip(out, 0, 255).astype(np.uint8)
