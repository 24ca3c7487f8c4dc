"""Per-frame quality scores of the primary face: occlusion, lighting, blur, background motion.

Every scorer takes a full decoded RGB uint8 frame (display orientation, any size) and, where it
looks at the face, the primary face's 478 x 2 mediapipe FaceMesh landmarks in frame pixels. The
face is first resampled so that its landmark box is ``FACE_SIDE`` pixels, which makes every score
independent of the source resolution and keeps the cost fixed (a few milliseconds a frame:
bench/bench_profile.py tables each scorer).
Verdicts are not made here: the clip stage aggregates these raw scores and compares them with
the thresholds of the build config.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from manifests.errors import PortraitError

from .face_geometry import (  # FaceMesh (refined, 478 points) index sets, one definition each
    BRIDGE,
    CHEEKS,
    EYE_CORNERS,
    FACE_OVAL,
    FOREHEAD,
    FOREHEAD_TOP,
    INNER_LOWER,
    INNER_UPPER,
    LIPS_INNER,
    LIPS_OUTER,
    LOWER_CHEEKS,
    NOSE,
    UPPER_CHEEKS,
)
from .library_imports import import_mediapipe

FACE_SIDE = 128  # the landmark box of the face is resampled to this side before scoring
_MARGIN = 0.12  # context around the landmark box, share of its side

# Cut-offs that shape the scores the verdicts judge, one place per scorer. A cue ramp (lo, hi) is
# 0 at or below lo and 1 at or above hi (``_ramp``); figures in docs/filters.md.
# occlusion: skin that must show next to the mouth and eyes, and hands over them
_NOSE_SKIN = (0.1, 0.4)  # skin-like share around the nose: a hand, mic or mask over the mouth covers it too
_BRIDGE_SKIN = (0.15, 0.45)  # skin-like share between the eyes: a bar or patch over both eyes covers it
_HAND_COVER = (0.15, 0.4)  # share of the lips or of an eye under a hand's landmarks: partly covered is not covered
_EYE_AXES = (0.6, 0.3)  # half-axes of the region read around an eye, in eye widths: open or closed alike
# occlusion: does the mouth still look like a mouth (each cue relative to the face's own contrast)
_LIP_DETAIL = (0.08, 0.3)  # luma spread on the lips: lips are among the most structured parts of a face
_LIP_EDGES = (0.15, 0.6)  # mean gradient on the lips over the face's 75th percentile: a patch is flat
_MOUTH_LINE = (0.05, 0.3)  # how much darker the line between the lips is than the lips
_TEETH_LINE = (0.3, 0.6)  # how much brighter an open mouth's teeth are than the lips
_COLOUR_FACE = 6.0  # skin chroma above which the face has colour (greyscale photos skip the colour cues)
_LIP_CHROMA = (0.2, 0.6)  # lip chroma over skin chroma: dark, metallic or neutral objects have none
_LIP_REDNESS = (1.0, 4.0)  # lips' a* above the skin around them (a partial cue: paintings, pale lips)
_REDNESS_FLOOR, _REDNESS_WEIGHT = 0.55, 0.45  # redness scales visibility from 0.55 to 1: alone it never occludes
# occlusion: does an eye still look like an eye
_EYE_DETAIL = (0.3, 0.8)  # 5-95 percentile spread in the eye region: a hand or patch is flat
_EYE_DARK = (0.5, 1.1)  # how much darker than the cheeks its darkest pixels are (iris, pupil, lashes)
# lighting
_CRUSHED, _BLOWN = 16, 240  # luma below / above which a face pixel is crushed / blown ('clipped')
# detail_4x: whitened spectral energy just above a 4x-smaller source's limit over just below it
_ABOVE_4X = (0.14, 0.22)  # cycles/px, above a 4x source's 0.125 limit
_BELOW_4X = (0.06, 0.11)  # cycles/px, below it
_MIN_SPECTRUM = 48  # faces under this many native pixels give NaN: too few samples (min_face_px judges them)
# mirror_4x: phase coherence of the spectrum above a 4x source's limit with its mirror image below it
_MIRROR_BAND = (0.125, 0.22)  # cycles/px above the limit whose mirror 0.25 - f is read
# detail_train: whitened spectral power of the face at training scale, fine band over a reference band
_TRAIN_FINE = (0.20, 0.30)  # cycles/px: a blur of sigma 1 px at training scale takes 10-15 dB off it
_TRAIN_REF = (0.06, 0.12)  # cycles/px: low enough that such a blur takes only ~1 dB off it
# where pixels are read, as shares of the face crop's side
_SKIN_PATCH = 0.025  # half-side of the skin samples around landmarks: a few pixels of skin, no edges
_CHEEK_PATCH = 0.03  # half-side of the cheek squares the skin colour is taken from
_BORDER = 0.03  # the face hull is eroded this much: the face/background border is not read as face
_MOUTH_RING = 0.2  # the ring around the lips compared with them, in mouth widths
_PICTURE_SIDE = 256  # a faceless picture is reduced to this side for its sharpness (picture_sharpness)


class QualityInputError(PortraitError, ValueError):
    """Bad input to a scorer (wrong frame or landmark shape)."""


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at or below lo, 1 at or above hi, linear between."""
    return float(min(max((x - lo) / (hi - lo), 0.0), 1.0))


