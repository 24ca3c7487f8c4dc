"""A labelled development set for the curation filters: real media plus degraded variants.

``portrait devset --base BASE.csv --media ROOT --out DIR`` reads a list of real files with their
labels (``clean``: a curator keeps it; ``reject``: a curator rejects it, with the acceptable
reasons; ``skip``: ambiguous, left out), and writes to ``DIR/media`` the clean files (videos
trimmed to ``--clean-seconds``) and, for each clean file, deterministic degradations of the kinds
a curator rejects at a glance: dark, blown out, an opaque occluder over mouth and nose or over
the eyes that follows the face (flat, textured, hand, microphone, phone, sticker; and opaque
black or white patches over the eyes, which clip), the background replaced by moving texture,
downscaled 4x, downscaled 4x and upscaled back (bicubic, and bilinear for 480-720 px sources),
downscaled 2x and upscaled back (480-720 px sources), strong blur, moderate blur at two strengths,
two people side by side; plus pictures and videos with no person (stills panned, and pans over
people-free regions of real videos) and animals (panned, and pasted onto moving backgrounds; a
primate among them). ``DIR/labels.csv`` says what the build should do with each file; ``portrait
eval`` (pipeline/evaluation/evaluate.py) compares a build of ``DIR/media`` with it.

Resolution and blur are labelled as a curator judges them, at training scale (a 512 crop whose
face is 160 px): a downscaled or down-and-up-scaled variant keeps the pixels of a source 2x or 4x
smaller, and is labelled by them against the build's own minimums (a 100-px face, a 256-px crop):
rejected under 90 % of either, kept from 110 % of the face and 100 % of the crop, and not made in
between (ambiguous). A blurred variant is rejected when its blur, carried to training scale, has a
sigma of at least 1 px (visibly soft there) and not made below that.

Degradations are parameterised by a seed derived from the file name, so the same input always
gives the same set, and styles vary across files (no filter can be tuned to one occluder).
The occluders are placed from the embedded face model's landmarks on every frame; every other
degradation is pure pixel arithmetic.
"""
from __future__ import annotations

import csv
import hashlib
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

# FaceMesh index sets: the build's own (the same model places the occluders as scores them).
from stages.face_geometry import BROWS, CHEEKS_DEVSET, CHIN, EYES, LIPS_OUTER, NOSE_BRIDGE

VIDEO_EXT = {".mp4", ".mov", ".mkv", ".webm", ".avi"}


# ------------------------------------------------------------------------------ video plumbing

# The devset keeps its own video I/O: it rewrites *every* frame of a file as PyAV decodes it,
# stored pixels as they are (no display rotation applied: the written file has none either). The
# build's decoder (stages/decode.py: VideoReader) picks frames by timestamp at a sampling rate,
# reads through decord first and applies the display rotation: used here, it would change the
# dev set's media. It has no writer to share.
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


def _read_image(path: Path) -> np.ndarray:
    """RGB in display orientation at full size. Not stages/decode.py's read_image: that one
    composites transparency over white and reduces to ``max_image_side``, which would change
    the degraded images (bench/devset_base.csv holds an RGBA photograph)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def _write_image(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


# ------------------------------------------------------------------------------ pixel degradations

def darken(src, dst, factor: float = 0.25, max_frames: int | None = None) -> Path:
    """Every pixel value times ``factor`` (an under-exposed shot)."""
    return map_video(src, dst, lambda i, rgb: dark_frame(rgb, factor), max_frames)


def dark_frame(rgb: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * factor + 0.5, 0, 255).astype(np.uint8)


def blown_frame(rgb: np.ndarray, gain: float) -> np.ndarray:
    """Over-exposure: gain and lift, so the face is mostly clipped white."""
    return np.clip(rgb.astype(np.float32) * gain + 70.0, 0, 255).astype(np.uint8)


def shrink_frame(rgb: np.ndarray, factor: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (max(2, round(w / factor)), max(2, round(h / factor))), interpolation=cv2.INTER_AREA)


def down_up_frame(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Reduced ``factor`` times and enlarged back (bicubic): upscaled low-resolution content."""
    h, w = rgb.shape[:2]
    return cv2.resize(shrink_frame(rgb, factor), (w, h), interpolation=cv2.INTER_CUBIC)


def blur_frame(rgb: np.ndarray, sigma_frac: float) -> np.ndarray:
    """Strong Gaussian blur, sigma a share of the frame diagonal (out of focus)."""
    sigma = sigma_frac * float(np.hypot(*rgb.shape[:2]))
    return cv2.GaussianBlur(rgb, (0, 0), sigma)


