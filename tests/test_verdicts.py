"""Verdicts through the real build: real fixture media a curator keeps are kept, strong
degradations of them (made by pipeline/evaluation/devset.py) are rejected for the right reason."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from manifests.catalog import Catalog
from pipeline.build import build
from pipeline.config import load_config
from pipeline.evaluation import devset
from pipeline.sources import dataset_entries, discover


@pytest.fixture(scope="module")
def variants_build(media_dir, fixtures_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("variants") / "media"
    folder.mkdir()
    videos, images = media_dir / "videos", media_dir / "images"
    teeth = fixtures_dir / "media-extra" / "videos" / "xportrait_driving.mp4"
    if not teeth.is_file():
        pytest.skip(f"{teeth} is absent")
    devset.map_video(teeth, folder / "teeth.mp4", lambda i, rgb: rgb, max_frames=48)  # grimaces, teeth: 4 s
    shutil.copy(videos / "d0.mp4", folder / "d0.mp4")
    shutil.copy(videos / "d3.mp4", folder / "d3.mp4")
    devset.darken(videos / "d3.mp4", folder / "d3_dark.mp4", factor=0.2, max_frames=90)
    devset.map_video(
        videos / "d3.mp4", folder / "d3_down_up.mp4", lambda i, rgb: devset.down_up_frame(rgb, 4), max_frames=90
    )
    devset.replace_green_background(videos / "d0.mp4", folder / "d0_moving_bg.mp4", texture_seed=3)
    tracker = devset._FaceTracker()
    try:
        eyes = devset.Occluder("eyes", "photo", seed=5)
        mouth = devset.Occluder("mouth", "flat", seed=11)
        _occlude(videos / "d3.mp4", folder / "d3_eyes_textured.mp4", eyes, tracker, 0, 90)
        tracker.previous = tracker.last = None
        _occlude(videos / "d3.mp4", folder / "d3_mouth_flat.mp4", mouth, tracker, 0, 90)
        tracker.previous = tracker.last = None
        # 8 s of d3 with the mouth covered from 3 s to 5 s only.
        _occlude(videos / "d3.mp4", folder / "d3_middle_occluded.mp4", mouth, tracker, 90, 150, max_frames=240)
    finally:
        tracker.close()
    # A close-up: the face of s1 fills the picture (the full-range detector alone misses these).
    s1 = devset._read_image(images / "s1.jpg")
    obs_side = min(s1.shape[:2])
    closeup = s1[
        int(0.12 * obs_side) : int(0.12 * obs_side) + int(0.62 * obs_side), (s1.shape[1] - int(0.62 * obs_side)) // 2 :
    ][:, : int(0.62 * obs_side)]
    cv2.imwrite(str(folder / "closeup.png"), cv2.cvtColor(np.ascontiguousarray(closeup), cv2.COLOR_RGB2BGR))
    shutil.copy(images / "s30.jpg", folder / "dog.jpg")
    config = load_config(None, {"features.enabled": False, "ray.executor": "inline"})
    out = folder.parent / "out"
    build(config, out, discover(dataset_entries(config, [str(folder)], [])), progress=False)
    return out


@pytest.fixture(scope="module")
def verdicts(variants_build) -> dict[str, list[dict]]:
    with Catalog(variants_build, read_only=True) as cat:
        rows = cat.query("SELECT s.rel_path, s.status, s.reasons AS source_reasons, c.verdict, c.reasons, c.n_frames, "
                         "c.start_s, c.end_s, c.split_reason FROM sources s LEFT JOIN clips c USING (source_id) "
                         "ORDER BY s.rel_path, c.clip_index").to_pylist()
    out_rows: dict[str, list[dict]] = {}
    for r in rows:
        out_rows.setdefault(Path(r["rel_path"]).stem, []).append(r)
    return out_rows


def _occlude(src, dst, occ, tracker, first: int, last: int, max_frames: int = 90):
    def fn(i, rgb):
        if not first <= i < last:
            return rgb
        lm = tracker.landmarks(rgb)
        return occ.paint(rgb, lm) if lm is not None else rgb
    devset.map_video(src, dst, fn, max_frames=max_frames)


def kept(rows: list[dict]) -> int:
    return sum(r["verdict"] == "kept" for r in rows)


def source_reasons(rows: list[dict]) -> set[str]:
    return set(rows[0]["source_reasons"] or [])


def test_talking_head_showing_teeth_is_kept(verdicts):
    assert verdicts["teeth"][0]["status"] == "kept", verdicts["teeth"]
    assert kept(verdicts["d3"]) >= 1 and kept(verdicts["d0"]) >= 1


def test_textured_patch_over_the_eyes_is_rejected_for_occlusion(verdicts):
    rows = verdicts["d3_eyes_textured"]
    assert kept(rows) == 0 and "occlusion" in source_reasons(rows), rows


def test_flat_patch_over_mouth_and_nose_is_rejected_for_occlusion(verdicts):
    rows = verdicts["d3_mouth_flat"]
    assert kept(rows) == 0 and "occlusion" in source_reasons(rows), rows


def test_an_occluded_stretch_in_the_middle_costs_only_that_stretch(verdicts):
    rows = verdicts["d3_middle_occluded"]
    kept_s = sum(r["end_s"] - r["start_s"] for r in rows if r["verdict"] == "kept")
    occluded = [r for r in rows if "occlusion" in r["reasons"]]
    assert kept_s >= 4.5, rows  # of 8 s, 2 s covered
    assert occluded and all(r["start_s"] >= 2.8 and r["end_s"] <= 5.4 for r in occluded), occluded
    assert any(r["split_reason"] == "occlusion" for r in rows)


def test_a_close_up_face_photo_is_found_and_kept(verdicts):
    assert verdicts["closeup"][0]["status"] == "kept", verdicts["closeup"]


def test_an_animal_photo_is_no_face(verdicts):
    rows = verdicts["dog"]
    assert rows[0]["status"] == "rejected" and source_reasons(rows) == {"no_face"}, rows


def test_a_dark_clip_is_rejected_for_lighting_and_not_for_blur(verdicts):
    rows = verdicts["d3_dark"]
    assert kept(rows) == 0
    assert "lighting" in source_reasons(rows) and "blur" not in source_reasons(rows), rows


def test_a_down_and_up_scaled_clip_is_rejected(verdicts):
    rows = verdicts["d3_down_up"]
    assert kept(rows) == 0 and source_reasons(rows) & {"resolution", "blur"}, rows


def test_moving_background_is_rejected_for_background_motion_only(verdicts):
    rows = verdicts["d0_moving_bg"]
    assert kept(rows) == 0 and source_reasons(rows) == {"background_motion"}, rows


def test_rejected_clips_keep_thumbnails_that_preview_shows(variants_build, tmp_path):
    from pipeline.cli import main as portrait

    with Catalog(variants_build, read_only=True) as cat:
        rows = cat.query("SELECT clip_id, verdict, thumbnails FROM clips ORDER BY clip_id").to_pylist()
    rejected = [r for r in rows if r["verdict"] == "rejected"]
    assert rejected and all(1 <= len(r["thumbnails"]) <= 4 for r in rejected)
    assert all(r["thumbnails"] is None for r in rows if r["verdict"] == "kept")
    png = tmp_path / "rejected.png"
    assert (
        portrait(["preview", "--catalog", str(variants_build), "--clip", rejected[0]["clip_id"], "--png", str(png)])
        == 0
    )
    sheet = cv2.imread(str(png))
    assert sheet.shape[0] == 24 + 128 and sheet.shape[1] == 128 * len(rejected[0]["thumbnails"])
