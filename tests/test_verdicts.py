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


# ------------------------------------------------------------------- the rules, clip by clip

def _clip(**scores) -> dict:
    """A clip row a curator keeps (a sharp, well-exposed 300-px face in a 512-px video)."""
    row = {"crop_source_px": 512.0, "face_px": 300.0, "face_frac": 0.59, "pad_frac": 0.0, "face_cut": 0.0,
           "n_faces": 1, "face_conf": 0.9, "face_human": 1.0, "face_person": 0.99, "occlusion": 0.0,
           "occluded_share": 0.0,
           "lighting_mean": 120.0, "lighting_std": 40.0, "lighting_clipped": 0.01, "bg_motion": 0.5,
           "sharpness": 0.09, "detail_4x": 0.25, "mirror_4x": 0.15, "detail_train": 0.1,
           "occlusion_frames": [0.0] * 10, "media_type": "video", "start_s": 0.0, "end_s": 4.0}
    row.update(scores)
    return row


@pytest.fixture(scope="module")
def thresholds() -> dict:
    return load_config(None, {}).thresholds.as_params()


def test_rules_keep_a_clean_clip(thresholds):
    from manifests.verdicts import judge

    assert judge(_clip(), thresholds) == ("kept", [])


def test_an_upscale_is_judged_by_the_pixels_it_had(thresholds):
    """A 4x upscale of a 512-px talking head had a 128-px crop: resolution, whether its spectrum
    has a clean cliff (bicubic: little above the limit) or a leaky one whose energy above the
    limit mirrors the energy below (bilinear). The same upscale of a 2048-px photo with a 518-px
    face had a 414-px crop and a 130-px face: judged at training scale it is kept."""
    from manifests.verdicts import judge

    for cue in ({"detail_4x": 0.05}, {"detail_4x": 0.12, "mirror_4x": 0.7}):
        assert judge(_clip(**cue), thresholds) == ("rejected", ["resolution"])
        big = _clip(crop_source_px=1658.0, face_px=518.0, media_type="image", end_s=0.0, **cue)
        assert judge(big, thresholds) == ("kept", [])


def test_moderate_blur_is_blur_even_when_sharpness_passes(thresholds):
    from manifests.verdicts import judge

    assert judge(_clip(detail_train=thresholds["min_detail_train"] / 3), thresholds) == ("rejected", ["blur"])
    # too few pixels: resolution says it, blur is its consequence
    assert judge(_clip(detail_train=0.001, face_px=60.0), thresholds) == ("rejected", ["resolution"])


def test_a_face_seen_well_that_is_not_human_is_no_face_alone(thresholds):
    """A primate: its crushed black fur clips (lighting's clipped share) and its eyes and mouth
    do not look human (occlusion), but the face is seen well (enough pixels, sharp, exposure
    mean in range): not a human face, and nothing else is said of it."""
    from manifests.verdicts import judge

    primate = _clip(face_human=0.2, lighting_clipped=0.3, occlusion_frames=[1.0] * 10, bg_motion=9.0)
    assert judge(primate, thresholds) == ("rejected", ["no_face"])
    # an animal on a busy moving background that the segmenter takes for a person: the pose
    # model finds no person whose face this is
    dog = _clip(face_person=0.0, occlusion_frames=[1.0] * 10, bg_motion=9.0)
    assert judge(dog, thresholds) == ("rejected", ["no_face"])


def test_a_patch_over_the_eyes_is_occlusion_not_lighting(thresholds):
    """An opaque black or white patch brings its own crushed or blown pixels (and a flatter
    spread): on a face judged covered they are the occluder's, so only the exposure (the mean)
    is judged then; an uncovered face with the same clipped share is a lighting fault."""
    from manifests.verdicts import judge

    covered = _clip(lighting_clipped=0.35, lighting_std=8.0, occlusion_frames=[1.0] * 10)
    assert judge(covered, thresholds) == ("rejected", ["occlusion"])
    assert judge(_clip(lighting_clipped=0.35), thresholds) == ("rejected", ["lighting"])
    dark_and_covered = _clip(lighting_mean=30.0, occlusion_frames=[1.0] * 10)
    assert judge(dark_and_covered, thresholds) == ("rejected", ["lighting"])


def test_a_face_not_seen_well_and_not_surely_human_names_only_what_is_seen(thresholds):
    """A pattern taken for a face in a panned scene without people, blurred: blur, never
    background motion, several faces or occlusion (they presume a person)."""
    from manifests.verdicts import judge

    pattern = _clip(face_human=0.1, sharpness=0.01, bg_motion=12.0, n_faces=2, occlusion_frames=[1.0] * 10)
    assert judge(pattern, thresholds) == ("rejected", ["blur"])
    human = _clip(sharpness=0.01, bg_motion=12.0)
    assert judge(human, thresholds) == ("rejected", ["blur", "background_motion"])
