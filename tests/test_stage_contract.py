"""The one stage contract (stages/base.py): process(work) -> work on a typed per-source payload,
errors as data from one place, decoded crops shared by the stages of one actor."""
from __future__ import annotations

import pyarrow as pa

from manifests.adapters.base import SourceSpec
from pipeline.build import stage_plans
from pipeline.config import load_config
from pipeline.ray_runner import ChainUDF
from pipeline.results import classify_errors, spec_to_json
from stages import jpeg
from stages.base import SourceWork, Stage


class Boom(Stage):
    name = "boom"

    def __init__(self, exc: str):
        self.exc = exc

    def process(self, work):
        raise {"value": ValueError("bad pixels\nsecond line"), "memory": MemoryError()}[self.exc]


class Never(Stage):
    name = "never"
    called = 0

    def process(self, work):
        Never.called += 1
        return work


def _spec(path) -> SourceSpec:
    return SourceSpec(dataset="media", path=str(path), rel_path=path.name, media_type="image")


def _unit(steps, spec) -> SourceWork:
    """One source through one actor's stages, as the first operator of a build runs it."""
    return ChainUDF(steps, "r")._start(spec_to_json(spec))


def test_an_exception_escaping_a_stage_is_one_error_row_and_later_stages_are_skipped(media_dir):
    Never.called = 0
    spec = _spec(media_dir / "images" / "s1.jpg")
    for exc, kind in (("value", "data"), ("memory", "infra")):
        work = _unit([("boom", Boom, {"exc": exc}), ("never", Never, {})], spec)
        assert work.failed and work.source["reasons"] == ["boom"] and work.clips == [] and work.frames == []
        errors = classify_errors(pa.Table.from_pylist(work.errors, schema=work.to_tables()["errors"].schema))
        assert errors.to_pylist() == [{
            "source_id": spec.source_id, "path": spec.path, "dataset": "media", "stage": "boom",
            "message": "internal error: ValueError: bad pixels" if exc == "value" else "internal error: MemoryError: ",
            "run_id": "r", "kind": kind}]
    assert Never.called == 0


def test_a_work_survives_the_trip_between_operators_unchanged(media_dir):
    config = load_config(None, {"features.enabled": False})
    (plan,) = stage_plans(config, "r", 1)
    work = _unit(plan.steps, _spec(media_dir / "images" / "s1.jpg"))
    assert work.source["status"] == "kept" and len(work.frames) == 1
    back = SourceWork.from_tables(work.to_tables())
    for part in ("sources", "clips", "frames", "errors"):
        assert back.to_tables()[part].equals(work.to_tables()[part]), part


def test_each_stored_crop_is_jpeg_decoded_once_by_the_stages_of_one_actor(media_dir, small_vae_dir, monkeypatch):
    config = load_config(None, {"features.latents.weights": str(small_vae_dir), "features.latents.device": "cpu"})
    (plan,) = stage_plans(config, "r", 1)  # curate, features and latents in one actor (no GPU)
    assert [n for n, _, _ in plan.steps] == ["curate", "features", "latents"]
    decoded: list[int] = []
    real = jpeg.decode_jpeg
    monkeypatch.setattr(jpeg, "decode_jpeg", lambda data: decoded.append(len(data)) or real(data))
    work = _unit(plan.steps, _spec(media_dir / "images" / "s1.jpg"))
    assert work.source["status"] == "kept"
    frames = work.frames  # the image and its random-crop views, each with a latent
    assert len(frames) == 1 + config.features.image_views.k and all(f["latent"] is not None for f in frames)
    assert sorted(decoded) == sorted(len(f["jpeg"]) for f in frames)