def _check(frame_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    if (
        not isinstance(frame_rgb, np.ndarray)
        or frame_rgb.ndim != 3
        or frame_rgb.shape[2] != 3
        or frame_rgb.dtype != np.uint8
    ):
        raise QualityInputError("frame must be an HxWx3 uint8 RGB array")
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[1] != 2 or lm.shape[0] < 468:
        raise QualityInputError(f"landmarks must be the (478, 2) FaceMesh points, got shape {lm.shape}")
    if not np.isfinite(lm).all():
        raise QualityInputError("landmarks contain NaN or infinite values")
    return lm


@dataclass
class _Face:
    """The face resampled so its landmark box side is FACE_SIDE, with landmarks in that image.

    Its masks and colour conversions are made once and shared by the scorers that read them
    (read-only arrays): several scorers look at the same face oval, lips, hull, L*a*b* and luma."""

    rgb: np.ndarray
    pts: np.ndarray
    scale: float  # resampled pixels per source pixel
    origin: tuple[int, int] = (0, 0)  # source pixel at the resampled image's top-left corner
    _made: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb.shape[:2]

    def _once(self, key, make) -> np.ndarray:
        out = self._made.get(key)
        if out is None:
            out = self._made[key] = make()
            out.flags.writeable = False
        return out

    def polygon(self, idx: list[int]) -> np.ndarray:
        def make():
            m = np.zeros(self.shape, np.uint8)
            cv2.fillPoly(m, [np.round(self.pts[idx]).astype(np.int32)], 1)
            return m.astype(bool)
        return self._once(("polygon", tuple(idx)), make)

    def hull(self) -> np.ndarray:
        def make():
            m = np.zeros(self.shape, np.uint8)
            cv2.fillConvexPoly(m, cv2.convexHull(np.round(self.pts[:468]).astype(np.int32)), 1)
            return m.astype(bool)
        return self._once("hull", make)

    def lab(self) -> np.ndarray:
        """L* 0..100, a*, b* centred on 0 (float32, H x W x 3)."""
        return self._once("lab", lambda: _lab(self.rgb))

    def luma(self) -> np.ndarray:
        """BT.601 luma, 0..255 float32."""
        return self._once("luma", lambda: _luma(self.rgb))


def _normalised_face(frame_rgb: np.ndarray, lm: np.ndarray, side: float = FACE_SIDE) -> _Face:
    lo, hi = lm[:468].min(0), lm[:468].max(0)
    size = max(float(np.max(hi - lo)), 1.0)
    # Integer source box around the landmark box (replicated where it leaves the frame).
    ix0 = int(math.floor(lo[0] - _MARGIN * size))
    iy0 = int(math.floor(lo[1] - _MARGIN * size))
    n = int(math.ceil(size * (1 + 2 * _MARGIN))) + 1
    h, w = frame_rgb.shape[:2]
    x0, y0, x1, y1 = max(ix0, 0), max(iy0, 0), min(ix0 + n, w), min(iy0 + n, h)
    if x1 <= x0 or y1 <= y0:  # the box lies off the frame: replicated border = clamped indices
        ys, xs = np.clip(np.arange(iy0, iy0 + n), 0, h - 1), np.clip(np.arange(ix0, ix0 + n), 0, w - 1)
        box = frame_rgb[ys[:, None], xs[None, :]]
    else:
        # Only the box's part of the frame is padded (where it leaves the frame), never the
        # whole frame: the same pixels, replicated from the same frame edges.
        box = frame_rgb[y0:y1, x0:x1]
        if (x0, y0, x1, y1) != (ix0, iy0, ix0 + n, iy0 + n):
            box = cv2.copyMakeBorder(box, y0 - iy0, iy0 + n - y1, x0 - ix0, ix0 + n - x1, cv2.BORDER_REPLICATE)
    s = side / size
    out = max(8, int(round(n * s)))
    # Area averaging when shrinking (no aliasing), bicubic when enlarging a small face (as a
    # training crop enlarges it).
    rgb = cv2.resize(box, (out, out), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    s = out / n
    return _Face(rgb=np.ascontiguousarray(rgb), pts=(lm - [ix0, iy0]) * s, scale=s, origin=(ix0, iy0))


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma, 0..255 float32."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


# ----------------------------------------------------------------------------------- occlusion

def occlusion_score(frame_rgb: np.ndarray, landmarks: np.ndarray, hands: list | None = None) -> dict[str, float]:
    """How covered the mouth and the eyes are: ``{"mouth": 0..1, "eyes": 0..1}``, 1 = covered.

    FaceMesh places the mouth and eyes even where something covers them, so the question is
    whether the pixels there still look like a mouth / an eye. Cues, all relative to the face
    itself (so lighting, skin tone and resolution cancel out):

    - detail: lips and eyes are the most structured parts of a face; an opaque patch of any
      colour (skin-toned included) is flat there.
    - mouth line: where the lips meet (or the open mouth) is darker than the lips; a hand, a
      microphone or a patch has no such line at the predicted place.
    - lip colour: lips are at least as saturated as the cheeks; dark or metallic objects
      (microphones) and neutral patches are not. Skipped on greyscale faces.
    - eye darkness: an eye (open or closed: iris, pupil, lashes) holds pixels clearly darker
      than the cheeks; a hand or a light patch does not.

    Each cue is a soft ramp to [0, 1]; a region is visible when all its cues are, and the score
    is 1 - visibility. ``eyes`` is the worse of the two eyes (one covered eye counts).
    """
    return occlusion_of(_normalised_face(frame_rgb, _check(frame_rgb, landmarks)), hands or [])


def occlusion_of(face: _Face, hands: list) -> dict[str, float]:
    """Occlusion of the mouth and of the eyes on a normalised face, the worst of three views:

    - the pixels where the mesh puts the mouth and eyes no longer look like them
      (``_occlusion``: detail, mouth line or teeth, lip colour, eye darkness);
    - skin that must be visible next to them is not skin: the nose (covered with the mouth by
      a hand, a microphone, a phone, a mask) and the bridge between the eyes (covered by a bar
      or glasses-sized patch over both eyes), compared with the face's own skin colour read
      far from each (forehead and upper cheeks for the nose; forehead top and lower cheeks for
      the bridge), so a textured or coloured patch counts even where it has lip-like colours
      or eye-like detail;
    - a hand (mediapipe Hands, from the face stage) covers the lips or an eye.
    """
    occ = _occlusion(face)
    lab = face.lab()
    oval = face.polygon(FACE_OVAL)
    nose = _skin_share(face, lab, oval, NOSE, FOREHEAD + UPPER_CHEEKS)
    bridge = _skin_share(face, lab, oval, BRIDGE, FOREHEAD_TOP + LOWER_CHEEKS)
    lips = cv2.dilate(face.polygon(LIPS_OUTER).astype(np.uint8), _disc(2)).astype(bool)
    hand_eyes = max(_hand_cover(face, hands, _eye_ellipse(face, o, i, *_EYE_AXES)) for o, i in EYE_CORNERS)
    hand_mouth = _hand_cover(face, hands, lips)
    occ["mouth"] = max(occ["mouth"], 1.0 - _ramp(nose, *_NOSE_SKIN), _ramp(hand_mouth, *_HAND_COVER))
    occ["eyes"] = max(occ["eyes"], 1.0 - _ramp(bridge, *_BRIDGE_SKIN), _ramp(hand_eyes, *_HAND_COVER))
    return occ


def _lab(rgb: np.ndarray) -> np.ndarray:
    """L* 0..100, a*, b* centred on 0 (float32)."""
    lab8 = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    return np.stack([lab8[..., 0] * (100.0 / 255.0), lab8[..., 1] - 128.0, lab8[..., 2] - 128.0], -1)


def _skin_share(face: _Face, lab: np.ndarray, oval: np.ndarray, region: list[int], reference: list[int]) -> float:
    """Share of the pixels around ``region`` landmarks that look like the skin around
    ``reference`` landmarks (1 when either is too small to judge: no evidence)."""
    r = max(2, int(round(FACE_SIDE * _SKIN_PATCH)))
    ref = _samples(face, reference, r) & oval
    reg = _samples(face, region, r) & oval
    if ref.sum() < 10 or reg.sum() < 5:
        return 1.0
    return float(_skin_like(lab, ref, reg).mean())


def _eye_ellipse(face: _Face, outer: int, inner: int, rx: float, ry: float) -> np.ndarray:
    p0, p1 = face.pts[outer], face.pts[inner]
    width = float(np.linalg.norm(p1 - p0))
    centre = (p0 + p1) / 2
    angle = math.degrees(math.atan2(p1[1] - p0[1], p1[0] - p0[0]))
    m = np.zeros(face.shape, np.uint8)
    cv2.ellipse(m, (int(round(centre[0])), int(round(centre[1]))),
                (max(int(round(rx * width)), 2), max(int(round(ry * width)), 1)), angle, 0, 360, 1, -1)
    return m.astype(bool)


def _occlusion(face: _Face) -> dict[str, float]:
    lab = face.lab()
    lum = np.ascontiguousarray(lab[..., 0])  # L* 0..100
    a, b = lab[..., 1], lab[..., 2]
    smooth = cv2.GaussianBlur(lum, (0, 0), 1.0)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1)
    grad = cv2.magnitude(gx, gy)

    oval = face.polygon(FACE_OVAL)
    if oval.sum() < 50:
        oval = face.hull()
    spread = float(lum[oval].std()) + 1.0  # the face's own contrast (L* units)
    grad_ref = float(np.percentile(grad[oval], 75)) + 1e-3
    skin = _skin_sample(face)
    skin_l = float(np.median(lum[skin]))
    skin_a, skin_b = float(np.median(a[skin])), float(np.median(b[skin]))
    skin_chroma = math.hypot(skin_a, skin_b)

    mouth = 1.0 - _mouth_visibility(face, lum, smooth, a, b, grad, spread, grad_ref, skin_chroma)
    eye_occ = [1.0 - _eye_visibility(face, smooth, outer, inner, spread, skin_l) for outer, inner in EYE_CORNERS]
    return {"mouth": float(mouth), "eyes": float(max(eye_occ))}


def _skin_sample(face: _Face) -> np.ndarray:
    """Small squares at the cheek landmarks (within the face)."""
    h, w = face.shape
    r = max(2, int(round(FACE_SIDE * _CHEEK_PATCH)))
    m = np.zeros((h, w), bool)
    for x, y in np.round(face.pts[CHEEKS]).astype(int):
        m[max(y - r, 0): min(y + r, h), max(x - r, 0): min(x + r, w)] = True
    if m.sum() < 10:
        m[h // 3: 2 * h // 3, w // 3: 2 * w // 3] = True
    return m


def _mouth_visibility(face, lum, smooth, a, b, grad, spread, grad_ref, skin_chroma) -> float:
    lips = face.polygon(LIPS_OUTER)
    inner = face.polygon(LIPS_INNER)
    band = lips & ~inner  # the lips themselves, without the open mouth
    if lips.sum() < 12 or band.sum() < 6:
        return 1.0  # mouth too small to judge at this scale (strong profile): no evidence either way
    detail = min(
        _ramp(float(lum[lips].std()) / spread, *_LIP_DETAIL), _ramp(float(grad[lips].mean()) / grad_ref, *_LIP_EDGES)
    )
    # Mouth line: the midline between the inner lip contours, versus the lips around it.
    mid = (face.pts[INNER_UPPER] + face.pts[INNER_LOWER]) / 2
    xy = np.clip(np.round(mid).astype(int), 0, np.array(face.shape[::-1]) - 1)
    # The darkest value a couple of pixels across the predicted line: landmarks are off by a pixel
    # or two, and pressed lips leave only a thin line.
    darkest = cv2.erode(smooth, np.ones((5, 1), np.uint8))
    line_l = float(np.median(darkest[xy[:, 1], xy[:, 0]]))
    band_l = float(np.median(lum[band]))
    line = _ramp((band_l - line_l) / spread, *_MOUTH_LINE)
    # An open mouth showing teeth has a bright, not a dark, midline: either contrast with the
    # lips is a mouth; a patch or a hand has neither.
    brightest = cv2.dilate(smooth, np.ones((5, 1), np.uint8))
    teeth_l = float(np.median(brightest[xy[:, 1], xy[:, 0]]))
    line = max(line, _ramp((teeth_l - band_l) / spread, *_TEETH_LINE))
    colour = redness = 1.0
    if skin_chroma > _COLOUR_FACE:  # a colour face (greyscale photos skip the colour cues)
        # Lips are at least about as saturated as the cheeks: dark, metallic or neutral objects are not.
        lip_chroma = float(np.median(np.hypot(a[band], b[band])))
        colour = _ramp(lip_chroma / skin_chroma, *_LIP_CHROMA)
        # Lips are redder than the skin right around them; a hand over the mouth is not. Only a
        # partial cue (paintings, statues, pale lips): alone it never makes a mouth occluded.
        core = cv2.erode(band.astype(np.uint8), _disc(1)).astype(bool)
        core = core if core.sum() >= 5 else band
        mouth_w = float(np.linalg.norm(face.pts[61] - face.pts[291]))
        lips_u8 = lips.astype(np.uint8)
        ring = cv2.dilate(lips_u8, _disc(max(3, int(_MOUTH_RING * mouth_w)))).astype(bool) & ~cv2.dilate(
            lips_u8, _disc(2)
        ).astype(bool)
        if ring.sum() >= 10:
            redness = _REDNESS_FLOOR + _REDNESS_WEIGHT * _ramp(
                float(np.median(a[core]) - np.median(a[ring])), *_LIP_REDNESS)
    return detail * line * colour * redness


def _eye_visibility(face, smooth, outer, inner, spread, skin_l) -> float:
    p0, p1 = face.pts[outer], face.pts[inner]
    width = float(np.linalg.norm(p1 - p0))
    if width < 4:
        return 1.0  # eye seen edge-on (profile): nothing to judge
    # A fixed-aspect ellipse around the eye, the same whether the eye is open or closed.
    centre = (p0 + p1) / 2
    angle = math.degrees(math.atan2(p1[1] - p0[1], p1[0] - p0[0]))
    m = np.zeros(face.shape, np.uint8)
    cv2.ellipse(
        m,
        (int(round(centre[0])), int(round(centre[1]))),
        (max(int(round(_EYE_AXES[0] * width)), 2), max(int(round(_EYE_AXES[1] * width)), 1)),
        angle,
        0,
        360,
        1,
        -1,
    )
    region = smooth[m.astype(bool)]
    if region.size < 8:
        return 1.0
    p5, p95 = np.percentile(region, [5, 95])
    detail = _ramp(float(p95 - p5) / spread, *_EYE_DETAIL)
    dark = _ramp((skin_l - float(p5)) / spread, *_EYE_DARK)
    return detail * dark


# ------------------------------------------------------------------------------------ lighting

def lighting_stats(frame_rgb: np.ndarray, landmarks: np.ndarray) -> dict[str, float]:
    """Luma statistics of the face region (the mesh's convex hull, slightly eroded so that the
    background at the face border does not count): ``mean`` 0..255, ``std``, and ``clipped``,
    the share of pixels crushed (< 16) or blown (> 240). An occluder's own pixels count here;
    the verdict does not read the clipped share or the spread of a face judged covered
    (manifests/verdicts.py)."""
    return _lighting(_normalised_face(frame_rgb, _check(frame_rgb, landmarks)))


def _lighting(face: _Face) -> dict[str, float]:
    hull = face.hull().astype(np.uint8)
    k = max(1, int(round(FACE_SIDE * _BORDER)))
    eroded = cv2.erode(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))).astype(bool)
    region = eroded if eroded.sum() >= 20 else hull.astype(bool)
    y = face.luma()[region]
    if y.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "clipped": float("nan")}
    return {
        "mean": float(y.mean()),
        "std": float(y.std()),
        "clipped": float(np.mean((y < _CRUSHED) | (y > _BLOWN))),
    }


