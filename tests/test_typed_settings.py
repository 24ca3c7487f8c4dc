"""Settings are typed from the config to the stage, and the driver loads no model.

The build config is composed from the settings sections the stages define (stages/*.py), so
its keys, defaults, validation messages, JSON and hash must be those of before: the recorded
``config_json`` / ``config_hash`` of earlier runs still compare equal. Stages declare their
resources and weights files as class-level facts and describe themselves without loading a
model, so planning, describing and checking weights never call a ``setup()``.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.build import build, describe_stages, stage_plans
from pipeline.config import ConfigError, load_config
from pipeline.steps import stage_steps
from pipeline.weights import check_weights, weight_settings
from stages import curate, face_backends, faces, features, identity, latents, pose, position_maps, quality
from stages.base import Settings

REPO = Path(__file__).resolve().parents[1]
# load_config(None, {}).to_json(): a refactor must not change it. New settings and defaults do
# (issue 22: eval_split.identity_threshold, min_face_person, min_detail_train, min_detail_4x;
# issue 23: features.pose.every, sampling.motion_every 2 -> 4):
# then this file and the hash are updated in the same commit.
EXPECTED = REPO / "tests" / "data" / "default_config.json"


def test_default_config_json_and_hash_are_unchanged():
    config = load_config(None, {})
    assert config.to_json() == EXPECTED.read_text().strip()
    assert config.hash() == "29cb8039198fdc85"


@pytest.mark.parametrize("override, message", [
    ({"clips.max_jump": 0}, "invalid config at clips.max_jump: Input should be greater than 0"),
    ({"faces.detector": "x"}, "invalid config at faces.detector: Input should be 'mediapipe' or 'scrfd'"),
    ({"clips.nope": 1}, "invalid config at clips.nope: Extra inputs are not permitted"),
    ({"features.latents.batch_size": 0},
     "invalid config at features.latents.batch_size: Input should be greater than or equal to 1"),
    ({"clips": 3}, "invalid config at clips: Input should be a valid dictionary or instance of ClipsConfig"),
    ({"features.position_map.reference_rule": "z"}, "invalid config at features.position_map.reference_rule: "
     "Input should be 'frontal_neutral', 'frontal', 'first' or 'middle'"),
    ({"crop.out_size": 100}, "invalid config at crop.out_size: Input should be a multiple of 8"),
    ({"thresholds.min_face_px": "a"},
     "invalid config at thresholds.min_face_px: Input should be a valid number, unable to parse string as a number"),
    ({"sampling.fps": -1}, "invalid config at sampling.fps: Input should be greater than 0"),
])
def test_overrides_validate_with_the_same_messages(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, override)
    assert str(err.value) == message


def test_overrides_reach_the_stages_as_the_config_sections_themselves():
    config = load_config(None, {"clips.min_occluded_s": 0.7, "features.intensity.window": 8,
                                "features.position_map.n_references": 2, "features.image_views.k": 0})
    steps = {name: kwargs for name, _, kwargs in stage_steps(config)}
    assert steps["curate"]["clips"] is config.clips and steps["latents"]["latents"] is config.features.latents
    for kwargs in steps.values():  # typed sections (or plain values), never dumped dicts
        assert not any(isinstance(v, dict) for v in kwargs.values())
        assert all(isinstance(v, Settings | int) for v in kwargs.values())
    cur = curate.CurateStage(**steps["curate"])
    assert cur.min_occluded_s == 0.7 and cur.thresholds == config.thresholds.as_params()
    feat = features.ClipFeatureStage(**steps["features"])
    assert (feat.n_references, feat.intensity.window, feat.image_views.k) == (2, 8, 0)


_SETUPS = [curate.CurateStage, features.ClipFeatureStage, features.LatentFeatureStage, latents.LatentStage,
           identity.IdentityStage, pose.PoseStage, position_maps.PositionMapStage, faces.FaceAnalyzer,
           face_backends.ScrfdDetector, quality.BackgroundMotion]


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any setup() (the only place models load) in this process fails the test."""
    calls: list[str] = []

    def forbidden(self, *args, **kwargs):
        calls.append(type(self).__name__)
        raise AssertionError(f"{type(self).__name__}.setup() called in the driver")

    for cls in _SETUPS:
        monkeypatch.setattr(cls, "setup", forbidden)
    return calls


def test_planning_describing_and_checking_weights_load_no_model(no_model_loads, small_vae_dir):
    config = load_config(None, {"features.latents.weights": str(small_vae_dir), "features.latents.device": "cpu"})
    cpu, gpu = stage_plans(config, "r", workers=2, gpus=1)
    assert [n for n, _, _ in gpu.steps] == ["latents"] and gpu.num_gpus == 1
    check_weights(config)
    models = describe_stages(config)
    assert models["latents"]["weights"] == str(small_vae_dir) and models["latents"]["random_weights"] is False
    assert models["latents"]["scaling_factor"] == pytest.approx(0.18215)  # from config.json, not the model
    assert models["pose"]["backend"] == "mediapipe" and models["identity"]["backend"] == "none"
    assert weight_settings(config) == {"features.latents.weights": str(small_vae_dir)}
    assert no_model_loads == []


def test_weights_each_backend_needs_come_from_the_stages(no_model_loads, tmp_path):
    config = load_config(None, {"faces.detector": "scrfd", "features.pose.backend": "dwpose",
                                "features.position_map.backend": "liveportrait",
                                "features.identity.model_path": str(tmp_path / "arc.onnx")})
    assert weight_settings(config) == {
        "faces.detector_path": "", "features.pose.det_path": "", "features.pose.pose_path": "",
        "features.identity.model_path": str(tmp_path / "arc.onnx"), "features.position_map.weights_dir": ""}
    with pytest.raises(ConfigError, match="is not set, but the chosen backend needs it"):
        check_weights(config)
    assert no_model_loads == []


def test_build_help_imports_no_model_library():
    code = ("import sys\nfrom pipeline.cli import main\ntry:\n    main(['build', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint('MODULES', sorted(m for m in ('torch', 'diffusers', 'mediapipe', 'insightface', "
            "'onnxruntime', 'rtmlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "MODULES []" in out.stdout, out.stdout + out.stderr


@pytest.mark.timeout(600)
def test_a_one_image_ray_build_loads_no_model_in_the_driver(no_model_loads, media_dir, small_vae_dir, tmp_path):
    """On the Ray executor the stages run in the workers: the driver plans, describes, checks
    weights and commits, and every setup() it would make fails the test (the workers import the
    stage classes afresh, unpatched)."""
    import ray

    from manifests.catalog import Catalog
    from pipeline.sources import dataset_entries, discover

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(media_dir / "images" / "s1.jpg", media / "s1.jpg")
    config = load_config(None, {"features.latents.weights": str(small_vae_dir), "ray.executor": "ray",
                                "ray.num_cpus": 1})
    try:
        stats = build(config, tmp_path / "out", discover(dataset_entries(config, [str(media)], [])), progress=False)
    finally:
        ray.shutdown()
    assert stats.sources["kept"] == 1 and stats.frames > 0
    assert no_model_loads == []
    with Catalog(tmp_path / "out", read_only=True) as cat:
        models = json.loads(cat.latest_run()["models_json"])
    assert models["latents"]["weights"] == str(small_vae_dir) and "features.latents.weights" in models["weights_sha256"]
