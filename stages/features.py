"""Per-source feature precompute over the curated tables (kept clips and their JPEG crops).

Two stages, so that pipeline/ can give the VAE its own (GPU) actor pool:
- :class:`ClipFeatureStage` (CPU): reference frames, motion position maps, whole-body pose,
  landmark intensities (per clip and per training window), identity embedding, and for image
  sources K random-crop driving views with their exact position maps.
- :class:`LatentFeatureStage` (GPU when there is one): VAE latents of every stored frame.
Both take and return a source's :class:`~stages.base.SourceWork`; a crop decoded by the first
is reused by the second when they share an actor (a CPU-only build).
"""
from __future__ import annotations

import numpy as np

from manifests import tensors
from manifests.records import ClipRow, FrameRow
from manifests.schemas import KEPT

from . import intensity as intensity_mod
from .base import Resources, SourceWork, Stage, StageError
from .identity import IdentityConfig, IdentityStage
from .image_views import ImageViewsConfig
from .intensity import IntensityConfig
from .jpeg import encode_jpeg
from .latents import LatentsConfig, LatentStage
from .pose import PoseConfig, PoseStage
from .position_maps import PositionMapConfig, PositionMapStage, choose_references


def _landmark_box(landmarks: np.ndarray, size: int) -> list[float]:
    """The landmarks' extent, clipped to the crop: a view's face box."""
    lo = np.clip(landmarks.min(axis=0), 0, size)
    hi = np.clip(landmarks.max(axis=0), 0, size)
    return [float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])]


class ClipFeatureStage(Stage):
    name = "features"

    def __init__(self, *, position_map: PositionMapConfig, pose: PoseConfig, identity: IdentityConfig,
                 intensity: IntensityConfig, image_views: ImageViewsConfig, jpeg_quality: int):
        self.n_references = int(position_map.n_references)
        self.reference_rule = position_map.reference_rule
        self.position_maps = (
            None if position_map.backend == "none" else PositionMapStage.from_settings(position_map)
        )
        self.resources = self.resources_for(position_map=position_map)
        self.pose = None if pose.backend == "none" else PoseStage.from_settings(pose)
        self.identity = IdentityStage.from_settings(identity)
        self.intensity = intensity
        self.image_views = image_views
        self.jpeg_quality = jpeg_quality

    @classmethod
    def resources_for(cls, *, position_map: PositionMapConfig, **_) -> Resources:
        # LivePortrait maps want a GPU; the mesh rasteriser does not.
        return cls.resources if position_map.backend == "none" else PositionMapStage.resources_for(position_map)

    @classmethod
    def weight_files(cls, *, position_map: PositionMapConfig, pose: PoseConfig, identity: IdentityConfig,
                     **_) -> dict[str, str]:
        return {**PoseStage.weight_files(pose), **IdentityStage.weight_files(identity),
                **PositionMapStage.weight_files(position_map)}

    def setup(self) -> None:
        for stage in (self.position_maps, self.pose, self.identity):
            if stage is not None:
                stage.setup()

    def describe(self) -> dict:
        return {
            "position_map": self.position_maps.describe() if self.position_maps else {"backend": "none"},
            "pose": self.pose.describe() if self.pose else {"backend": "none"},
            "identity": self.identity.describe(),
            "intensity": {"backend": "landmarks", **self.intensity.model_dump()},
            "image_views": {"backend": "albumentations", **self.image_views.model_dump()},
        }

    def process(self, work: SourceWork) -> SourceWork:
        if not work.frames:
            return work
        try:
            work.frames = self._features(work)
        except StageError as e:
            work.fail(e.stage, e.message)
        return work

    def _features(self, work: SourceWork) -> list[FrameRow]:
        """Features of every kept clip (written into its clip row and frame rows), and the
        frames to store: the clips' frames and, for images, their views."""
        by_clip = work.frames_by_clip()
        out_frames: list[FrameRow] = []
        for clip in work.clips:
            rows = by_clip.get(clip.clip_id)
            if clip.verdict != KEPT or not rows:
                continue
            work.report(len(out_frames), len(work.frames), "frames")
            crops = [work.crop(r) for r in rows]
            lms = [tensors.decode(r.landmarks).astype(np.float64) for r in rows]
            refs = choose_references(lms, n_refs=self.n_references, rule=self.reference_rule)
            clip.reference_frames = [int(i) for i in refs]
            if self.position_maps is not None:
                maps = self.position_maps.compute(crops[refs[0]], lms[refs[0]], crops, lms)
                for r, m in zip(rows, maps):
                    r.position_map = tensors.encode(m, "float16")
            if self.pose is not None:
                for r, p in zip(rows, self.pose.estimate(crops, lms, video=clip.media_type != "image")):
                    r.pose = tensors.encode(p, "float32")
            self._intensities(clip, lms)
            emb = self.identity.embed(crops, lms)
            clip.identity_embedding = tensors.encode(emb, "float32")
            out_frames.extend(rows)
            if clip.media_type == "image" and self.image_views.k > 0:
                views = self._views(clip, rows[0], crops[0], lms[0])
                if self.pose is not None and views:  # views are training frames too: same columns
                    view_lms = [tensors.decode(v.landmarks) for v in views]
                    for v, p in zip(views, self.pose.estimate([work.crop(v) for v in views], view_lms)):
                        v.pose = tensors.encode(p, "float32")
                out_frames.extend(views)
        return out_frames

    def _intensities(self, clip: ClipRow, lms: list[np.ndarray]) -> None:
        stack = np.stack(lms)
        point_set = self.intensity.point_set
        if clip.media_type == "image":
            return  # one frame: no motion to measure
        clip.intensity_exp, clip.intensity_head = intensity_mod.intensities(stack, point_set)
        _, exp_w, head_w = intensity_mod.window_intensities(
            stack, self.intensity.window, self.intensity.window_stride, point_set
        )
        clip.intensity_exp_windows = exp_w.tolist()
        clip.intensity_head_windows = head_w.tolist()

    def _views(self, clip: ClipRow, row: FrameRow, crop: np.ndarray, lm: np.ndarray) -> list[FrameRow]:
        from .image_views import make_views

        # Seeded per clip (its id is a hash), so a view does not depend on processing order.
        seed = int(self.image_views.seed) + int(clip.clip_id[:8], 16)
        views = make_views(crop, lm, k=int(self.image_views.k), seed=seed,
                           map_size=self.position_maps.map_size if self.position_maps else 64)
        out = []
        for k, v in enumerate(views, start=1):
            out.append(FrameRow(
                clip_id=row.clip_id, source_id=row.source_id, frame_index=row.frame_index,
                source_frame=row.source_frame, timestamp_s=row.timestamp_s,
                view=k,
                jpeg=encode_jpeg(v.image, self.jpeg_quality),
                face_box=_landmark_box(v.landmarks, v.image.shape[1]),
                face_conf=row.face_conf,
                landmarks=tensors.encode(v.landmarks, "float32"),
                position_map=tensors.encode(v.position_map, "float16"),
                view_params=v.params_json(),
            ))
        return out