# ----------------------------------------------------------------------- sharpness, resolution

TRAINING_FACE_SIDE = 160  # the face side in a 512 crop at the default crop scale (512 / 3.2)
_SHARP_SIGMA = 0.6  # finest DoG band: sigma 0.6-1.2 px


def _dog_energy(gray: np.ndarray, sigma: float, mask: np.ndarray) -> float:
    band = cv2.GaussianBlur(gray, (0, 0), sigma) - cv2.GaussianBlur(gray, (0, 0), 2 * sigma)
    return float(np.mean(band[mask] ** 2)) if mask.any() else float("nan")


def sharpness_score(frame_rgb: np.ndarray, landmarks: np.ndarray, face_side: float = TRAINING_FACE_SIDE) -> float:
    """Detail of the face as it appears in the training crop: the face is resampled so its
    landmark box side is ``face_side`` (enlarged when the source face is smaller: a small or
    upscaled face has no detail to give), and the score is the RMS of the finest band-pass
    (DoG, sigma 0.6-1.2 px) inside the face hull over the face's own luma spread there.
    Contrast, exposure and skin tone cancel (the variance of the Laplacian scales with
    contrast squared, so dark faces read as blurry); a blurred face keeps its spread (shading,
    hair, eyes) but loses the fine band."""
    lm = _check(frame_rgb, landmarks)
    return _sharpness(_normalised_face(frame_rgb, lm, side=face_side))