def soft_blur_frame(rgb: np.ndarray, sigma_frac: float) -> np.ndarray:
    """Moderate Gaussian blur, sigma a share of the frame's short side (slightly out of focus)."""
    return cv2.GaussianBlur(rgb, (0, 0), sigma_frac * float(min(rgb.shape[:2])))


def down_up_linear_frame(rgb: np.ndarray, factor: int, down: int = cv2.INTER_AREA) -> np.ndarray:
    """Reduced ``factor`` times (``down``) and enlarged back bilinearly: the cheap upscale of many
    players and editors, whose leaky kernel leaves energy above the small source's limit."""
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(2, round(w / factor)), max(2, round(h / factor))), interpolation=down)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


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


def photo_texture(height: int, width: int, seed: int) -> np.ndarray:
    """A crop of a photograph without people that scikit-image ships (bricks, gravel, grass,
    coffee, a rocket, a retina...), resized to ``height`` x ``width``: a real-image texture."""
    from skimage import data

    makers = [
        data.brick,
        data.gravel,
        data.grass,
        data.coffee,
        data.rocket,
        data.hubble_deep_field,
        data.immunohistochemistry,
        data.retina,
    ]
    rng = np.random.default_rng(seed)
    img = makers[int(rng.integers(len(makers)))]()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = img[..., :3]
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.3, 0.8))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return cv2.resize(np.ascontiguousarray(img[y0:y0 + side, x0:x0 + side]), (max(width, 2), max(height, 2)),
                      interpolation=cv2.INTER_AREA)


