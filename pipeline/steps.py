"""Which stages a build config runs, in order, each with its own typed settings sections.

The one place that knows how the config's sections map onto the stages' constructors: the
planner (pipeline/build.py: ``stage_plans``), the driver's model record (``describe_stages``)
and the weights check (pipeline/weights.py) all start from :func:`stage_steps`. Settings are
handed over as the config's own pydantic sections (stages define them), never as dicts.
"""
from __future__ import annotations

from stages.curate import CurateStage
from stages.duplicate_keys import DuplicateKeysStage
from stages.features import ClipFeatureStage, LatentFeatureStage

from .config import BuildConfig


def stage_steps(config: BuildConfig) -> list[tuple[str, type, dict]]:
    """(name, stage class, constructor keyword arguments) of the stages a config runs: curate
    and the clips' duplicate keys, then (with features) the clip features and the latents."""
    curate = dict(sampling=config.sampling, clips=config.clips, crop=config.crop, faces=config.faces,
                  thresholds=config.thresholds)
    steps: list[tuple[str, type, dict]] = [(CurateStage.name, CurateStage, curate),
                                           (DuplicateKeysStage.name, DuplicateKeysStage, {})]
    f = config.features
    if f.enabled:
        features = dict(position_map=f.position_map, pose=f.pose, identity=f.identity, intensity=f.intensity,
                        image_views=f.image_views, jpeg_quality=config.crop.jpeg_quality)
        steps += [(ClipFeatureStage.name, ClipFeatureStage, features),
                  (LatentFeatureStage.name, LatentFeatureStage, dict(latents=f.latents))]
    return steps
