"""Motion position maps (RealPortrait): where each driving-frame face pixel is in the reference.

For a clip, one or more reference frames are chosen (``choose_references``). For every stored
frame (the driving frame) the map says, for each cell of the driving frame's training crop
inside the face, the *absolute* position in the reference frame's training crop that the cell
shows: a (C, P, P) float16 array over the whole training crop, zero outside the face.

Channels: 0 = x, 1 = y, normalised over the reference crop, pixel-centre convention
``x_norm = (u + 0.5) / S`` for pixel u of an S-wide crop (i.e. continuous coordinate / S, as
the landmarks are); 2 = validity (1 inside the driving face and where the position lies inside
the reference crop, else 0, and then all channels are 0); 3 = depth (LivePortrait only, with
``include_depth``: the reference volume's z in [0, 1], nearer = smaller). Cell (i, j) of a
P-map is sampled at the driving-crop point ((j + 0.5) S / P, (i + 0.5) S / P). The face region
is the MediaPipe face mesh of the driving frame (forehead to chin, no hair, ears or neck), so
hair and shoulders are left to the model, as in the paper.

Backends:
- ``mesh`` (default, no weights): rasterise the driving frame's 478-point mesh with, at each
  vertex, that vertex's position in the reference crop (stages/mesh_raster.py).
- ``liveportrait``: face-vid2vid as released by LivePortrait (stages/liveportrait/): dense
  motion deformation from the implicit keypoints, on 256 face crops, pasted back.
"""
from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from pydantic import Field

from . import face_geometry as fg
from . import mesh_raster
from .base import Resources, Settings, StageError, WeightsMissing, resolve_device
from .face_geometry import N_LANDMARKS

STAGE = "position_maps"
SETTING_PREFIX = "features.position_map"
log = logging.getLogger(__name__)

BACKENDS = ("mesh", "liveportrait")
REFERENCE_RULES = ("frontal_neutral", "frontal", "first", "middle")

# MediaPipe face mesh points used by the reference rule (defined and explained in face_geometry).
_NOSE_TIP, _CHEEK_R, _CHEEK_L = fg.NOSE_TIP, fg.CONTOUR_RIGHT, fg.CONTOUR_LEFT  # image-left, image-right contour
_EYE_R, _EYE_L = fg.EYE_OUTER_RIGHT, fg.EYE_OUTER_LEFT  # outer eye corners
_LIP_UP, _LIP_DOWN = fg.LIP_INNER_TOP, fg.LIP_INNER_BOTTOM  # inner lips
_TOP, _CHIN = fg.TOP, fg.CHIN


class PositionMapConfig(Settings):
    """The ``features.position_map:`` section of the build config."""

    backend: Literal["mesh", "liveportrait", "none"] = "mesh"
    weights_dir: str | None = Field(None, description="liveportrait: folder with the three base_models .pth files")
    map_size: int = Field(64, ge=8, description="stored position map side")
    n_references: int = Field(1, ge=1, description="reference frames per clip (maps are against the first)")
    reference_rule: Literal["frontal_neutral", "frontal", "first", "middle"] = Field(
        "frontal_neutral", description="how references are chosen (stages/position_maps.py: choose_references)")
    device: str = "auto"
    allow_random_weights: bool = False


