"""Clip verdicts from stored scores and thresholds.

The rules here and ``sql/rethreshold.sql`` must agree exactly (a test checks it), so that
users re-tune thresholds in SQL without recomputing. A null score means "not applicable"
(for example background motion of an image) and never rejects.

The rules come in two tiers. First: is the face seen well enough to judge it (resolution,
blur, exposure)? Only a face seen well is then judged for what it shows: whether it is a
human face the detector is sure of (``no_face``: an animal, a statue of a dog) and whether
it is covered (``occlusion``). A blown-out, dark, blurred or tiny face fails those finer checks
for the wrong reason, so they are not reported for it. A face that is not human is rejected
``no_face`` alone: its other scores describe something else. A source with no face found at
all is rejected ``no_face`` too (or ``blur``/``lighting`` when the picture itself is blurred or
blown out: see stages/curate.py).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .schemas import KEPT, REJECTED


def occluded_share(frames, level: float) -> float | None:
    """Share of frames whose occlusion is over ``level`` (as SQL computes it from the stored
    float32 list, so the build and `rethreshold` agree to the last bit)."""
    vals = [float(np.float32(v)) for v in (frames or []) if v is not None]
    return sum(v > level for v in vals) / len(vals) if vals else None


def _ok(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _lt(x, limit) -> bool:
    return _ok(x) and x < limit


def _gt(x, limit) -> bool:
    return _ok(x) and x > limit


def _too_few_pixels(c, t) -> bool:
    return _lt(c["crop_source_px"], t["min_crop_source_px"]) or _lt(c["face_px"], t["min_face_px"])


# Tier 1: the face is seen well enough to judge. A face with too few source pixels is blurred
# at training scale as a consequence: that is reported as resolution, not also as blur.
_VISIBILITY = [
    ("resolution", lambda c, t: _too_few_pixels(c, t) or _lt(c["detail_4x"], t["min_detail_4x"])),
    (
        "lighting",
        lambda c, t: (
            _lt(c["lighting_mean"], t["min_lighting_mean"])
            or _gt(c["lighting_mean"], t["max_lighting_mean"])
            or _lt(c["lighting_std"], t["min_lighting_std"])
            or _gt(c["lighting_clipped"], t["max_lighting_clipped"])
        ),
    ),
    ("blur", lambda c, t: _lt(c["sharpness"], t["min_sharpness"]) and not _too_few_pixels(c, t)),
]
_NOT_A_FACE = (
    "no_face",
    lambda c, t: _lt(c["face_human"], t["min_face_human"]) or _lt(c["face_conf"], t["min_face_conf"]),
)
# Tier 2 and framing rules; occlusion only on a face seen well.
_CONTENT = [
    ("face_size", lambda c, t: _lt(c["face_frac"], t["min_face_frac"])),
    ("padding", lambda c, t: _gt(c["pad_frac"], t["max_pad_frac"]) or _gt(c["face_cut"], t["max_face_cut"])),
    ("multiple_faces", lambda c, t: _gt(c["n_faces"], t["max_faces"])),
    (
        "occlusion",
        lambda c, t: _gt(occluded_share(c["occlusion_frames"], t["max_frame_occlusion"]), t["max_occluded_share"]),
    ),
    ("background_motion", lambda c, t: _gt(c["bg_motion"], t["max_bg_motion"])),
    ("too_short", lambda c, t: c["media_type"] == "video" and _lt(c["end_s"] - c["start_s"], t["min_clip_s"])),
]

REASONS = ["no_face"] + [name for name, _ in _VISIBILITY + _CONTENT]


def _seen_well(c, t) -> bool:
    """Resolution, blur and exposure let the finer checks judge. Clipped pixels and a flat
    spread do not stop them: an opaque patch over the eyes brings its own black or white."""
    return not (_VISIBILITY[0][1](c, t) or _VISIBILITY[2][1](c, t)
                or _lt(c["lighting_mean"], t["min_lighting_mean"]) or _gt(c["lighting_mean"], t["max_lighting_mean"]))


def judge(clip: Mapping, thresholds: Mapping[str, float]) -> tuple[str, list[str]]:
    """(verdict, reasons) for one clip row holding the CLIP_SCORES columns."""
    unclear = [name for name, rule in _VISIBILITY if rule(clip, thresholds)]
    if not unclear and _NOT_A_FACE[1](clip, thresholds):
        return REJECTED, ["no_face"]
    seen_well = _seen_well(clip, thresholds)
    reasons = unclear + [name for name, rule in _CONTENT
                         if rule(clip, thresholds) and (seen_well or name != "occlusion")]
    reasons.sort(key=REASONS.index)
    return (REJECTED if reasons else KEPT), reasons
