"""End-to-end builds on the real fixture media, on local Ray: accounting, storage, SQL, resume."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from manifests.catalog import Catalog
from manifests.shards import SHARD_DIR, sha256_of
from pipeline import build as build_mod
from pipeline.build import build
from pipeline.config import Thresholds, load_config
from pipeline.sources import dataset_entries, discover

VIDEOS = ["d0", "d3", "d9", "s18", "s20"]


def run_build(inputs: list[Path], out: Path, **overrides):
    config = load_config(None, {"storage.shard_target_mb": 8, **overrides})
    return build(config, out, discover(dataset_entries(config, [str(p) for p in inputs], [])), progress=False)


@pytest.fixture(scope="module")
def fixture_build(media_dir, small_vae_dir, tmp_path_factory):
    """`portrait build --input ../shared/fixtures/media` with every feature (a small VAE)."""
    out = tmp_path_factory.mktemp("build") / "out"
    stats = run_build([media_dir], out, **{"features.latents.weights": str(small_vae_dir)})
    return out, stats


def table(cat: Catalog, sql: str) -> list[dict]:
    return cat.query(sql).to_pylist()


def test_every_fixture_is_accounted_for(fixture_build):
    out, stats = fixture_build
    with Catalog(out, read_only=True) as cat:
        rows = table(cat, "SELECT rel_path, media_type, status, reasons FROM sources ORDER BY rel_path")
    assert len(rows) == 16
    assert sum(r["media_type"] == "video" for r in rows) == 5
    assert sum(r["media_type"] == "image" for r in rows) == 11
    for r in rows:
        assert r["status"] in ("kept", "rejected", "error")
        if r["status"] != "kept":
            assert r["reasons"], r
    by_name = {Path(r["rel_path"]).stem: r for r in rows}
    for animal in ("s23", "s30"):
        assert by_name[animal]["status"] == "rejected" and by_name[animal]["reasons"] == ["no_face"]


def test_human_faces_in_real_videos_are_kept(fixture_build):
    out, _ = fixture_build
    with Catalog(out, read_only=True) as cat:
        rows = table(cat, """SELECT s.rel_path, count(*) FILTER (WHERE c.verdict = 'kept') AS kept,
                                    list(c.reasons) AS reasons
                             FROM sources s JOIN clips c USING (source_id)
                             WHERE s.media_type = 'video' GROUP BY s.rel_path""")
    kept = {Path(r["rel_path"]).stem: r["kept"] for r in rows}
    assert set(kept) == set(VIDEOS)
    for name in VIDEOS:
        assert kept[name] >= 1, [r for r in rows if name in r["rel_path"]]


def test_frames_are_stored_for_kept_clips_only(fixture_build):
    out, stats = fixture_build
    with Catalog(out, read_only=True) as cat:
        kept = table(cat, "SELECT clip_id, n_frames, out_size FROM clips WHERE verdict = 'kept'")
        counts = {
            r["clip_id"]: r["n"]
            for r in table(cat, "SELECT clip_id, count(*) AS n FROM frames WHERE view = 0 GROUP BY clip_id")
        }
        sample = table(cat, "SELECT jpeg, [len(landmarks), len(landmarks[1])] AS shape, face_box FROM frames LIMIT 3")
        rejected_frames = table(
            cat, "SELECT count(*) AS n FROM frames f JOIN clips c USING (clip_id) WHERE c.verdict = 'rejected'"
        )
    assert counts == {r["clip_id"]: r["n_frames"] for r in kept}
    assert rejected_frames[0]["n"] == 0
    for s in sample:
        img = cv2.imdecode(np.frombuffer(s["jpeg"], np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (512, 512, 3)
        assert s["shape"] == [478, 2]
        x0, y0, x1, y1 = s["face_box"]
        assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512


def test_every_kept_frame_of_the_fixtures_has_its_features(fixture_build):
    out, _ = fixture_build
    with Catalog(out, read_only=True) as cat:
        missing = table(
            cat,
            """SELECT f.clip_id, f.view, f.latent IS NULL AS no_latent, f.position_map IS NULL AS no_map,
                                       f.pose IS NULL AS no_pose
                                FROM frames f JOIN clips c USING (clip_id)
                                WHERE f.latent IS NULL OR f.position_map IS NULL OR (f.view = 0 AND f.pose IS NULL)""",
        )
        videos = table(cat, """SELECT clip_id, intensity_exp, intensity_head, intensity_exp_level, intensity_head_level
                               FROM clips WHERE verdict = 'kept' AND media_type = 'video'""")
    assert missing == []
    assert videos and all(v["intensity_exp"] is not None and v["intensity_head_level"] is not None for v in videos)


def test_shards_are_complete_and_checksummed(fixture_build):
    out, _ = fixture_build
    with Catalog(out, read_only=True) as cat:
        shards = table(cat, "SELECT path, rows, bytes, sha256 FROM shards")
        n_frames = table(cat, "SELECT count(*) AS n FROM frames")[0]["n"]
    assert shards and sum(s["rows"] for s in shards) == n_frames
    for s in shards:
        p = out / s["path"]
        assert p.stat().st_size == s["bytes"] and sha256_of(p) == s["sha256"]
    assert not list((out / SHARD_DIR).glob("*.partial"))


def test_rethreshold_query_reproduces_the_build(fixture_build):
    out, _ = fixture_build
    with Catalog(out, read_only=True) as cat:
        built = {
            r["clip_id"]: (r["verdict"], r["reasons"])
            for r in table(cat, "SELECT clip_id, verdict, reasons FROM clips")
        }
        again = {r["clip_id"]: (r["verdict"], r["reasons"]) for r in cat.named("rethreshold").to_pylist()}
        # Every threshold as loose as it goes: every clip is kept, without recomputing anything.
        open_all = {k: (-1e9 if k.startswith("min_") else 1e9) for k in Thresholds().as_params()}
        looser = cat.named("rethreshold", open_all).to_pylist()
        only_occlusion = cat.named("rethreshold", {"max_occluded_share": 1.0}).to_pylist()
    assert again == built
    assert all(r["verdict"] == "kept" for r in looser) and len(looser) == len(built)
    # Lifting one threshold removes exactly that reason and nothing else.
    assert {r["clip_id"]: [x for x in built[r["clip_id"]][1] if x != "occlusion"] for r in only_occlusion} == \
        {r["clip_id"]: r["reasons"] for r in only_occlusion}


def _content(out: Path) -> dict:
    """Everything a user reads, without run ids, times or shard grouping."""
    with Catalog(out, read_only=True) as cat:
        sources = cat.query("SELECT * EXCLUDE (run_id) FROM sources ORDER BY source_id").to_pylist()
        clips = cat.query("SELECT * EXCLUDE (run_id) FROM clips ORDER BY clip_id").to_pylist()
        frames = cat.query(
            "SELECT clip_id, frame_index, view, md5(jpeg::BLOB) AS h, landmarks AS lm FROM frames ORDER BY ALL"
        ).to_pylist()
        errors = cat.query("SELECT source_id, stage, message FROM errors ORDER BY ALL").to_pylist()
    return {"sources": sources, "clips": clips, "frames": frames, "errors": errors}


@pytest.fixture(scope="module")
def small_inputs(media_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("small") / "media"
    folder.mkdir()
    for name in ["videos/d0.mp4", "images/s1.jpg", "images/s12.jpg", "images/s30.jpg"]:
        shutil.copy(media_dir / name, folder / Path(name).name)
    (folder / "broken.mp4").write_bytes(b"not a video")
    return folder


def test_rerun_skips_finished_sources_and_changes_nothing(small_inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    run_build([small_inputs], out)
    before = _content(out)

    def no_ray(*args, **kwargs):
        raise AssertionError("a build with nothing left to do started Ray")

    monkeypatch.setattr(build_mod.ray_runner, "init_ray", no_ray)
    stats = run_build([small_inputs], out)
    assert stats.skipped == 5 and sum(stats.sources.values()) == 0
    assert _content(out) == before
    with Catalog(out, read_only=True) as cat:
        assert cat.query("SELECT count(*) AS n FROM runs").to_pylist()[0]["n"] == 2


def test_interrupted_build_resumes_to_the_same_catalog(small_inputs, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    run_build([small_inputs], reference, **{"storage.shard_target_mb": 0.001})
    out = tmp_path / "interrupted"
    calls = {"n": 0}
    real_add = build_mod.Committer.add

    def add_then_stop(self, row):
        calls["n"] += 1
        if calls["n"] == 3:
            # Stopped mid-build: a half-written shard is left behind, as a killed process would
            # (announced by its pending marker, which is how cleanup knows the build wrote it).
            (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
            (out / SHARD_DIR / "20260101T000000-deadbe-00009.pending.json").write_text("{}")
            (out / SHARD_DIR / "20260101T000000-deadbe-00009.parquet.partial").write_bytes(b"PAR1 partial")
            raise KeyboardInterrupt
        return real_add(self, row)

    monkeypatch.setattr(build_mod.Committer, "add", add_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_build([small_inputs], out, **{"storage.shard_target_mb": 0.001})
    monkeypatch.setattr(build_mod.Committer, "add", real_add)
    with Catalog(out, read_only=True) as cat:
        assert 0 < len(cat.done_source_ids()) < 5
        assert cat.latest_run()["status"] == "interrupted"
    run_build([small_inputs], out, **{"storage.shard_target_mb": 0.001})
    assert _content(out) == _content(reference)
    assert not list((out / SHARD_DIR).glob("*.partial")) and not list((out / SHARD_DIR).glob("*.pending.json"))


def test_bad_inputs_are_accounted_and_the_build_goes_on(media_dir, tmp_path):
    from tests.media_makers import make_bad_inputs

    made = make_bad_inputs(tmp_path / "bad", media_dir)
    out = tmp_path / "out"
    run_build([tmp_path / "bad"], out)
    with Catalog(out, read_only=True) as cat:
        src = {Path(r["rel_path"]).name: r for r in table(cat, "SELECT rel_path, status, reasons FROM sources")}
        errors = {Path(r["path"]).name: r["message"] for r in table(cat, "SELECT path, message FROM errors")}
    assert set(src) == {p.name for p in made.values()} | {"animal.jpg"}
    for name in ("zero.mp4", "notes.mp4", "truncated.mp4"):
        assert src[name]["status"] == "error" and name in errors
        assert "\n" not in errors[name]
    for name in ("cmyk.jpg", "deep.png", "rotated.mp4", "vfr.mp4"):
        assert src[name]["status"] == "kept", src[name]
    assert src["huge.jpg"]["status"] in ("kept", "rejected")
    assert src["animal.jpg"]["reasons"] == ["no_face"]


def test_short_videos_share_shards_by_bytes_not_by_count(media_dir, tmp_path):
    """Shard count follows bytes: many short clips pack into shards of `shard_target_mb`, and
    the stored frames and verdicts are those of one shard per video."""
    from manifests.adapters.base import SourceSpec
    from pipeline.build import plan_units

    # 40 short videos with default settings on two workers: one unit (so one shard) per worker.
    specs = [SourceSpec("folder", f"/m/c{i}.mp4", f"c{i}.mp4", "video") for i in range(40)]
    assert [len(u) for u in plan_units(specs, workers=2, shard_target_mb=256)] == [20, 20]
    # At scale the target sets the unit: 10 s clips at 12.5 fps, ~5 MB each, ~51 to a shard.
    many = [SourceSpec("folder", f"/m/c{i}.mp4", f"c{i}.mp4", "video") for i in range(5000)]
    sizes = [len(u) for u in plan_units(many, workers=64, shard_target_mb=256)]
    assert max(sizes) == 51 and len(sizes) == 99
    # A source lost to a crashed worker before gets a unit of its own.
    assert [len(u) for u in plan_units(specs[:4], 1, 256, alone={specs[1].source_id})] == [1, 1, 2]

    folder = tmp_path / "media"
    folder.mkdir()
    for i in range(6):
        shutil.copy(media_dir / "videos" / "d0.mp4", folder / f"copy{i}.mp4")
    packed, apart = tmp_path / "packed", tmp_path / "apart"
    settings = {"ray.executor": "inline", "features.enabled": False}
    run_build([folder], packed, **{**settings, "storage.shard_target_mb": 256})
    run_build([folder], apart, **{**settings, "storage.shard_target_mb": 0.001})
    with Catalog(packed, read_only=True) as cat:
        shards = table(cat, "SELECT path, len(source_ids) AS n FROM shards")
        frames = table(cat, "SELECT count(DISTINCT source_id) AS n FROM frames")[0]["n"]
    assert len(shards) == 1 and shards[0]["n"] == 6 and frames == 6
    with Catalog(apart, read_only=True) as cat:
        assert len(table(cat, "SELECT path FROM shards")) == 6
    assert _content(packed) == _content(apart)
    # Every stored value of the six copies is the same: a source's rows do not depend on the
    # sources its worker analysed before it (a per-worker count once leaked into face_conf).
    with Catalog(packed, read_only=True) as cat:
        rows = cat.query("SELECT * EXCLUDE (clip_id, source_id), source_id FROM frames "
                         "ORDER BY source_id, frame_index, view").to_pylist()
    by_source: dict[str, list] = {}
    for r in rows:
        by_source.setdefault(r.pop("source_id"), []).append(r)
    first, *others = by_source.values()
    assert len(others) == 5 and all(o == first for o in others)
