"""Clip verdicts from stored scores and thresholds.

The rules here and ``sql/rethreshold.sql`` must agree exactly (a test checks it), so that
users re-tune thresholds in SQL without recomputing. A null score means "not applicable"
(for example background motion of an image) and never rejects.
"""
from __future__ import annotations

import math
from typing import Mapping

from .schemas import KEPT, REJECTED

# (reason, predicate on the clip row and thresholds) in the order reasons are listed.
_RULES = [
    ("resolution", lambda c, t: _lt(c["crop_source_px"], t["min_crop_source_px"]) or _lt(c["face_px"], t["min_face_px"])),
    ("face_size", lambda c, t: _lt(c["face_frac"], t["min_face_frac"])),
    ("padding", lambda c, t: _gt(c["pad_frac"], t["max_pad_frac"])),
    ("multiple_faces", lambda c, t: _gt(c["n_faces"], t["max_faces"])),
    ("low_confidence", lambda c, t: _lt(c["face_conf"], t["min_face_conf"])),
    ("occlusion", lambda c, t: _gt(c["occlusion"], t["max_occlusion"])),
    (
        "lighting",
        lambda c, t: _lt(c["lighting_mean"], t["min_lighting_mean"])
        or _gt(c["lighting_mean"], t["max_lighting_mean"])
        or _lt(c["lighting_std"], t["min_lighting_std"])
        or _gt(c["lighting_clipped"], t["max_lighting_clipped"]),
    ),
    ("background_motion", lambda c, t: _gt(c["bg_motion"], t["max_bg_motion"])),
    ("blur", lambda c, t: _lt(c["blur"], t["min_blur"])),
    ("too_short", lambda c, t: c["media_type"] == "video" and _lt(c["end_s"] - c["start_s"], t["min_clip_s"])),
]

REASONS = [name for name, _ in _RULES]


def _ok(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _lt(x, limit) -> bool:
    return _ok(x) and x < limit


def _gt(x, limit) -> bool:
    return _ok(x) and x > limit


def judge(clip: Mapping, thresholds: Mapping[str, float]) -> tuple[str, list[str]]:
    """(verdict, reasons) for one clip row holding the CLIP_SCORES columns."""
    reasons = [name for name, rule in _RULES if rule(clip, thresholds)]
    return (REJECTED if reasons else KEPT), reasons
