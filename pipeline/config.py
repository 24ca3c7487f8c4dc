"""The build configuration: one typed place for every setting (YAML file or defaults).

Unknown keys are errors (a typo must not silently fall back to a default). The whole
resolved config is stored in ``runs.config_json`` of the catalog.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from manifests.errors import PortraitError


class ConfigError(PortraitError):
    """A configuration problem: the CLI prints it as one line and exits non-zero."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SamplingConfig(_Section):
    fps: float = Field(12.5, gt=0, description="frames per second sampled from videos and stored")
    max_image_side: int = Field(4096, ge=256, description="larger images are reduced before analysis")
    max_image_pixels: int = Field(
        50_000_000,
        ge=1_000_000,
        description="pixel budget of one decoded image "
        "(after JPEG draft reduction): a larger one is an error, judged from its header before decoding",
    )
    motion_every: int = Field(2, ge=1, description="background motion is measured between every k-th sampled frame")
    detect_every: int = Field(
        3, ge=1, description="all faces are detected every k-th sampled frame; the mesh tracks in between"
    )


class ClipsConfig(_Section):
    max_clip_s: float = Field(10.0, gt=0, description="longer face tracks are split")
    max_jump: float = Field(0.5, gt=0, description="face centre jump (in face sizes) between samples that ends a clip")
    max_scale_change: float = Field(1.6, gt=1, description="face size ratio between samples that ends a clip")
    cut_threshold: float = Field(0.5, gt=0, le=1, description="frame histogram distance that marks a cut")
    min_occluded_s: float = Field(
        0.5, gt=0, description="an occluded stretch this long becomes its own (rejected) clip"
    )


class FacesConfig(_Section):
    detector: Literal["mediapipe", "scrfd"] = Field(
        "mediapipe", description="mediapipe: both BlazeFace ranges (embedded); scrfd: insightface SCRFD"
    )
    detector_path: str | None = Field(None, description="scrfd: the detection ONNX, e.g. det_10g.onnx from buffalo_l")
    min_confidence: float = Field(0.5, gt=0, lt=1, description="detection score below which a face is not counted")
    hands: bool = Field(True, description="look for hands over the mouth and eyes (mediapipe Hands)")


class CropConfig(_Section):
    out_size: int = Field(
        512, ge=64, multiple_of=8, description="side of the stored square crop (the VAE needs multiples of 8)"
    )
    scale: float = Field(3.2, gt=1, description="crop side / face box side: head, hair and shoulders")
    shift_down: float = Field(0.35, description="crop centre below the face centre, in face sizes")
    jpeg_quality: int = Field(90, ge=50, le=100)


class Thresholds(_Section):
    """Verdict thresholds. Names are the parameters of manifests/sql/rethreshold.sql.

    Set from the distributions measured on the labelled development set (real clean media
    and strong degradations of them, `bench/bench_filters.py`); docs/filters.md gives the
    figures and each score's blind spots.
    """

    min_crop_source_px: float = Field(256, description="source pixels behind the crop side")
    min_face_px: float = Field(100, description="face box side in source pixels")
    min_face_frac: float = Field(0.15, description="face side / crop side")
    max_pad_frac: float = Field(0.25, description="share of the crop outside the frame")
    max_face_cut: float = Field(0.05, description="share of the face outside the frame (reason padding)")
    max_faces: int = Field(1, description="faces in one frame")
    min_face_conf: float = Field(
        0.6, description="detector confidence: below it the face is not surely a face (reason no_face)"
    )
    min_face_human: float = Field(
        0.5, description="person probability inside the face oval: animals score ~0 (reason no_face)"
    )
    max_frame_occlusion: float = Field(
        0.5, description="a frame is occluded above this (0 = clear, 1 = mouth or an eye covered)"
    )
    max_occluded_share: float = Field(0.2, description="share of a clip's frames that may be occluded")
    min_lighting_mean: float = Field(45, description="face luma, 0..255")
    max_lighting_mean: float = Field(220)
    min_lighting_std: float = Field(10, description="face luma spread: flat faces are washed out")
    max_lighting_clipped: float = Field(0.2, description="share of face pixels crushed or blown")
    max_bg_motion: float = Field(5.0, description="% of the frame diagonal per second")
    min_sharpness: float = Field(
        0.036, description="fine-band RMS / luma spread of the face at training scale (reason blur)"
    )
    min_detail_4x: float = Field(
        0.095, description="face spectral energy above a 4x-smaller source's limit over that below (reason resolution)"
    )
    min_clip_s: float = Field(1.0, description="video clip duration, seconds")

    def as_params(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.model_dump().items()}


class RayConfig(_Section):
    address: str | None = Field(None, description="Ray cluster address; None = local instance (or RAY_ADDRESS)")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local instance; None = all")
    max_workers: int | None = Field(None, ge=1, description="upper bound on each actor pool; None = CPUs")
    executor: Literal["ray", "inline"] = Field("ray", description="'inline' runs the stages in the driver (debugging)")


