"""The build configuration: one typed place for every setting (YAML file or defaults).

Unknown keys are errors (a typo must not silently fall back to a default). The whole
resolved config is stored in ``runs.config_json`` of the catalog. The sections a stage reads
are defined next to that stage (stages/: ``ClipsConfig`` in clips.py, ``LatentsConfig`` in
latents.py, ...) and handed to it as they are; this module composes them with the sections
only the orchestration reads (ray, storage, eval split, datasets).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from manifests.errors import PortraitError
from stages.base import Settings as _Section
from stages.clips import ClipsConfig
from stages.crop import CropConfig
from stages.curate import SamplingConfig, Thresholds
from stages.faces import FacesConfig
from stages.identity import IdentityConfig
from stages.image_views import ImageViewsConfig
from stages.intensity import IntensityConfig
from stages.latents import LatentsConfig
from stages.pose import PoseConfig
from stages.position_maps import PositionMapConfig

__all__ = ["BuildConfig", "ClipsConfig", "ConfigError", "CropConfig", "DatasetEntry", "EvalSplitConfig", "FacesConfig",
           "FeaturesConfig", "IdentityConfig", "ImageViewsConfig", "IntensityConfig", "LatentsConfig", "PoseConfig",
           "PositionMapConfig", "RayConfig", "SamplingConfig", "StorageConfig", "Thresholds", "load_config"]


class ConfigError(PortraitError):
    """A configuration problem: the CLI prints it as one line and exits non-zero."""


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
    identity_threshold: float = Field(
        0.4, gt=0, le=1,
        description="ArcFace cosine at or above which two clips show the same person: a drawn eval clip's "
                    "look-alikes in any dataset stay out of training with it (docs/duplicates.md)")


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
