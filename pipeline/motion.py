"""Reference image + driving video -> what `portrait sample` needs: the reference latent and one
motion position map per driving frame (mesh backend, relative motion).

The reference is cropped like a training image; the driving video gets one fixed crop like a
training clip. Driving motion is transferred to the reference face as LivePortrait's relative
mode does: each driving frame's landmarks minus the first frame's, mapped by the similarity
that takes the first driving face onto the reference face, added to the reference landmarks.
So another person's face shape never leaks into the map, only their motion.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.crop import crop_image, plan_crop
from stages.decode import VideoReader, read_image
from stages.faces import FaceAnalyzer
from stages.latents import LatentStage
from stages.position_maps import PositionMapStage
from stages.probe import probe

from .config import BuildConfig, ConfigError


@dataclass
class DrivingMotion:
    """Satisfies portrait_model.sample.MotionInputs: latent (4, h, w), maps (N, 3, P, P), fps."""

    reference_latent: np.ndarray
    position_maps: np.ndarray
    fps: float


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x2 linear part (scale * rotation) of the least-squares similarity src -> dst."""
    a, b = src - src.mean(0), dst - dst.mean(0)
    u, s, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, d]) @ vt
    scale = (s * [1.0, d]).sum() / max((a ** 2).sum(), 1e-12)
    return scale * rot


def transfer(reference: np.ndarray, driving: list[np.ndarray]) -> list[np.ndarray]:
    """Relative motion: reference + A (driving_t - driving_0), A aligning driving_0 to reference."""
    a = similarity(driving[0], reference)
    return [reference + (d - driving[0]) @ a.T for d in driving]


class MotionExtractor:
    def __init__(self, config: BuildConfig, vae: str | None):
        if not vae:
            raise ConfigError("portrait sample needs --vae: a local VAE (diffusers folder or .safetensors)")
        self.config = config
        self.faces = FaceAnalyzer()
        self.faces.setup()
        self.vae = LatentStage(backend="diffusers", weights=vae, device="auto")
        self.maps = PositionMapStage(backend="mesh", map_size=config.features.position_map.map_size,
                                     crop_size=config.crop.out_size)

    def _crop(self, boxes, width, height):
        c = self.config.crop
        return plan_crop(np.asarray(boxes), width, height, c.scale, c.shift_down)

    def __call__(self, reference_path, driving_path) -> DrivingMotion:
        size = self.config.crop.out_size
        ref = read_image(str(reference_path), self.config.sampling.max_image_side)
        obs = self.faces.analyze(ref)
        if obs.landmarks is None:
            raise ConfigError(f"no face found in the reference image {reference_path}")
        crop = self._crop([obs.face_box], ref.shape[1], ref.shape[0])
        ref_lm = crop.to_crop(obs.landmarks, size)
        latent = self.vae.encode([crop_image(ref, crop, size)])[0]

        info = probe(str(driving_path), "video")
        lms, boxes, previous, leading = [], [], None, 0
        for frame in VideoReader(str(driving_path), info.rotation).frames(info.fps or 25.0):
            o = self.faces.analyze(frame.rgb, previous=previous)
            if o.landmarks is None:
                if lms:
                    lms.append(lms[-1])  # a dropped detection: hold the last pose
                else:
                    leading += 1  # frames before the first face take its pose
                continue
            previous = o.boxes[o.primary]
            lms.append(o.landmarks)
            boxes.append(o.face_box)
        if not lms:
            raise ConfigError(f"no face found in the driving video {driving_path}")
        lms = [lms[0]] * leading + lms  # one map per driving frame: the output keeps its length
        dcrop = self._crop(boxes, info.width, info.height)
        driving = transfer(ref_lm, [dcrop.to_crop(lm, size) for lm in lms])
        maps = self.maps.compute(None, ref_lm, None, driving)
        return DrivingMotion(latent, np.stack(maps), float(info.fps or 25.0))


def motion_fn_factory(args) -> MotionExtractor:
    from .config import load_config

    return MotionExtractor(load_config(getattr(args, "config", None)), args.vae)