def _sharpness(face: _Face) -> float:
    region = face.hull()
    k = max(1, int(round(_BORDER * face.shape[0])))
    region = cv2.erode(region.astype(np.uint8), _disc(k)).astype(bool)  # no face/background border
    if region.sum() < 20:
        return float("nan")
    g = face.luma()
    fine = _dog_energy(g, _SHARP_SIGMA, region)
    return float(math.sqrt(fine) / (float(g[region].std()) + 1.0))


def picture_sharpness(frame_rgb: np.ndarray, side: int = _PICTURE_SIDE) -> dict[str, float]:
    """For a picture where no face was found: ``sharpness`` (the face score's formula over the
    whole picture reduced to ``side`` px; the same threshold separates blur on the development
    set) and ``blown``, the share of pixels at 240 grey or more."""
    h, w = frame_rgb.shape[:2]
    s = side / max(h, w)
    small = cv2.resize(frame_rgb, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)
    g = _luma(small)
    m = np.zeros(g.shape, bool)
    m[4:-4, 4:-4] = True
    fine = _dog_energy(g, _SHARP_SIGMA, m)
    return {"sharpness": float(math.sqrt(fine) / (float(g[m].std()) + 1.0)), "blown": float(np.mean(g[m] >= _BLOWN))}


_SPECTRUM_SIDE = 256  # the native-pixel face patch analysed (centre of the face)


