"""Identity embedding of a clip: ArcFace (insightface) on 5-point aligned 112x112 faces.

The five points come from the face mesh (stages/intensity.py, FIVE_POINT_MESH): eye centres
= mean of each eye's corners (33+133, 362+263), nose tip 1, mouth corners 61 and 291, in
ArcFace order (image-left eye first). ``insightface.utils.face_align.norm_crop`` fits the
similarity transform onto the ArcFace template. Up to ``n_frames`` evenly spaced frames are
embedded; each embedding is L2-normalised, averaged, and the mean normalised again, giving a
(512,) float32 per clip. Without a model path the stage gives None and ``describe()`` says why.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from pydantic import Field

from .base import Settings, WeightsMissing, onnx_session_options
from .intensity import five_points

STAGE = "identity"
_SETTING = "features.identity.model_path"
log = logging.getLogger(__name__)


class IdentityConfig(Settings):
    """The ``features.identity:`` section of the build config."""

    model_path: str | None = Field(
        None, description="ArcFace ONNX (e.g. insightface w600k_r50.onnx); None: no embeddings"
    )
    n_frames: int = Field(4, ge=1)


def align(crop: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """RGB crop + its (478, 2) mesh -> (size, size, 3) face aligned to the ArcFace template."""
    from insightface.utils import face_align

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # skimage's estimate() deprecation
        return face_align.norm_crop(crop, landmark=five_points(landmarks).astype(np.float32), image_size=size)


def pick_frames(n_total: int, n_frames: int) -> list[int]:
    """Up to n_frames indices spread evenly over 0..n_total-1 (first and last included)."""
    if n_total <= 0:
        return []
    return sorted({int(round(i)) for i in np.linspace(0, n_total - 1, min(n_frames, n_total))})


class IdentityStage:
    name = STAGE

    def __init__(self, model_path: str | None = None, n_frames: int = 4):
        if n_frames < 1:
            raise ValueError(f"features.identity.n_frames must be >= 1, got {n_frames}")
        self.model_path = None if model_path in (None, "") else str(model_path)
        self.n_frames = n_frames
        self.model = None
        self._sha256 = None

    @classmethod
    def from_settings(cls, settings: IdentityConfig) -> IdentityStage:
        return cls(model_path=settings.model_path, n_frames=settings.n_frames)

    @staticmethod
    def weight_files(settings: IdentityConfig) -> dict[str, str]:
        return {_SETTING: settings.model_path} if settings.model_path else {}

    def setup(self) -> None:
        if self.model_path is None or self.model is not None:
            return
        path = Path(self.model_path).expanduser()
        if not path.is_file():
            raise WeightsMissing(f"{_SETTING}: file not found: {path}")
        from insightface.model_zoo import get_model

        from manifests.shards import sha256_of

        model = get_model(str(path), providers=["CPUExecutionProvider"], sess_options=onnx_session_options())
        if model is None or getattr(model, "taskname", None) != "recognition":
            raise WeightsMissing(
                f"{_SETTING}: {path.name} is not an ArcFace recognition model (input Nx3x112x112)"
            )
        if tuple(model.input_size) != (112, 112):
            raise WeightsMissing(f"{_SETTING}: {path.name} expects {model.input_size} faces, not 112x112")
        self._sha256 = sha256_of(path)
        self.model = model

    def embed(self, crops: list[np.ndarray], landmarks: list[np.ndarray | None]) -> np.ndarray | None:
        """RGB crops of one clip and their meshes -> (512,) float32 unit vector, or None.

        None without a model, or when no chosen frame has landmarks. Frames without
        landmarks (None or non-finite) are skipped.
        """
        if self.model_path is None:
            return None
        if len(crops) != len(landmarks):
            raise ValueError(f"identity: {len(crops)} crops but {len(landmarks)} landmark arrays")
        self.setup()
        usable = [i for i, lm in enumerate(landmarks) if lm is not None and np.all(np.isfinite(lm))]
        chosen = [usable[k] for k in pick_frames(len(usable), self.n_frames)]
        if not chosen:
            return None
        # insightface expects BGR (it swaps to RGB inside get_feat).
        faces = [np.ascontiguousarray(align(crops[i], landmarks[i])[..., ::-1]) for i in chosen]
        feats = np.asarray(self.model.get_feat(faces), dtype=np.float64)
        feats /= np.linalg.norm(feats, axis=1, keepdims=True) + 1e-12
        mean = feats.mean(axis=0)
        return (mean / (np.linalg.norm(mean) + 1e-12)).astype(np.float32)

    def describe(self) -> dict:
        if self.model_path is None:
            return {
                "stage": STAGE,
                "backend": "none",
                "reason": f"no ArcFace model given ({_SETTING}); identity embeddings are null",
                "random_weights": False,
            }
        info = {
            "stage": STAGE,
            "backend": "insightface_arcface",
            "model_path": self.model_path,
            "n_frames": self.n_frames,
            "alignment": "norm_crop 112, mesh 5 points (33+133, 362+263, 1, 61, 291)",
            "random_weights": False,
        }
        if self.model is not None:  # known once loaded (in a worker; the driver loads no model)
            info.update(sha256=self._sha256, input_mean=float(self.model.input_mean),
                        input_std=float(self.model.input_std))
        return info
