"""The build configuration: one typed place for every setting (YAML file or defaults).

Unknown keys are errors (a typo must not silently fall back to a default). The whole
resolved config is stored in ``runs.config_json`` of the catalog.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(Exception):
    """A configuration problem: the CLI prints it as one line and exits non-zero."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SamplingConfig(_Section):
    fps: float = Field(12.5, gt=0, description="frames per second sampled from videos and stored")
    max_image_side: int = Field(4096, ge=256, description="larger images are reduced before analysis")


class ClipsConfig(_Section):
    max_clip_s: float = Field(10.0, gt=0, description="longer face tracks are split")
    max_jump: float = Field(0.5, gt=0, description="face centre jump (in face sizes) between samples that ends a clip")
    max_scale_change: float = Field(1.6, gt=1, description="face size ratio between samples that ends a clip")
    cut_threshold: float = Field(0.5, gt=0, le=1, description="frame histogram distance that marks a cut")


class CropConfig(_Section):
    out_size: int = Field(512, ge=64, description="side of the stored square crop, pixels")
    scale: float = Field(3.2, gt=1, description="crop side / face box side: head, hair and shoulders")
    shift_down: float = Field(0.35, description="crop centre below the face centre, in face sizes")
    jpeg_quality: int = Field(90, ge=50, le=100)


class Thresholds(_Section):
    """Verdict thresholds. Names are the parameters of manifests/sql/rethreshold.sql."""

    min_crop_source_px: float = Field(256, description="source pixels behind the crop side")
    min_face_px: float = Field(64, description="face box side in source pixels")
    min_face_frac: float = Field(0.15, description="face side / crop side")
    max_pad_frac: float = Field(0.25, description="share of the crop outside the frame")
    max_faces: int = Field(1, description="faces in one frame")
    min_face_conf: float = Field(0.5)
    max_occlusion: float = Field(0.5, description="0 = clear, 1 = mouth or eyes covered")
    min_lighting_mean: float = Field(60, description="face luma, 0..255")
    max_lighting_mean: float = Field(225)
    min_lighting_std: float = Field(12, description="face luma spread: flat faces are washed out")
    max_lighting_clipped: float = Field(0.25, description="share of face pixels crushed or blown")
    max_bg_motion: float = Field(2.0, description="% of the frame diagonal per second")
    min_blur: float = Field(20.0, description="variance of Laplacian on the face at 128 px")
    min_clip_s: float = Field(1.0, description="video clip duration, seconds")

    def as_params(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.model_dump().items()}


class RayConfig(_Section):
    address: Optional[str] = Field(None, description="Ray cluster address; None = local instance (or RAY_ADDRESS)")
    num_cpus: Optional[int] = Field(None, ge=1, description="CPUs of the local instance; None = all")
    max_workers: Optional[int] = Field(None, ge=1, description="upper bound on each actor pool; None = CPUs")
    executor: Literal["ray", "inline"] = Field("ray", description="'inline' runs the stages in the driver (debugging)")


class StorageConfig(_Section):
    shard_target_mb: float = Field(256, gt=0, description="a shard is written when its frames reach this size")
    row_group_rows: int = Field(1024, ge=16)
    compression: Literal["zstd", "snappy", "none"] = "zstd"


class DatasetEntry(_Section):
    name: str
    root: str
    cap: Optional[int] = Field(None, ge=1, description="at most this many sources")
    weight: float = Field(1.0, ge=0, description="sampling weight of the dataset in training")
    options: dict = Field(default_factory=dict)


class BuildConfig(_Section):
    sampling: SamplingConfig = SamplingConfig()
    clips: ClipsConfig = ClipsConfig()
    crop: CropConfig = CropConfig()
    thresholds: Thresholds = Thresholds()
    ray: RayConfig = RayConfig()
    storage: StorageConfig = StorageConfig()
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
