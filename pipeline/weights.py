"""Check user-supplied weights before any worker starts, and fingerprint them for the catalog.

A missing file must be one clear line naming the setting, from the driver, not an actor dying
on a cluster node. The sha256 of every weights file goes into ``runs.models_json`` so a build
says exactly which weights made its features. Which backend reads which file is the stages'
own fact (``weight_files`` of each stage class, stages/); this module only asks them.
"""
from __future__ import annotations

from pathlib import Path

from manifests.shards import sha256_of
from stages.base import WEIGHT_SUFFIXES

from .config import BuildConfig, ConfigError
from .steps import stage_steps


def weight_settings(config: BuildConfig) -> dict[str, str]:
    """Setting name -> path, for every weights path the chosen backends will read ('' where
    one is needed and not set), as each stage of the config declares them."""
    out: dict[str, str] = {}
    for _, factory, kwargs in stage_steps(config):
        out.update(factory.weight_files(**kwargs))
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
        else sorted(q for q in p.rglob("*") if q.is_file() and q.suffix in WEIGHT_SUFFIXES | {".json", ".yaml"})
    )
    return {f.name if p.is_file() else f.relative_to(p).as_posix(): sha256_of(f) for f in files}


def fingerprints(config: BuildConfig) -> dict[str, dict[str, str]]:
    return {setting: fingerprint(path) for setting, path in weight_settings(config).items() if path}