class LatentFeatureStage(Stage):
    """VAE latents of every stored frame (clip frames and image views). With no VAE (backend
    'none') it has nothing to do and stays in the CPU pool."""

    name = "latents"

    def __init__(self, *, latents: LatentsConfig):
        self.stage = LatentStage.from_settings(latents)
        self.resources = self.stage.resources

    @classmethod
    def resources_for(cls, *, latents: LatentsConfig, **_) -> Resources:
        return LatentStage.resources_for(latents)

    @classmethod
    def weight_files(cls, *, latents: LatentsConfig, **_) -> dict[str, str]:
        return LatentStage.weight_files(latents)

    def setup(self) -> None:
        self.stage.setup()

    def describe(self) -> dict:
        return {"latents": self.stage.describe()}

    def process(self, work: SourceWork) -> SourceWork:
        if not work.frames or self.stage.backend == "none":
            return work
        rows, step = work.frames, self.stage.batch_size
        try:
            for i in range(0, len(rows), step):
                work.report(i, len(rows), "frames")
                chunk = rows[i : i + step]
                for r, z in zip(chunk, self.stage.encode([work.crop(r) for r in chunk])):
                    r.latent = tensors.encode(z, "float16")
        except (StageError, ValueError) as e:
            return work.fail(self.name, str(e).splitlines()[0])
        # What a reader needs to decode them (z / scaling_factor + shift_factor) travels with them.
        work.frame_attrs["latent"] = dict(scaling_factor=self.stage.scaling_factor,
                                          shift_factor=self.stage.shift_factor, stored="posterior_mean")
        return work