def green_mask(rgb: np.ndarray) -> np.ndarray:
    """Soft alpha (1 = green screen) of a chroma-key background."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    key = (hsv[..., 0] >= 35) & (hsv[..., 0] <= 90) & (hsv[..., 1] >= 60) & (hsv[..., 2] >= 40)
    key = cv2.morphologyEx(key.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    alpha = cv2.GaussianBlur(key.astype(np.float32), (0, 0), 1.0)
    return alpha[..., None]


def replace_green_background(src, dst, texture_seed: int = 0, speed_px: float = 3.0,
                             max_frames: int | None = None) -> Path:
    """Key out a flat green background and put a drifting texture behind the person."""
    rate, frames = _frames(src, max_frames)
    mover = _MovingTexture(texture_seed, speed_px)
    return _write(dst, rate, (mover.composite(i, rgb, green_mask(rgb)) for i, rgb in enumerate(frames)))


class _MovingTexture:
    """A texture behind the person that drifts ``speed_px`` pixels per frame in a seed-chosen
    direction with a little wobble (a hand-held camera, wind-blown foliage, traffic)."""

    def __init__(self, seed: int, speed_px: float | None = None, photo: bool = False, speed_frac: float | None = None):
        rng = np.random.default_rng(seed)
        self.angle = rng.uniform(0, 2 * np.pi)
        self.seed, self.speed, self.speed_frac, self.photo = seed, speed_px, speed_frac, photo
        self.tex: np.ndarray | None = None

    def composite(self, i: int, rgb: np.ndarray, alpha_bg: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        if self.speed is None:  # a share of the frame diagonal per frame: the same look at any size
            self.speed = self.speed_frac * float(np.hypot(h, w))
        self.vel = self.speed * np.array([np.cos(self.angle), np.sin(self.angle)])
        m = int(self.speed * 200) + 16  # room for ~200 frames of drift (degraded clips are short)
        if self.tex is None:
            make = photo_texture if self.photo else natural_texture
            self.tex = make(h + 2 * m, w + 2 * m, self.seed)
        off = self.vel * i + 1.5 * np.array([np.sin(i * 0.7), np.cos(i * 0.5)])
        ox, oy = int(np.clip(m + off[0], 0, 2 * m)), int(np.clip(m + off[1], 0, 2 * m))
        bg = self.tex[oy: oy + h, ox: ox + w].astype(np.float32)
        return np.clip(alpha_bg * bg + (1 - alpha_bg) * rgb, 0, 255).astype(np.uint8)


class _PersonMask:
    """Soft background alpha from mediapipe's general selfie segmentation model (square 256
    input; the build's background-motion score uses the other, landscape, model).

    The devset's own, on purpose: the build segments people twice (stages/faces.py: the general
    model on a face crop, for the human check; stages/quality.py: BackgroundMotion, the landscape
    model on a reduced frame), neither on the whole frame with this soft edge. Either would
    move the edge between person and moving texture, so the moving-background files would change."""

    def __init__(self):
        from stages.library_imports import import_mediapipe

        mp = import_mediapipe()

        self.seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def background(self, rgb: np.ndarray) -> np.ndarray:
        prob = self.seg.process(rgb).segmentation_mask
        person = cv2.GaussianBlur(np.clip((prob - 0.3) / 0.4, 0, 1).astype(np.float32), (0, 0), 1.5)
        return (1.0 - person)[..., None]

    def close(self):
        self.seg.close()


# ------------------------------------------------------------------------------ occluders

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
    for x, y in np.round(landmarks[CHEEKS_DEVSET]).astype(int):
        samples.append(rgb[max(y - 3, 0): min(y + 4, h), max(x - 3, 0): min(x + 4, w)].reshape(-1, 3))
    samples = [s for s in samples if s.size]
    return np.median(np.concatenate(samples), axis=0) if samples else np.array([180, 140, 120], np.float64)


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


@dataclass(frozen=True)
class Occluder:
    """One opaque occluder style, fixed for a whole file: it follows the face frame to frame.

    ``where``: 'mouth' (mouth and nose) or 'eyes' (both eyes and brows). ``fill``: 'flat' (one
    colour), 'skin' (the face's own colour, flat), 'photo' (a real-image texture), 'noise'
    (synthetic texture), 'hand', 'microphone', 'phone' (a dark slab with a lit screen),
    'sticker' (a bright disc or rounded rectangle with a printed motif), 'clip' (opaque black or
    white, by the seed: its pixels are crushed or blown, as a censor bar's)."""

    where: str
    fill: str
    seed: int

    def paint(self, rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
        if self.fill == "hand":
            return paint_hand(rgb, lm, self.where)
        if self.fill == "microphone":
            return paint_microphone(rgb, lm, angle_deg=40 + (self.seed % 5) * 20)
        rng = np.random.default_rng(self.seed)
        mask, (x0, y0, x1, y1) = self._shape(rgb.shape[:2], lm, rng)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return rgb
        hh, ww = y1 - y0, x1 - x0
        if self.fill in ("flat", "skin"):
            col = skin_colour(rgb, lm) if self.fill == "skin" else rng.integers(0, 256, 3)
            patch = np.broadcast_to(np.asarray(col, np.float32), (hh, ww, 3))
        elif self.fill == "clip":
            col = rng.integers(0, 9, 3) if self.seed % 2 else rng.integers(247, 256, 3)
            patch = np.broadcast_to(np.asarray(col, np.float32), (hh, ww, 3))
        elif self.fill == "photo":
            patch = photo_texture(hh, ww, self.seed).astype(np.float32)
        elif self.fill == "noise":
            patch = natural_texture(hh, ww, self.seed).astype(np.float32)
        elif self.fill == "phone":
            patch = np.full((hh, ww, 3), 25.0, np.float32)
            b = max(1, int(0.08 * min(hh, ww)))
            patch[b:-b, b:-b] = photo_texture(hh - 2 * b, ww - 2 * b, self.seed) * 0.8 + 30
        else:  # sticker: a bright print
            patch = np.full((hh, ww, 3), rng.integers(150, 256, 3), np.float32)
            yy, xx = np.mgrid[0:hh, 0:ww]
            stripes = (((xx + yy) // max(2, ww // 6)) % 2).astype(bool)
            patch[stripes] = rng.integers(0, 120, 3)
        out = rgb.astype(np.float32)
        region = out[y0:y1, x0:x1]
        m = mask[y0:y1, x0:x1, None]
        out[y0:y1, x0:x1] = m * patch + (1 - m) * region
        return np.clip(out, 0, 255).astype(np.uint8)

    def _shape(self, hw: tuple[int, int], lm: np.ndarray, rng) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """A mask (a rotated rectangle or ellipse, following the face's roll) and its bounds."""
        h, w = hw
        eyes = lm[EYES]
        roll = np.degrees(np.arctan2(*(eyes[16:].mean(0) - eyes[:16].mean(0))[::-1]))
        inter_eye = float(np.linalg.norm(eyes[16:].mean(0) - eyes[:16].mean(0)))
        if self.where == "mouth":
            top, bottom = lm[NOSE_BRIDGE], lm[CHIN]
            centre = (top + bottom) / 2 + (0, 0.05 * inter_eye)
            size = (inter_eye * rng.uniform(1.5, 1.9), float(np.linalg.norm(bottom - top)) * rng.uniform(0.85, 1.0))
        else:
            pts = np.concatenate([lm[EYES], lm[BROWS]])
            centre = pts.mean(0)
            size = (inter_eye * rng.uniform(2.0, 2.4), inter_eye * rng.uniform(0.7, 0.9))
        mask = np.zeros((h, w), np.float32)
        rect = ((float(centre[0]), float(centre[1])), (float(size[0]), float(size[1])), float(roll))
        if self.fill in ("sticker",) or rng.random() < 0.3:
            cv2.ellipse(mask, rect, 1.0, -1)
        else:
            cv2.fillConvexPoly(mask, np.round(cv2.boxPoints(rect)).astype(np.int32), 1.0)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            return mask, (0, 0, 0, 0)
        return mask, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


OCCLUDER_FILLS = {"mouth": ["flat", "skin", "photo", "noise", "hand", "microphone", "phone", "sticker"],
                  "eyes": ["flat", "skin", "photo", "noise", "hand", "sticker"]}


_DETECT_EVERY = 4  # full face detection every 4th frame while occluders follow the face


class _FaceTracker:
    """Landmarks of the main face on every frame, for occluders that follow it."""

    def __init__(self):
        from stages.faces import FaceAnalyzer

        self.analyzer = FaceAnalyzer()
        self.analyzer.setup()
        self.previous = None
        self.last = None
        self.n = 0

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        # The build's face code (FaceAnalyzer: detection, primary choice, mesh tracking); only this
        # loop is the devset's own. Full detection every 4th frame of the source (every frame is
        # degraded), the mesh follows the face in between. The build detects every
        # ``sampling.detect_every``-th *sampled* frame (default 3, at its sampling rate), a
        # different frame sequence; 4 stays because any other stride moves the occluders, and the
        # dev set must come out byte for byte as before.
        track = self.last if self.n % _DETECT_EVERY else None
        obs = self.analyzer.analyze(rgb, previous=self.previous, track=track)
        self.n += 1
        self.last = obs if obs.landmarks is not None else None
        self.previous = obs.boxes[obs.primary] if obs.primary is not None else None
        return obs.landmarks

    def close(self):
        self.analyzer.close()


# ------------------------------------------------------------------------------ the dev set

# Degradation -> reasons a curator would accept for rejecting it. Blur and upscaled content are
# the same loss of detail seen two ways, so either filter may catch either.
DEGRADATIONS: dict[str, set[str]] = {
    "dark": {"lighting"},
    "blown": {"lighting"},
    "occl_mouth": {"occlusion"},
    "occl_eyes": {"occlusion"},
    "occl_eyes_clip": {"occlusion"},
    "moving_bg": {"background_motion"},
    "down4": {"resolution"},
    "down4up": {"resolution", "blur"},
    "down4up_lin": {"resolution", "blur"},
    "down2up": {"resolution", "blur"},
    "blur": {"blur", "resolution"},
    "blur_mid": {"blur", "resolution"},
    "blur_low": {"blur", "resolution"},
    "two_people": {"multiple_faces"},
}
VIDEO_ONLY = {"moving_bg"}
# Degradations of 480-720 px sources only (the short side): the sizes where upscaled and mildly
# blurred talking heads are common, and where a 2x upscale may or may not be acceptable at 512.
MID_SIZE_ONLY = {"down4up_lin", "down2up"}
MID_SIZE = (480, 720)
# Variants labelled by the pixels or the sharpness a curator sees at training scale (see the
# module docstring): the source's scale factor, or the blur's sigma as a share of the short side.
SCALE_FACTOR = {"down4": 4, "down4up": 4, "down4up_lin": 4, "down2up": 2}
BLUR_SHORT_SIDE = {"blur_mid": (0.007, 0.009), "blur_low": (0.004, 0.006)}
# The curator's standard: the build's own minimums (stages/curate.py: Thresholds), at the crop
# and face sizes of the default training crop (stages/crop.py: CropConfig).
MIN_FACE_PX, MIN_CROP_PX = 100.0, 256.0
CROP_SCALE, TRAINING_FACE_SIDE = 3.2, 160.0
REJECT_BELOW, KEEP_FROM = 0.9, 1.1  # shares of the minimums: between them a variant is ambiguous
MIN_VISIBLE_BLUR = 1.0  # sigma (px) at training scale from which a curator sees the blur


def _seed(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def _blur_frac(kind: str, seed: int) -> float:
    """The moderate blur's sigma as a share of the short side, drawn from the file's seed."""
    return float(np.random.default_rng([seed, 1]).uniform(*BLUR_SHORT_SIDE[kind]))


def scaled_label(face: float, short: int, factor: float) -> str | None:
    """A source reduced ``factor`` times (and maybe enlarged back) keeps the pixels of a source
    that many times smaller: its face and its training crop (the crop scale times the face, at
    most the short side) shrink by the factor. Rejected under 90 % of the build's minimum face
    or crop, kept from 110 % of the face and 100 % of the crop (a 256-px source, as MEAD's, is
    kept), None (ambiguous) in between."""
    native_face = face / factor
    native_crop = min(CROP_SCALE * face, short) / factor
    if native_face < REJECT_BELOW * MIN_FACE_PX or native_crop < REJECT_BELOW * MIN_CROP_PX:
        return "rejected"
    if native_face >= KEEP_FROM * MIN_FACE_PX and native_crop >= MIN_CROP_PX:
        return "kept"
    return None


def short_side(path: Path) -> int:
    """The short side of a video's frames or of an image, in stored pixels."""
    if path.suffix.lower() in VIDEO_EXT:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            return int(min(s.width, s.height))
    from PIL import Image

    with Image.open(path) as im:
        return int(min(im.size))


@dataclass
class BaseItem:
    path: Path
    label: str  # clean | reject | skip
    reasons: set[str]
    note: str = ""

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_EXT


def read_base(csv_path: Path, media_root: Path) -> list[BaseItem]:
    items = []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#")):
            items.append(BaseItem(media_root / row["path"], row["label"].strip(),
                                  {r for r in row.get("reasons", "").split("|") if r}, row.get("note", "")))
    return items


class DevSetWriter:
    def __init__(self, out: Path, clean_seconds: float, degraded_seconds: float):
        self.media = out / "media"
        self.labels_path = out / "labels.csv"
        self.clean_s, self.degraded_s = clean_seconds, degraded_seconds
        self.rows: list[dict] = []
        self._tracker: _FaceTracker | None = None
        self._segmenter: _PersonMask | None = None
        self._faces: dict[Path, tuple[float | None, int]] = {}

    def label(self, dst: Path, expected: str, reasons: set[str], kind: str, base: str) -> None:
        self.rows.append({"file": dst.relative_to(self.media).as_posix(), "expected": expected,
                          "reasons": "|".join(sorted(reasons)), "kind": kind, "base": base})

    def tracker(self) -> _FaceTracker:
        self._tracker = self._tracker or _FaceTracker()
        return self._tracker

    def segmenter(self) -> _PersonMask:
        self._segmenter = self._segmenter or _PersonMask()
        return self._segmenter

    # -- clean and real rejects ----------------------------------------------------------
    def copy(self, item: BaseItem) -> None:
        sub = "videos" if item.is_video else "images"
        dst = self.media / sub / item.path.name
        if item.is_video:
            rate, _ = _frames(item.path, 1)
            dst = dst.with_suffix(".mp4")
            if _count_frames(item.path) > self.clean_s * float(rate) * 1.05:
                map_video(item.path, dst, lambda i, rgb: rgb, max_frames=int(self.clean_s * float(rate)))
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(item.path, dst)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(item.path, dst)
        self.label(dst, "kept" if item.label == "clean" else "rejected", item.reasons, item.label, item.path.name)

    # -- degradations ----------------------------------------------------------------------
    def degrade(self, item: BaseItem, kind: str, partner: BaseItem) -> None:
        seed = _seed(item.path.name + kind)
        expected = self._expected(item, kind, seed)
        if expected is None:
            return  # ambiguous at training scale: left out (module docstring)
        rng = np.random.default_rng(seed)
        fn = self._frame_fn(kind, seed, rng, partner)
        stem = f"{item.path.stem}__{kind}"
        if item.is_video:
            rate, _ = _frames(item.path, 1)
            dst = self.media / "videos" / f"{stem}.mp4"
            self._tracker_reset()
            map_video(item.path, dst, fn, max_frames=int(self.degraded_s * float(rate)))
        else:
            dst = _write_image(self.media / "images" / f"{stem}.png", fn(0, _read_image(item.path)))
        self.label(dst, expected, DEGRADATIONS[kind] if expected == "rejected" else set(), kind, item.path.name)

    def _expected(self, item: BaseItem, kind: str, seed: int) -> str | None:
        """'rejected', 'kept' or None (ambiguous) for a variant, as a curator judges it at
        training scale (module docstring); every other degradation is 'rejected'."""
        if kind not in SCALE_FACTOR and kind not in BLUR_SHORT_SIDE:
            return "rejected"
        face, short = self.source_face(item)
        if face is None:
            return None
        if kind in BLUR_SHORT_SIDE:
            sigma_train = _blur_frac(kind, seed) * short * TRAINING_FACE_SIDE / face
            return "rejected" if sigma_train >= MIN_VISIBLE_BLUR else None
        return scaled_label(face, short, SCALE_FACTOR[kind])

    def source_face(self, item: BaseItem) -> tuple[float | None, int]:
        """The clean source's face side (median landmark-box side over a few frames of the part
        the variants are made of) and its short side, in source pixels."""
        if item.path not in self._faces:
            if item.is_video:
                rate, _ = _frames(item.path, 1)
                n = _count_frames(item.path, int(self.degraded_s * float(rate)))
                picks = set(np.linspace(0, max(n - 1, 0), 5).astype(int).tolist())
                _, frames = _frames(item.path, n)
                rgbs = [rgb for i, rgb in enumerate(frames) if i in picks]
            else:
                rgbs = [_read_image(item.path)]
            from stages.faces import FaceAnalyzer

            analyzer = FaceAnalyzer(check_hands=False)
            analyzer.setup()
            try:
                sides = []
                for rgb in rgbs:
                    obs = analyzer.analyze(np.ascontiguousarray(rgb))
                    if obs.face_box is not None:
                        sides.append(float(max(obs.face_box[2] - obs.face_box[0], obs.face_box[3] - obs.face_box[1])))
            finally:
                analyzer.close()
            self._faces[item.path] = (float(np.median(sides)) if sides else None, int(min(rgbs[0].shape[:2])))
        return self._faces[item.path]

    def _tracker_reset(self):
        if self._tracker is not None:
            self._tracker.previous = self._tracker.last = None

    def _frame_fn(self, kind: str, seed: int, rng, partner: BaseItem) -> Callable[[int, np.ndarray], np.ndarray]:
        if kind == "dark":
            factor = rng.uniform(0.12, 0.25)
            return lambda i, rgb: dark_frame(rgb, factor)
        if kind == "blown":
            gain = rng.uniform(1.8, 2.5)
            return lambda i, rgb: blown_frame(rgb, gain)
        if kind == "down4":
            return lambda i, rgb: shrink_frame(rgb, 4)
        if kind == "down4up":
            return lambda i, rgb: down_up_frame(rgb, 4)
        if kind == "down4up_lin":
            down = cv2.INTER_AREA if seed % 2 else cv2.INTER_CUBIC
            return lambda i, rgb: down_up_linear_frame(rgb, 4, down)
        if kind == "down2up":
            return lambda i, rgb: down_up_frame(rgb, 2)
        if kind == "blur":
            frac = rng.uniform(0.008, 0.012)
            return lambda i, rgb: blur_frame(rgb, frac)
        if kind in BLUR_SHORT_SIDE:
            frac = _blur_frac(kind, seed)
            return lambda i, rgb: soft_blur_frame(rgb, frac)
        if kind in ("occl_mouth", "occl_eyes", "occl_eyes_clip"):
            where = kind.split("_")[1]
            fills = OCCLUDER_FILLS[where]
            occ = Occluder(where, "clip" if kind.endswith("_clip") else fills[seed % len(fills)], seed)
            tracker = self.tracker()
            last: dict = {}

            def occlude(i, rgb):
                lm = tracker.landmarks(rgb)
                lm = lm if lm is not None else last.get("lm")  # keep covering where the model loses the face
                if lm is None:
                    return rgb
                last["lm"] = lm
                return occ.paint(rgb, lm)
            return occlude
        if kind == "moving_bg":
            mover = _MovingTexture(seed, speed_frac=rng.uniform(0.003, 0.006), photo=bool(seed % 2))
            seg = self.segmenter()
            return lambda i, rgb: mover.composite(i, rgb, seg.background(rgb))
        if kind == "two_people":
            if partner.is_video:
                _, frames = _frames(partner.path)
                it = iter(frames)
                still = None
            else:
                it, still = None, _read_image(partner.path)
            state: dict = {"last": still}

            def side_by_side(i, rgb):
                other = state["last"]
                if it is not None:
                    other = next(it, None)
                    other = other if other is not None else state["last"]
                    state["last"] = other
                if other is None:
                    return rgb
                h = rgb.shape[0]
                if other.shape[0] > h:  # shrink to the same height; never enlarge (that would be upscaled content)
                    other = cv2.resize(
                        other, (max(2, round(other.shape[1] * h / other.shape[0])), h), interpolation=cv2.INTER_AREA
                    )
                else:
                    top = (h - other.shape[0]) // 2
                    other = cv2.copyMakeBorder(other, top, h - other.shape[0] - top, 0, 0, cv2.BORDER_CONSTANT)
                return np.ascontiguousarray(np.concatenate([rgb, other], axis=1))
            return side_by_side
        raise ValueError(f"unknown degradation {kind!r}")

    # -- pictures without a person -------------------------------------------------------------
    def no_face(self, fixtures_animals: list[Path], media_root: Path | None = None) -> None:
        """Photographs without people (no_person) and animals, as images and panned videos; pans
        over people-free regions of real videos (no_person); animals cut from real media, and
        animal photos, moving over a drifting background (animal: a primate among them)."""
        from skimage import data

        scenes = {"coffee": data.coffee(), "rocket": data.rocket(), "retina": data.retina(),
                  "brick": np.stack([data.brick()] * 3, -1), "hubble": data.hubble_deep_field()}
        animals = {"chelsea_cat": data.chelsea()}
        # Animal photos already in the base list are copied as they are; here they also move.
        moving_only = {p.stem for p in fixtures_animals}
        for p in fixtures_animals:
            animals[p.stem] = _read_image(p)
        for group, pics in (("no_person", scenes), ("animal", animals)):
            for name, rgb in pics.items():
                if name not in moving_only:
                    dst = _write_image(self.media / "images" / f"{group}__{name}.png", rgb[..., :3])
                    self.label(dst, "rejected", {"no_face"}, group, name)
                vdst = self.media / "videos" / f"{group}__{name}_pan.mp4"
                _write(vdst, Fraction(25), _pan(rgb[..., :3], int(25 * self.degraded_s)))
                self.label(vdst, "rejected", {"no_face"}, group, name)
        n = int(25 * self.degraded_s)
        # Animals over a moving background: the scene moves as in the moving-background variants,
        # but there is no person in it (a curator names no_face, not background motion).
        movers = {"chelsea_cat": data.chelsea()}
        movers.update({p.stem: _read_image(p) for p in fixtures_animals})
        if media_root is not None:
            for rel, crops in ANIMAL_CROPS.items():
                if (media_root / rel).is_file():
                    pic = _read_image(media_root / rel)
                    for name, ((x0, y0, x1, y1), scale) in crops.items():
                        cut = np.ascontiguousarray(pic[y0:y1, x0:x1, :3])
                        movers[name] = cv2.resize(cut, None, fx=scale, fy=scale, interpolation=cv2.INTER_LANCZOS4)
            for rel, (name, region) in NO_PERSON_REGIONS.items():
                if (media_root / rel).is_file():
                    vdst = self.media / "videos" / f"no_person__{name}.mp4"
                    rate, frames = _frames(media_root / rel, n)
                    _write(vdst, rate, _pan_region(frames, region, n))
                    self.label(vdst, "rejected", {"no_face"}, "no_person", rel)
        for name, rgb in movers.items():
            vdst = self.media / "videos" / f"animal__{name}_moving.mp4"
            _write(vdst, Fraction(25), _on_moving_background(rgb[..., :3], n, _seed(name)))
            self.label(vdst, "rejected", {"no_face"}, "animal", name)

    def close(self) -> None:
        for m in (self._tracker, self._segmenter):
            if m is not None:
                m.close()
        self.rows.sort(key=lambda r: r["file"])
        with open(self.labels_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["file", "expected", "reasons", "kind", "base"])
            w.writeheader()
            w.writerows(self.rows)


# People-free regions of real fixture videos (x0, y0, x1, y1, source pixels), panned over as
# no-person videos with motion: the room left of the woman in s18, the garden above the seated
# woman in latentsync_demo1.
NO_PERSON_REGIONS = {"media/videos/s18.mp4": ("s18_room", (0, 0, 400, 720)),
                     "media-extra/videos/latentsync_demo1.mp4": ("latentsync_garden", (0, 0, 1080, 540))}
# Animals cut from real fixture media (x0, y0, x1, y1 and an enlargement), moved over a drifting
# background: the spider monkey (a primate) and the black cat beside Frida Kahlo.
ANIMAL_CROPS = {"media-extra/images/sadtalker_art12_frida.png": {"frida_monkey": ((0, 180, 118, 470), 1.5),
                                                                 "frida_cat": ((330, 250, 504, 470), 1.5)}}


def _pan_region(frames: Iterator[np.ndarray], region: tuple[int, int, int, int], n: int) -> Iterator[np.ndarray]:
    """A window (0.8 of the region's short side, native pixels) panning across ``region`` of
    each frame in turn: a camera moving over a scene without people."""
    x0, y0, x1, y1 = region
    side = int(0.8 * min(x1 - x0, y1 - y0)) // 2 * 2
    for i, rgb in enumerate(frames):
        h, w = rgb.shape[:2]
        rx1, ry1 = min(x1, w), min(y1, h)
        t = i / max(n - 1, 1)
        x = x0 + int((rx1 - x0 - side) * t)
        y = y0 + int((ry1 - y0 - side) * (0.5 + 0.5 * np.sin(2 * np.pi * t)))
        yield np.ascontiguousarray(rgb[y: y + side, x: x + side])


def _on_moving_background(rgb: np.ndarray, n: int, seed: int, side: int = 512) -> Iterator[np.ndarray]:
    """``rgb`` (an animal photo or cut-out, native pixels) on a ``side`` canvas whose drifting
    texture background moves 0.3-0.6 % of the diagonal a frame, the picture itself swaying a
    little: an animal in a video with motion."""
    h, w = rgb.shape[:2]
    if max(h, w) > side:
        s = side / max(h, w)
        rgb = cv2.resize(rgb, (max(2, int(w * s)), max(2, int(h * s))), interpolation=cv2.INTER_AREA)
        h, w = rgb.shape[:2]
    rng = np.random.default_rng(seed)
    mover = _MovingTexture(seed, speed_frac=rng.uniform(0.003, 0.006), photo=bool(seed % 2))
    for i in range(n):
        canvas = np.zeros((side, side, 3), np.uint8)
        dx = int((side - w) / 2 + 0.05 * side * np.sin(2 * np.pi * i / max(n, 1)))
        dy = int((side - h) / 2 + 0.03 * side * np.cos(2 * np.pi * i / max(n, 1)))
        dx, dy = min(max(dx, 0), side - w), min(max(dy, 0), side - h)
        canvas[dy: dy + h, dx: dx + w] = rgb
        alpha = np.ones((side, side, 1), np.float32)
        alpha[dy: dy + h, dx: dx + w] = 0.0
        yield mover.composite(i, canvas, alpha)


def _pan(rgb: np.ndarray, n: int) -> Iterator[np.ndarray]:
    """A slow pan and zoom across a still picture (a camera moving over a scene)."""
    h, w = rgb.shape[:2]
    side = int(min(h, w) * 0.8) // 2 * 2
    for i in range(n):
        t = i / max(n - 1, 1)
        x0 = int((w - side) * (0.2 + 0.6 * t))
        y0 = int((h - side) * (0.5 + 0.3 * np.sin(2 * np.pi * t)) * 0.9)
        yield np.ascontiguousarray(
            cv2.resize(rgb[y0 : y0 + side, x0 : x0 + side], (384, 384), interpolation=cv2.INTER_AREA)
        )


def make_devset(base_csv: Path, media_root: Path, out: Path, kinds: list[str] | None = None,
                clean_seconds: float = 10.0, degraded_seconds: float = 4.0, limit: int | None = None,
                with_no_face: bool = True, progress: bool = True, workers: int | None = None) -> Path:
    """Write the development set; returns the labels CSV path."""
    items = [it for it in read_base(base_csv, media_root) if it.label != "skip"]
    missing = [str(it.path) for it in items if not it.path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} base file(s) missing, e.g. {missing[0]}")
    kinds = list(DEGRADATIONS) if kinds is None else kinds
    unknown = set(kinds) - set(DEGRADATIONS)
    if unknown:
        raise ValueError(f"unknown degradation(s): {sorted(unknown)}; known: {sorted(DEGRADATIONS)}")
    clean = [it for it in items if it.label == "clean"]
    if limit is not None:
        clean = clean[:limit]
        items = clean + [it for it in items if it.label != "clean"][:limit]
    jobs = []
    for k, it in enumerate(clean):
        # The second person comes from another clean file of the same kind (video or image).
        same = [o for o in clean if o.is_video == it.is_video and o.path != it.path] or [it]
        mid = MID_SIZE[0] <= short_side(it.path) <= MID_SIZE[1]
        jobs.append((it, same[k % len(same)], [kd for kd in kinds if (it.is_video or kd not in VIDEO_ONLY)
                                               and (mid or kd not in MID_SIZE_ONLY)]))
    writer = DevSetWriter(out, clean_seconds, degraded_seconds)
    try:
        for it in items:
            writer.copy(it)
        if with_no_face:
            writer.no_face([it.path for it in items if it.label == "reject" and it.reasons == {"no_face"}
                            and not it.is_video], media_root)
        # One process per core: each degrades whole files (its own face and person models).
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))) as pool:
            for k, rows in enumerate(
                pool.imap_unordered(_degrade_job, [(out, clean_seconds, degraded_seconds, j) for j in jobs])
            ):
                writer.rows.extend(rows)
                if progress:
                    print(f"devset: {k + 1}/{len(jobs)} clean files degraded", flush=True)
    finally:
        writer.close()
    return writer.labels_path


def _degrade_job(args) -> list[dict]:
    out, clean_s, degraded_s, (item, partner, kinds) = args
    writer = DevSetWriter(out, clean_s, degraded_s)
    try:
        for kind in kinds:
            writer.degrade(item, kind, partner)
    finally:
        for m in (writer._tracker, writer._segmenter):
            if m is not None:
                m.close()
    return writer.rows