def _native_patch(frame_rgb: np.ndarray, lm: np.ndarray) -> np.ndarray | None:
    """The centre of the face at the source's own pixel grid: a square of the landmark box's
    shorter side (at most 256 px), grey, float64; None under 48 px."""
    lo, hi = lm[:468].min(0), lm[:468].max(0)
    h, w = frame_rgb.shape[:2]
    x0, y0 = int(max(0, math.floor(lo[0]))), int(max(0, math.floor(lo[1])))
    x1, y1 = int(min(w, math.ceil(hi[0]))), int(min(h, math.ceil(hi[1])))
    n = min(x1 - x0, y1 - y0, _SPECTRUM_SIDE)
    if n < _MIN_SPECTRUM:
        return None
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    return cv2.cvtColor(np.ascontiguousarray(frame_rgb[cy - n // 2: cy - n // 2 + n, cx - n // 2: cx - n // 2 + n]),
                        cv2.COLOR_RGB2GRAY).astype(np.float64)


def detail_4x_score(frame_rgb: np.ndarray, landmarks: np.ndarray) -> float:
    """Spectral energy a 4x-smaller source could not hold, at the source's own pixel grid.

    The centre of the face (landmark box, native pixels, at most 256 px) is windowed and its
    power spectrum whitened (times f^2, which flattens natural images' 1/f^2 fall-off); the
    score is the mean whitened energy just above a 4x source's limit (0.14-0.22 cycles/px) over
    that just below it (0.06-0.11 cycles/px). Content enlarged 4x from a smaller source has
    nothing above 0.125 cycles/px but interpolation leakage and codec noise; real detail falls
    off smoothly. Bands next to the cut-off, not the highest frequencies: those hold mostly
    compression noise in real video. Strong blur empties both bands (``sharpness`` sees it).
    NaN for faces under 48 px (too few samples; ``min_face_px`` judges those)."""
    patch = _native_patch(frame_rgb, _check(frame_rgb, landmarks))
    return float("nan") if patch is None else _detail_4x(patch)


def _whitened_ratio(patch: np.ndarray, above: tuple[float, float], below: tuple[float, float]) -> float:
    """Mean whitened power (|FFT|^2 f^2, Hann window) in ``above`` over that in ``below``
    (radial bands, cycles/px), over the whole 2-D spectrum.

    A real patch's spectrum is conjugate-symmetric, so the half that ``rfft2`` computes holds
    it all: each bin there stands for itself and, off the self-mirrored columns (0 and n/2),
    for its mirror too (``_spectrum_grid``'s weights). Half the transform of the full ``fft2``,
    the same means up to rounding (~1e-15)."""
    win, (hi_at, hi_w, hi_n), (lo_at, lo_w, lo_n) = _spectrum_grid(patch.shape[0], above, below)
    spec = np.fft.rfft2((patch - patch.mean()) * win[:, None] * win[None, :])
    power = spec.real ** 2 + spec.imag ** 2
    high = (power[hi_at] * hi_w).sum() / hi_n
    low = (power[lo_at] * lo_w).sum() / lo_n
    return float(high / low) if low > 1e-9 else float("nan")


@lru_cache(maxsize=64)
def _spectrum_grid(n: int, *bands: tuple[float, float]):
    """The Hann window of an ``n``-px patch and, per radial band, where its bins lie in the
    ``rfft2`` half-spectrum, their f^2 times how many bins of the whole spectrum each stands
    for (2, or 1 on the self-mirrored columns), and the whole spectrum's bin count in the band:
    a patch side recurs frame after frame (the face keeps its size), so they are made once per
    side."""
    half = n // 2 + 1
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n)[:half], indexing="ij"))
    mirrored = np.full(half, 2.0)
    mirrored[0] = 1.0
    if n % 2 == 0:
        mirrored[-1] = 1.0
    copies = np.broadcast_to(mirrored, f.shape)
    out = [np.hanning(n)]
    for lo, hi in bands:
        at = (f >= lo) & (f < hi)
        out.append((at, f[at] ** 2 * copies[at], float(copies[at].sum())))
    for a in (out[0], *(x for band in out[1:] for x in band[:2])):
        a.flags.writeable = False  # shared by every call with this side
    return tuple(out)