class StorageConfig(_Section):
    shard_target_mb: float = Field(256, gt=0, description="a shard is written when its frames reach this size")
    # Training reads whole row groups: at 32 rows a stage-1 pair reads at most two of about 1.6 MB
    # (latent + map) instead of 52 MB each at 1024 rows; the footer of a 256 MB shard grows to
    # about 90 KB (bench/bench_reader.py prints both).
    row_group_rows: int = Field(32, ge=16, description="rows per Parquet row group (what training reads at once)")
    compression: Literal["zstd", "snappy", "none"] = "zstd"
    commit_every_s: float = Field(1.0, ge=0, description="results arriving within this time are committed in one "
                                  "transaction (a unit's sources are visible only with its shards either way)")
    publish_every_s: float = Field(10.0, ge=0, description="the catalog is published to OUT (for readers, and "
                                   "what a resume starts from) at most this often during a build, and at its end")


class LatentsConfig(_Section):
    backend: Literal["auto", "none", "diffusers"] = Field(
        "auto", description="auto: diffusers when weights are given, else none"
    )
    weights: str | None = Field(
        None, description="SD1.5 VAE: diffusers folder, .safetensors file, or a repo id in the local HF cache"
    )
    config_dir: str | None = Field(
        None, description="config for a single .safetensors file (folder with config.json, or LDM .yaml)"
    )
    hf_cache_dir: str | None = None
    device: str = "auto"
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    batch_size: int = Field(8, ge=1)
    allow_random_weights: bool = Field(
        False, description="random VAE weights (tests, benchmarks); recorded in the catalog"
    )


class PoseConfig(_Section):
    backend: Literal["mediapipe", "dwpose", "none"] = "mediapipe"
    det_path: str | None = Field(None, description="dwpose: yolox_l.onnx")
    pose_path: str | None = Field(None, description="dwpose: dw-ll_ucoco_384.onnx")
    device: str = "auto"
    det_score_thr: float = Field(0.3, ge=0.05, le=1)


class IdentityConfig(_Section):
    model_path: str | None = Field(
        None, description="ArcFace ONNX (e.g. insightface w600k_r50.onnx); None: no embeddings"
    )
    n_frames: int = Field(4, ge=1)


class IntensityConfig(_Section):
    levels: int = Field(64, ge=2, description="d: discrete intensity levels (HunyuanPortrait uses 64)")
    point_set: Literal["hunyuan5", "expressive"] = "hunyuan5"
    window: int = Field(16, ge=2, description="training window, frames")
    window_stride: int = Field(4, ge=1)


class PositionMapConfig(_Section):
    backend: Literal["mesh", "liveportrait", "none"] = "mesh"
    weights_dir: str | None = Field(None, description="liveportrait: folder with the three base_models .pth files")
    map_size: int = Field(64, ge=8, description="stored position map side")
    n_references: int = Field(1, ge=1, description="reference frames per clip (maps are against the first)")
    reference_rule: Literal["frontal_neutral", "frontal", "first", "middle"] = Field(
        "frontal_neutral", description="how references are chosen (stages/position_maps.py: choose_references)")
    device: str = "auto"
    allow_random_weights: bool = False


class ImageViewsConfig(_Section):
    k: int = Field(2, ge=0, description="random-crop driving views per image (stage-1 image data)")
    seed: int = 0


class FeaturesConfig(_Section):
    enabled: bool = Field(True, description="compute features for kept clips")
    position_map: PositionMapConfig = PositionMapConfig()
    latents: LatentsConfig = LatentsConfig()
    pose: PoseConfig = PoseConfig()
    identity: IdentityConfig = IdentityConfig()
    intensity: IntensityConfig = IntensityConfig()
    image_views: ImageViewsConfig = ImageViewsConfig()


class EvalSplitConfig(_Section):
    n: int = Field(100, ge=0, description="evaluation clips (RealPortrait: 100 from VFHQ and CelebV-HQ)")
    seed: int = 0
    datasets: list[str] = Field(default_factory=lambda: ["vfhq", "celebvhq"])


class DatasetEntry(_Section):
    name: str
    root: str
    cap: int | None = Field(None, ge=1, description="at most this many sources")
    weight: float = Field(1.0, ge=0, description="sampling weight of the dataset in training")
    options: dict = Field(default_factory=dict)


class BuildConfig(_Section):
    sampling: SamplingConfig = SamplingConfig()
    clips: ClipsConfig = ClipsConfig()
    faces: FacesConfig = FacesConfig()
    crop: CropConfig = CropConfig()
    thresholds: Thresholds = Thresholds()
    ray: RayConfig = RayConfig()
    storage: StorageConfig = StorageConfig()
    features: FeaturesConfig = FeaturesConfig()
    eval_split: EvalSplitConfig = EvalSplitConfig()
    datasets: list[DatasetEntry] = Field(default_factory=list)

    @field_validator("datasets")
    @classmethod
    def _unique_names(cls, v: list[DatasetEntry]) -> list[DatasetEntry]:
        names = [d.name + "=" + d.root for d in v]
        if len(set(names)) != len(names):
            raise ValueError("a dataset is listed twice")
        return v

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> BuildConfig:
    """Read a YAML build config (or defaults) and apply dotted-key overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}".splitlines()[0]) from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return BuildConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"invalid config at {where}: {first['msg']}") from None
