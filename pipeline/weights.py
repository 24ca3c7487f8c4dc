"""Check user-supplied weights before any worker starts, and fingerprint them for the catalog.

A missing file must be one clear line naming the setting, from the driver, not an actor dying
on a cluster node. The sha256 of every weights file goes into ``runs.models_json`` so a build
says exactly which weights made its features.
"""
from __future__ import annotations

from pathlib import Path

from manifests.shards import sha256_of

from .config import BuildConfig, ConfigError

_WEIGHT_SUFFIXES = {".safetensors", ".pth", ".onnx", ".bin", ".ckpt", ".pt"}


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", ".", "~")) or Path(value).suffix in _WEIGHT_SUFFIXES or Path(value).exists()


def weight_settings(config: BuildConfig) -> dict[str, str]:
    """Setting name -> path, for every weights path the chosen backends will read."""
    f = config.features
    out = {}
    if config.faces.detector == "scrfd":
        out["faces.detector_path"] = config.faces.detector_path or ""
    if not f.enabled:
        return out
    if f.latents.weights and _looks_like_path(f.latents.weights):
        out["features.latents.weights"] = f.latents.weights
    if f.latents.config_dir:
        out["features.latents.config_dir"] = f.latents.config_dir
    if f.pose.backend == "dwpose":
        out["features.pose.det_path"] = f.pose.det_path or ""
        out["features.pose.pose_path"] = f.pose.pose_path or ""
    if f.identity.model_path:
        out["features.identity.model_path"] = f.identity.model_path
    if f.position_map.backend == "liveportrait" and (
        f.position_map.weights_dir or not f.position_map.allow_random_weights
    ):
        out["features.position_map.weights_dir"] = f.position_map.weights_dir or ""
    return out


def check_weights(config: BuildConfig) -> None:
    for setting, value in weight_settings(config).items():
        if not value:
            raise ConfigError(f"{setting} is not set, but the chosen backend needs it")
        if not Path(value).expanduser().exists():
            raise ConfigError(f"{setting}: not found: {value}")


def fingerprint(path: str) -> dict[str, str]:
    """sha256 of a weights file, or of each weights file in a folder (relative names)."""
    p = Path(path).expanduser()
    files = (
        [p]
        if p.is_file()
        else sorted(q for q in p.rglob("*") if q.is_file() and q.suffix in _WEIGHT_SUFFIXES | {".json", ".yaml"})
    )
    return {f.name if p.is_file() else f.relative_to(p).as_posix(): sha256_of(f) for f in files}


def fingerprints(config: BuildConfig) -> dict[str, dict[str, str]]:
    return {setting: fingerprint(path) for setting, path in weight_settings(config).items() if path}