def _detail_4x(patch: np.ndarray) -> float:
    return _whitened_ratio(patch, _ABOVE_4X, _BELOW_4X)


def mirror_4x_score(frame_rgb: np.ndarray, landmarks: np.ndarray) -> float:
    """How much the face's spectrum above a 4x-smaller source's limit is a mirror image of the
    spectrum below it, at the source's own pixel grid: 0 (unrelated, native detail) .. 1.

    Content enlarged 4x by any linear interpolation (bilinear, bicubic, Lanczos) repeats the
    small source's spectrum every 0.25 cycles/px, attenuated by the kernel: the coefficient at
    f (0.125-0.22) is the kernel's copy of the one at 0.25 - f, so along every row (column) of
    the face the product X(f) X(0.25 - f) has one phase for all rows and frequencies. The score
    is the length of the mean of those products over their mean length (rows and columns of the
    same native patch as ``detail_4x``, side a multiple of 8 so the mirror bins are exact).
    Leaky kernels (bilinear) leave much energy above the limit, which ``detail_4x`` then takes
    for detail; this score reads that energy as the copy it is: the verdict judges
    ``detail_4x * (1 - mirror_4x)``, the energy above the limit that is not a copy. Native faces
    score 0.05-0.3 (codec block grids and straight edges repeat a little too). NaN under 48 px."""
    patch = _native_patch(frame_rgb, _check(frame_rgb, landmarks))
    return float("nan") if patch is None else _mirror_4x(patch)


def _mirror_4x(patch: np.ndarray) -> float:
    n = patch.shape[0] // 8 * 8
    o = (patch.shape[0] - n) // 2
    p = patch[o: o + n, o: o + n]
    f = np.fft.rfftfreq(n)
    idx = np.flatnonzero((f > _MIRROR_BAND[0]) & (f <= _MIRROR_BAND[1]))
    mirror = np.round((0.25 - f[idx]) * n).astype(int)
    win = np.hanning(n)[None, :]
    out = []
    for q in (p, p.T):
        spec = np.fft.rfft((q - q.mean(1, keepdims=True)) * win, axis=1)
        prod = spec[:, idx] * spec[:, mirror]
        total = float(np.abs(prod).sum())
        out.append(abs(complex(prod.sum())) / total if total > 1e-9 else float("nan"))
    return float(np.mean(out))


def detail_train_score(frame_rgb: np.ndarray, landmarks: np.ndarray, face_side: float = TRAINING_FACE_SIDE) -> float:
    """Fine detail of the face as the training crop shows it: the face resampled so its
    landmark box side is ``face_side`` (as ``sharpness_score``), the centre square of its
    landmark box windowed, and the whitened power (|FFT|^2 f^2) in 0.20-0.30 cycles/px over that
    in 0.06-0.12 cycles/px. A ratio of two bands of the same face: its contrast, exposure and
    how much fine texture it has cancel far better than against its luma spread (``sharpness``),
    so moderate blur (a Gaussian of sigma >= 1 px at this scale takes 10-15 dB off the fine band
    and ~1 dB off the reference) stands out from soft but native faces. Where blur leaves only
    codec noise both bands are noise and the ratio rises again: ``sharpness`` judges those."""
    lm = _check(frame_rgb, landmarks)
    return _detail_train(_normalised_face(frame_rgb, lm, side=face_side))