class PositionMapStage:
    name = STAGE

    def __init__(
        self,
        backend: str = "mesh",
        weights_dir: str | None = None,
        map_size: int = 64,
        device: str = "auto",
        allow_random_weights: bool = False,
        batch_size: int = 16,
        include_depth: bool = False,
        depth_weighting: str = "occupancy",
        crop_size: int = 512,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"{SETTING_PREFIX}.backend must be one of {BACKENDS}, got {backend!r}")
        if not isinstance(map_size, int) or map_size < 4:
            raise ValueError(f"{SETTING_PREFIX}.map_size must be an integer >= 4, got {map_size!r}")
        if batch_size < 1:
            raise ValueError(f"{SETTING_PREFIX}.batch_size must be >= 1, got {batch_size}")
        if depth_weighting not in ("occupancy", "mean"):
            raise ValueError(f"{SETTING_PREFIX}.depth_weighting must be 'occupancy' or 'mean', got {depth_weighting!r}")
        if include_depth and backend != "liveportrait":
            raise ValueError(f"{SETTING_PREFIX}.include_depth needs backend 'liveportrait'")
        self.backend = backend
        self.weights_dir = None if weights_dir in (None, "") else str(weights_dir)
        self.map_size = map_size
        self.device = device
        self.allow_random_weights = allow_random_weights
        self.batch_size = batch_size
        self.include_depth = include_depth
        self.depth_weighting = depth_weighting
        self.crop_size = crop_size
        self._motion = None  # LivePortraitMotion once set up
        # A GPU stage wherever the cluster has GPUs (the mesh rasteriser is CPU work); ``device``
        # picks the torch device inside its actor.
        self.resources = Resources(num_cpus=1.0, num_gpus=1.0 if backend == "liveportrait" else 0.0)

    @classmethod
    def from_settings(cls, settings: PositionMapConfig) -> PositionMapStage:
        """The stage for the ``features.position_map`` section (its reference settings are the
        feature stage's: stages/features.py)."""
        return cls(backend=settings.backend, weights_dir=settings.weights_dir, map_size=settings.map_size,
                   device=settings.device, allow_random_weights=settings.allow_random_weights)

    @staticmethod
    def resources_for(settings: PositionMapConfig) -> Resources:
        return Resources(num_cpus=1.0, num_gpus=1.0 if settings.backend == "liveportrait" else 0.0)

    @staticmethod
    def weight_files(settings: PositionMapConfig) -> dict[str, str]:
        if settings.backend == "liveportrait" and (settings.weights_dir or not settings.allow_random_weights):
            return {f"{SETTING_PREFIX}.weights_dir": settings.weights_dir or ""}
        return {}

    @property
    def channels(self) -> list[str]:
        return ["x", "y", "valid"] + (["depth"] if self.include_depth else [])

    # ---- loading -------------------------------------------------------------------------
    def setup(self) -> None:
        if self.backend != "liveportrait" or self._motion is not None:
            return
        from .liveportrait import LivePortraitMotion, load_liveportrait, random_liveportrait

        device = resolve_device(self.device)
        if self.weights_dir is None and self.allow_random_weights:
            log.warning("position maps: RANDOM LivePortrait weights (explicitly requested); maps are meaningless")
            models = random_liveportrait(device=device)
        else:
            models = load_liveportrait(self.weights_dir, device=device)  # WeightsMissing: one clear line
        self._motion = LivePortraitMotion(models, device, batch_size=self.batch_size,
                                          depth_weighting=self.depth_weighting)

    def describe(self) -> dict:
        info = {
            "stage": STAGE,
            "backend": self.backend,
            "map_size": self.map_size,
            "channels": self.channels,
            "convention": "x_norm=(u+0.5)/S over the reference training crop",
            "random_weights": self.backend == "liveportrait" and self.weights_dir is None and self.allow_random_weights,
        }
        if self.backend == "liveportrait":
            info["weights_dir"] = self.weights_dir
            # Known before setup: the driver records it before any worker loads the models.
            info["random_weights"] = self.weights_dir is None and self.allow_random_weights
            info["depth_weighting"] = self.depth_weighting
            if self._motion is not None:
                info["files"] = dict(self._motion.models.files)
                info["random_weights"] = self._motion.models.random_weights
                info["device"] = str(self._motion.device)
        return info

    # ---- processing ----------------------------------------------------------------------
    def compute(
        self,
        reference_crop: np.ndarray | None,
        reference_landmarks: np.ndarray,
        driving_crops: list[np.ndarray | None] | None,
        driving_landmarks: list[np.ndarray],
    ) -> list[np.ndarray]:
        """Maps of the driving frames against one reference, one (C, P, P) float16 each.

        Crops are the training crops (H x W x 3 uint8, square); landmarks (478, 2) (or (478, 3)
        with MediaPipe's z, used by the mesh backend to order overlaps) in crop pixels. The
        mesh backend needs no pixels: crops may be None, the size is then ``crop_size``.
        """
        ref_lm = _check_landmarks(reference_landmarks, "reference")
        drv_lms = [_check_landmarks(lm, f"driving frame {i}") for i, lm in enumerate(driving_landmarks)]
        if not drv_lms:
            return []
        ref_size = self._size(reference_crop, "reference")
        if driving_crops is None:
            driving_crops = [None] * len(drv_lms)
        if len(driving_crops) != len(drv_lms):
            raise StageError(STAGE, f"{len(driving_crops)} driving crops but {len(drv_lms)} landmark sets")
        drv_sizes = [self._size(c, f"driving frame {i}") for i, c in enumerate(driving_crops)]
        p = self.map_size
        if self.backend == "mesh":
            maps = [mesh_position_map(ref_lm, lm, ref_size, s, p) for lm, s in zip(drv_lms, drv_sizes)]
            return [m.astype(np.float16) for m in maps]
        if reference_crop is None or any(c is None for c in driving_crops):
            raise StageError(STAGE, "the liveportrait backend needs the crops' pixels")
        if len(set(drv_sizes)) != 1:
            raise StageError(STAGE, "driving crops of one call must share one size")
        if self._motion is None:
            self.setup()
        # The face region: where the driving frame's face mesh covers a cell centre.
        masks = np.stack([mesh_raster.coverage(lm[:, :2] * (p / s), p, p) for lm, s in zip(drv_lms, drv_sizes)])
        maps = self._motion.maps(reference_crop, ref_lm, driving_crops, drv_lms, p, masks, self.include_depth)
        return [m.astype(np.float16) for m in maps]

    def _size(self, crop, what: str) -> int:
        if crop is None:
            if self.backend == "liveportrait":
                raise StageError(STAGE, f"{what}: the liveportrait backend needs the crop's pixels")
            return self.crop_size
        crop = np.asarray(crop)
        if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] != crop.shape[1] or crop.dtype != np.uint8:
            raise StageError(STAGE, f"{what}: expected a square HxWx3 uint8 crop, got {crop.shape} {crop.dtype}")
        return int(crop.shape[0])


