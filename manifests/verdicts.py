"""Clip verdicts from stored scores and thresholds.

The rules here and ``sql/rethreshold.sql`` must agree exactly (a test checks it), so that
users re-tune thresholds in SQL without recomputing. A null score means "not applicable"
(for example background motion of an image) and never rejects.

The rules come in two tiers. First: is the face seen well enough to judge it (resolution,
blur, exposure)? Only a face seen well is then judged for what it shows: whether it is a
human face the detector is sure of (``no_face``: an animal, a statue of a dog) and whether
it is covered (``occlusion``). A blown-out, dark, blurred or tiny face fails those finer checks
for the wrong reason, so they are not reported for it. A face that is not human is rejected
``no_face`` alone: its other scores describe something else; a face not seen well that is not
surely human gets only the reasons it is not seen well for (nothing that presumes a face). A
source with no face found at all, or none that is surely human, is rejected ``no_face`` too
(or ``blur``/``lighting`` when the picture itself is blurred or blown out: see
stages/curate.py). A source whose spectrum shows a 4x upscale is judged by the pixels it had
before it (``UPSCALE_FACTOR``).
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


# A source whose spectrum shows a 4x upscale is judged by the pixels it had before: a quarter of
# its crop and face sides. Judged at training scale, a 4x-enlarged 2048-px photo with a 518-px
# face still gives the crop a 130-px face; a 4x-enlarged 512-px talking head does not.
UPSCALE_FACTOR = 4


def _quarter(x):
    return None if not _ok(x) else x / UPSCALE_FACTOR


def native_detail_4x(c) -> float | None:
    """The energy above a 4x-smaller source's limit that is not a mirror copy of the energy below
    it, over the energy below: ``detail_4x * (1 - mirror_4x)`` (``mirror_4x`` null, as in older
    catalogs: ``detail_4x``)."""
    d, m = c["detail_4x"], c.get("mirror_4x")
    if not _ok(d):
        return None
    return d * (1.0 - m) if _ok(m) else d


def _upscaled(c, t) -> bool:
    return _lt(native_detail_4x(c), t["min_detail_4x"])


def _too_few_native_pixels(c, t) -> bool:
    return _upscaled(c, t) and (_lt(_quarter(c["crop_source_px"]), t["min_crop_source_px"])
                                or _lt(_quarter(c["face_px"]), t["min_face_px"]))


def _resolution(c, t) -> bool:
    return _too_few_pixels(c, t) or _too_few_native_pixels(c, t)


def _soft(c, t) -> bool:
    return _lt(c["sharpness"], t["min_sharpness"]) or _lt(c.get("detail_train"), t["min_detail_train"])


def _exposure(c, t) -> bool:
    return _lt(c["lighting_mean"], t["min_lighting_mean"]) or _gt(c["lighting_mean"], t["max_lighting_mean"])


def _occluded(c, t) -> bool:
    return _gt(occluded_share(c["occlusion_frames"], t["max_frame_occlusion"]), t["max_occluded_share"])


# Tier 1: the face is seen well enough to judge. A face with too few (native) pixels is blurred
# at training scale as a consequence: that is reported as resolution, not also as blur.
_VISIBILITY = [
    ("resolution", _resolution),
    (
        # The clipped share and the spread of a face judged covered are the occluder's (a black
        # or white patch is crushed or blown): only its exposure (the mean) is judged then.
        "lighting",
        lambda c, t: _exposure(c, t) or (
            not (_seen_well(c, t) and _occluded(c, t))
            and (_lt(c["lighting_std"], t["min_lighting_std"]) or _gt(c["lighting_clipped"], t["max_lighting_clipped"]))
        ),
    ),
    ("blur", lambda c, t: _blur(c, t)),
]
_NOT_A_FACE = (
    "no_face",
    lambda c, t: (_lt(c["face_human"], t["min_face_human"]) or _lt(c["face_conf"], t["min_face_conf"])
                  or _lt(c.get("face_person"), t["min_face_person"])),
)
# Tier 2 and framing rules; occlusion only on a face seen well.
_CONTENT = [
    ("face_size", lambda c, t: _lt(c["face_frac"], t["min_face_frac"])),
    ("padding", lambda c, t: _gt(c["pad_frac"], t["max_pad_frac"]) or _gt(c["face_cut"], t["max_face_cut"])),
    ("multiple_faces", lambda c, t: _gt(c["n_faces"], t["max_faces"])),
    ("occlusion", _occluded),
    ("background_motion", lambda c, t: _gt(c["bg_motion"], t["max_bg_motion"])),
    ("too_short", lambda c, t: c["media_type"] == "video" and _lt(c["end_s"] - c["start_s"], t["min_clip_s"])),
]
# Reasons that do not presuppose a human face (a clip not surely showing one gives only these).
_ANY_PICTURE = {"too_short"}

REASONS = ["no_face"] + [name for name, _ in _VISIBILITY + _CONTENT]


def _seen_well(c, t) -> bool:
    """Resolution, blur and exposure let the finer checks judge. Clipped pixels and a flat
    spread do not stop them: an opaque patch over the eyes brings its own black or white, and
    a primate's black fur its own crushed pixels."""
    return not (_resolution(c, t) or _blur(c, t) or _exposure(c, t))


def _blur(c, t) -> bool:
    return _soft(c, t) and not _resolution(c, t)


def not_a_face(clip: Mapping, thresholds: Mapping[str, float]) -> bool:
    """The clip's face is not surely a human face (an animal, a statue of a dog, a pattern)."""
    return _NOT_A_FACE[1](clip, thresholds)


def judge(clip: Mapping, thresholds: Mapping[str, float]) -> tuple[str, list[str]]:
    """(verdict, reasons) for one clip row holding the CLIP_SCORES columns.

    A face seen well that is not surely human is ``no_face`` alone, whatever else the clip shows.
    One not seen well (too few pixels, blurred, exposed out of range) may be a human face the
    checks cannot see: it gets the reasons it is not seen well for, and no reason that presumes
    a face (occlusion, several faces, background motion, framing); the source, if none of its
    clips shows a human face, is judged as a picture without one (stages/curate.py)."""
    unclear = [name for name, rule in _VISIBILITY if rule(clip, thresholds)]
    seen_well = _seen_well(clip, thresholds)
    face = not not_a_face(clip, thresholds)
    if seen_well and not face:
        return REJECTED, ["no_face"]
    reasons = unclear + [name for name, rule in _CONTENT
                         if rule(clip, thresholds) and (face or name in _ANY_PICTURE)
                         and (seen_well or name != "occlusion")]
    reasons.sort(key=REASONS.index)
    return (REJECTED if reasons else KEPT), reasons