def _detail_train(face: _Face) -> float:
    lo, hi = face.pts[:468].min(0), face.pts[:468].max(0)
    n = int(min(hi - lo)) // 2 * 2
    h, w = face.shape
    cx, cy = int(round((lo[0] + hi[0]) / 2)), int(round((lo[1] + hi[1]) / 2))
    x0, y0 = max(0, cx - n // 2), max(0, cy - n // 2)
    n = min(n, w - x0, h - y0)
    if n < 32:
        return float("nan")
    g = face.luma()[y0: y0 + n, x0: x0 + n].astype(np.float64)
    return _whitened_ratio(g, _TRAIN_FINE, _TRAIN_REF)


def face_quality(frame_rgb: np.ndarray, landmarks: np.ndarray, hands: list | None = None,
                 training_face_side: float = TRAINING_FACE_SIDE, spectrum: bool = True) -> dict[str, float]:
    """All face scores of one frame at once: ``occlusion`` (and its ``occlusion_mouth``,
    ``occlusion_eyes`` parts), ``lighting_mean``, ``lighting_std``, ``lighting_clipped``,
    ``sharpness`` and, with ``spectrum``, ``detail_4x``, ``mirror_4x`` and ``detail_train``.
    ``hands``: hand landmarks near the face (frame pixels), from the face stage."""
    lm = _check(frame_rgb, landmarks)
    face = _normalised_face(frame_rgb, lm)
    occ = occlusion_of(face, hands or [])
    light = _lighting(face)
    train = _normalised_face(frame_rgb, lm, side=training_face_side)
    out = {
        "occlusion": max(occ["mouth"], occ["eyes"]),
        "occlusion_mouth": occ["mouth"],
        "occlusion_eyes": occ["eyes"],
        "lighting_mean": light["mean"],
        "lighting_std": light["std"],
        "lighting_clipped": light["clipped"],
        "sharpness": _sharpness(train),
    }
    if spectrum:
        patch = _native_patch(frame_rgb, lm)
        out["detail_4x"] = float("nan") if patch is None else _detail_4x(patch)
        out["mirror_4x"] = float("nan") if patch is None else _mirror_4x(patch)
        out["detail_train"] = _detail_train(train)
    return out


# ---------------------------------------------------------------------------- background motion

class BackgroundMotion:
    """Motion of everything but the person between consecutive sampled frames of one clip.

    The frame is reduced so its longer side is ``analysis_side``; mediapipe selfie segmentation
    gives the person mask (hair, shoulders and hands included), which is dilated by
    ``mask_dilate`` of the frame diagonal and united over the two frames so the person's own
    motion (head turns, gestures) never counts. DIS optical flow is computed between the two
    frames and its magnitude read where the background has texture (flat walls and green
    screens carry no observable motion). Raw flow, not flow relative to a global fit, is used:
    a shaking camera moves the whole background and counts just as a background that moves by
    itself does. The value is the texture-weighted median flow, in % of the frame diagonal per
    second, so it does not depend on resolution or sampling rate.
    """

    name = "background_motion"

    def __init__(self, analysis_side: int = 256, mask_threshold: float = 0.5, mask_dilate: float = 0.04,
                 min_background: float = 0.1, preset: str = "fast"):
        if analysis_side < 32:
            raise QualityInputError(f"analysis_side must be at least 32, got {analysis_side}")
        presets = {"ultrafast": 0, "fast": 1, "medium": 2}
        if preset not in presets:
            raise QualityInputError(f"preset must be one of {sorted(presets)}, got {preset!r}")
        self.analysis_side = int(analysis_side)
        self.mask_threshold = float(mask_threshold)
        self.mask_dilate = float(mask_dilate)
        self.min_background = float(min_background)
        self._preset = presets[preset]
        self._segmenter = None
        self._flow = None
        self._prev: tuple[np.ndarray, np.ndarray, float] | None = None

    def setup(self) -> None:
        mp = import_mediapipe()

        # model_selection=1: the landscape model (144x256 input), the cheaper of the two bundled ones.
        self._segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=1)
        self._flow = cv2.DISOpticalFlow_create(self._preset)

    def describe(self) -> dict:
        return {"backend": "mediapipe selfie_segmentation + OpenCV DIS flow", "analysis_side": self.analysis_side}

    def close(self) -> None:
        if self._segmenter is not None:
            self._segmenter.close()
            self._segmenter = None

    def reset(self) -> None:
        """Forget the previous frame (call at every clip break)."""
        self._prev = None

    def person_mask(self, small_rgb: np.ndarray) -> np.ndarray:
        """Boolean person mask of an (already reduced) frame."""
        if self._segmenter is None:
            raise RuntimeError("BackgroundMotion.setup() must be called before update()")
        prob = self._segmenter.process(small_rgb).segmentation_mask
        return prob > self.mask_threshold

    def update(self, frame_rgb: np.ndarray, t_seconds: float) -> float | None:
        """Background motion between the previous sampled frame and this one (None for the
        first frame after setup/reset, or when the two are not later in time)."""
        if not isinstance(frame_rgb, np.ndarray) or frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
            raise QualityInputError("frame must be an HxWx3 uint8 RGB array")
        h, w = frame_rgb.shape[:2]
        s = self.analysis_side / max(h, w)
        size = (max(8, int(round(w * s))), max(8, int(round(h * s))))
        small = cv2.resize(frame_rgb, size, interpolation=cv2.INTER_AREA) if s < 1 else (
            frame_rgb if s == 1 else cv2.resize(frame_rgb, size, interpolation=cv2.INTER_LINEAR))
        small = np.ascontiguousarray(small)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        mask = self.person_mask(small)
        prev, self._prev = self._prev, (gray, mask, float(t_seconds))
        if prev is None or gray.shape != prev[0].shape:
            return None
        dt = float(t_seconds) - prev[2]
        if dt <= 0:
            return None
        return self._motion(prev[0], gray, prev[1] | mask, dt)

    def _motion(self, g0: np.ndarray, g1: np.ndarray, person: np.ndarray, dt: float) -> float | None:
        h, w = g0.shape
        diag = math.hypot(h, w)
        r = max(1, int(round(self.mask_dilate * diag)))
        background = cv2.dilate(person.astype(np.uint8), _disc(r)) == 0
        # Flow at the frame border is extrapolated by DIS: leave a thin margin out.
        e = max(2, int(round(0.02 * diag)))
        background[:e, :] = background[-e:, :] = False
        background[:, :e] = background[:, -e:] = False
        if background.mean() < self.min_background:
            return None  # the person fills the frame: no background to judge (not "still")
        # Exposure changes (auto-exposure, a light switched on) move every grey level; optical
        # flow reads that as motion. Match the first frame's background brightness and
        # contrast to the second's before the flow.
        g0 = _match_exposure(g0, g1, background)
        flow = self._flow.calc(g0, g1, None)
        # Weight by texture: motion is only observable where the image has edges; flat walls,
        # green screens and their compression noise carry none.
        dx, dy = cv2.spatialGradient(cv2.GaussianBlur(g0, (3, 3), 0))
        tex = (np.abs(dx.astype(np.float32)) + np.abs(dy.astype(np.float32)))[background]
        weights = np.where(tex > _MIN_TEXTURE, np.minimum(tex, 4 * _MIN_TEXTURE), 0.0)
        if weights.sum() < 1e-6:
            return 0.0
        mag = cv2.magnitude(flow[..., 0], flow[..., 1])[background]
        # Sub-pixel jitter of noisy, compressed frames is not motion.
        moved = np.maximum(_weighted_median(mag, weights) - _FLOW_NOISE_PX, 0.0)
        return float(moved / diag * 100.0 / dt)