def mesh_position_map(ref_landmarks: np.ndarray, drv_landmarks: np.ndarray, ref_size: int, drv_size: int,
                      map_size: int) -> np.ndarray:
    """(3, P, P) float32: the driving mesh, rasterised on the P grid over the driving crop, with
    each vertex carrying its normalised reference-crop position."""
    p = map_size
    depth = drv_landmarks[:, 2] if drv_landmarks.shape[1] > 2 else None
    values, covered = mesh_raster.rasterize(drv_landmarks[:, :2] * (p / drv_size), ref_landmarks[:, :2] / ref_size,
                                            p, p, depth=depth)
    valid = covered & ((values >= 0) & (values <= 1)).all(-1)
    out = np.zeros((3, p, p), dtype=np.float32)
    out[0], out[1] = values[..., 0], values[..., 1]
    out[2] = 1.0
    return out * valid


def _check_landmarks(lm, what: str) -> np.ndarray:
    arr = np.asarray(lm, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != N_LANDMARKS or arr.shape[1] not in (2, 3):
        raise StageError(STAGE, f"{what}: expected ({N_LANDMARKS}, 2) landmarks, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise StageError(STAGE, f"{what}: landmarks are not finite")
    return arr


# ---- the reference-frame rule ----------------------------------------------------------------
def pose_scores(landmarks_per_frame) -> dict[str, np.ndarray]:
    """Per-frame 2D proxies from the MediaPipe landmarks (all ~0 for a frontal, neutral face):
    ``yaw``: nose-tip asymmetry between the two cheek contours, (dl - dr) / (dl + dr);
    ``roll``: angle of the outer-eye-corner line, radians;
    ``pitch``: nose-tip height between eye line and chin, minus its clip median;
    ``mouth``: inner-lip gap over face height (hairline to chin)."""
    lm = np.stack([_check_landmarks(x, f"frame {i}")[:, :2] for i, x in enumerate(landmarks_per_frame)])
    nose = lm[:, _NOSE_TIP]
    dl = np.linalg.norm(nose - lm[:, _CHEEK_R], axis=1)
    dr = np.linalg.norm(nose - lm[:, _CHEEK_L], axis=1)
    yaw = (dl - dr) / np.maximum(dl + dr, 1e-9)
    eye_vec = lm[:, _EYE_L] - lm[:, _EYE_R]
    roll = np.arctan2(eye_vec[:, 1], eye_vec[:, 0])
    eye_mid = (lm[:, _EYE_L] + lm[:, _EYE_R]) / 2
    face_h = np.maximum(np.linalg.norm(lm[:, _CHIN] - lm[:, _TOP], axis=1), 1e-9)
    nose_h = np.linalg.norm(nose - eye_mid, axis=1) / np.maximum(np.linalg.norm(lm[:, _CHIN] - eye_mid, axis=1), 1e-9)
    pitch = nose_h - np.median(nose_h)
    mouth = np.linalg.norm(lm[:, _LIP_DOWN] - lm[:, _LIP_UP], axis=1) / face_h
    return {"yaw": yaw, "roll": roll, "pitch": pitch, "mouth": mouth}


def choose_references(landmarks_per_frame, n_refs: int = 1, rule: str = "frontal_neutral") -> list[int]:
    """Indices of the clip's reference frames, by a documented, deterministic rule.

    Rules:
    - ``frontal_neutral`` (default): lowest |yaw| + |roll| + |pitch| + mouth (see
      ``pose_scores``): the most frontal face with the mouth closed;
    - ``frontal``: the same without the mouth term;
    - ``first`` / ``middle``: frame 0 / the middle frame (more: the nearest frames to it
      that keep the gap below).
    With ``n_refs`` > 1, frames are taken best-first, each at least ``n_frames // (2 n_refs)``
    frames from those already taken (so references spread over the clip); if too few remain,
    the gap is ignored. Ties go to the earlier frame. Returns sorted indices.
    """
    if rule not in REFERENCE_RULES:
        raise ValueError(f"{SETTING_PREFIX}.reference_rule must be one of {REFERENCE_RULES}, got {rule!r}")
    n = len(landmarks_per_frame)
    if n == 0:
        raise StageError(STAGE, "no frames to choose a reference from")
    if n_refs < 1:
        raise ValueError(f"{SETTING_PREFIX}.n_references must be >= 1, got {n_refs}")
    n_refs = min(n_refs, n)
    if rule in ("first", "middle"):
        start = 0 if rule == "first" else n // 2
        cost = np.abs(np.arange(n) - start).astype(np.float64)
    else:
        s = pose_scores(landmarks_per_frame)
        cost = np.abs(s["yaw"]) + np.abs(s["roll"]) + np.abs(s["pitch"])
        if rule == "frontal_neutral":
            cost = cost + s["mouth"]
    order = np.lexsort((np.arange(n), cost))  # by cost, then by index
    gap = n // (2 * n_refs)
    chosen: list[int] = []
    for i in order:
        if all(abs(int(i) - c) >= max(gap, 1) for c in chosen):
            chosen.append(int(i))
        if len(chosen) == n_refs:
            break
    for i in order:  # not enough spread-out frames: fill up best-first
        if len(chosen) == n_refs:
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    return sorted(chosen)


__all__ = ["PositionMapStage", "mesh_position_map", "choose_references", "pose_scores", "WeightsMissing"]
