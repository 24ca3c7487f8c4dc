"""The one stage contract (stages/base.py): process(work) -> work on a typed per-source payload,
errors as data from one place, decoded crops shared by the stages of one actor."""
from __future__ import annotations

from manifests import records
from manifests.adapters.base import SourceSpec
from manifests.records import ClipRow, ErrorRow
from pipeline.build import stage_plans
from pipeline.config import load_config
from pipeline.ray_runner import ChainUDF
from pipeline.results import classify_errors, pack_works, unpack_works
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


def _spec(path, media_type: str = "image") -> SourceSpec:
    return SourceSpec(dataset="media", path=str(path), rel_path=path.name, media_type=media_type)


def _unit(steps, spec) -> SourceWork:
    """One source through one actor's stages, as the first operator of a build runs it."""
    return ChainUDF(steps, "r")._start(spec)


def test_an_exception_escaping_a_stage_is_one_error_row_and_later_stages_are_skipped(media_dir):
    Never.called = 0
    spec = _spec(media_dir / "images" / "s1.jpg")
    for exc, kind in (("value", "data"), ("memory", "infra")):
        work = _unit([("boom", Boom, {"exc": exc}), ("never", Never, {})], spec)
        assert work.failed and work.source.reasons == ["boom"] and work.clips == [] and work.frames == []
        errors = classify_errors(records.to_table(work.errors, ErrorRow))
        assert errors.to_pylist() == [{
            "source_id": spec.source_id, "path": spec.path, "dataset": "media", "stage": "boom",
            "message": "internal error: ValueError: bad pixels" if exc == "value" else "internal error: MemoryError: ",
            "run_id": "r", "kind": kind}]
    assert Never.called == 0


def test_a_unit_survives_the_trip_between_operators_unchanged(media_dir, small_vae_dir):
    config = load_config(None, {"features.latents.weights": str(small_vae_dir), "features.latents.device": "cpu"})
    (plan,) = stage_plans(config, "r", 1)
    steps = plan.steps
    works = [_unit(steps, _spec(media_dir / "images" / "s1.jpg")),
             _unit(steps, _spec(media_dir / "videos" / "d0.mp4", "video")),
             _unit([("boom", Boom, {"exc": "value"})], _spec(media_dir / "images" / "s2.jpg"))]
    assert [w.source.status for w in works] == ["kept", "kept", "error"] and len(works[0].frames) > 1
    payload = pack_works(works)
    assert sorted(payload) == ["clips", "errors", "frames", "sources"]  # one Arrow table per kind for the unit
    back = unpack_works(payload)
    assert [w.source_id for w in back] == [w.source_id for w in works]
    for w, b in zip(works, back):
        assert (b.source, b.errors, b.frame_attrs) == (w.source, w.errors, w.frame_attrs)
        assert records.to_table(b.clips, ClipRow).equals(records.to_table(w.clips, ClipRow))
        assert b.frames_table().equals(w.frames_table()) and b.frames_table().schema.metadata == \
            w.frames_table().schema.metadata
    assert pack_works(back) == payload


def test_each_stored_crop_is_jpeg_decoded_once_by_the_stages_of_one_actor(media_dir, small_vae_dir, monkeypatch):
    config = load_config(None, {"features.latents.weights": str(small_vae_dir), "features.latents.device": "cpu"})
    (plan,) = stage_plans(config, "r", 1)  # curate, features and latents in one actor (no GPU)
    assert [n for n, _, _ in plan.steps] == ["curate", "duplicate_keys", "features", "latents"]
    decoded: list[int] = []
    real = jpeg.decode_jpeg
    monkeypatch.setattr(jpeg, "decode_jpeg", lambda data: decoded.append(len(data)) or real(data))
    work = _unit(plan.steps, _spec(media_dir / "images" / "s1.jpg"))
    assert work.source.status == "kept"
    frames = work.frames  # the image and its random-crop views, each with a latent
    assert len(frames) == 1 + config.features.image_views.k and all(f.latent is not None for f in frames)
    assert sorted(decoded) == sorted(len(f.jpeg) for f in frames)