_MIN_TEXTURE = 24.0  # |d/dx| + |d/dy| of the 3x3 Sobel (8x a grey level per pixel): ~3 levels/px
_FLOW_NOISE_PX = 0.15  # flow of static, noisy frames at analysis resolution, pixels per pair


def _match_exposure(g0: np.ndarray, g1: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``g0`` with the mean and spread of ``g1`` over ``region`` (a global gain and offset)."""
    a, b = g0[region].astype(np.float32), g1[region].astype(np.float32)
    sa, sb = float(a.std()), float(b.std())
    if sa < 1e-3:
        return g0
    out = (g0.astype(np.float32) - float(a.mean())) * (sb / sa) + float(b.mean())
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _weighted_median(values: np.ndarray, weights: np.ndarray, step: float = 0.02) -> float:
    """Median of ``values`` weighted by ``weights``, to ``step`` (histogram: linear time)."""
    bins = np.minimum((values / step).astype(np.int64), 100000)
    cum = np.cumsum(np.bincount(bins, weights=weights))
    return float((np.searchsorted(cum, 0.5 * cum[-1]) + 0.5) * step)


# ------------------------------------------------------------------- occluder cues: skin, hands

# Regions whose skin must be visible around the mouth and eyes, and the skin references they
# are judged against: FOREHEAD, FOREHEAD_TOP, BRIDGE, UPPER_CHEEKS, LOWER_CHEEKS, NOSE (face_geometry.py).


def _samples(face: _Face, idx: list[int], r: int) -> np.ndarray:
    h, w = face.shape
    m = np.zeros((h, w), bool)
    for x, y in np.round(face.pts[idx]).astype(int):
        if 0 <= x < w and 0 <= y < h:
            m[max(y - r, 0): y + r + 1, max(x - r, 0): x + r + 1] = True
    return m


def _hand_cover(face: _Face, hands: list[np.ndarray], region: np.ndarray) -> float:
    """Share of ``region`` under the convex hull of any hand's landmarks (dilated a little: the
    landmarks sit on the joints, the fingers are wider)."""
    if not hands or region.sum() == 0:
        return 0.0
    m = np.zeros(face.shape, np.uint8)
    oval = np.round(face.pts[FACE_OVAL]).astype(np.float32)
    for hand in hands:
        pts = (np.asarray(hand) - face.origin) * face.scale
        # A hand over a face comes from outside it: Hands also "finds" hands drawn by the
        # shading of a bare face, and those lie wholly inside the face oval, wrist included.
        if cv2.pointPolygonTest(oval, (float(pts[0, 0]), float(pts[0, 1])), False) > 0:
            continue
        cv2.fillConvexPoly(m, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
    m = cv2.dilate(m, _disc(max(2, int(0.04 * FACE_SIDE))))
    return float(m.astype(bool)[region].mean())


def _skin_like(lab: np.ndarray, ref: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """Skin likeness (bool) of the pixels ``where`` (all if None) against the reference pixels'
    chroma (robust centre and spread; shading changes L* across a face, so lightness only
    needs to be plausible)."""
    ra, rb = lab[..., 1][ref], lab[..., 2][ref]
    px = lab if where is None else lab[where]
    a, b = px[..., 1], px[..., 2]
    ma, mb = np.median(ra), np.median(rb)
    sa = max(1.4826 * np.median(np.abs(ra - ma)), 2.5)
    sb = max(1.4826 * np.median(np.abs(rb - mb)), 2.5)
    d = np.hypot((a - ma) / sa, (b - mb) / sb)
    L = px[..., 0]
    lo, hi = np.percentile(lab[..., 0][ref], [5, 95])
    span = max(hi - lo, 8.0)
    return (d < 3.0) & (lo - 0.8 * span < L) & (hi + 0.8 * span > L)
