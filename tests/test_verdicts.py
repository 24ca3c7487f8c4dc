"""Verdicts through the real build: degraded variants of the real fixture videos are rejected
for the right reason, while the clean originals are kept."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import degrade
from manifests.catalog import Catalog
from pipeline.build import build
from pipeline.config import load_config
from pipeline.sources import dataset_entries, discover


@pytest.fixture(scope="module")
def verdicts(media_dir, tmp_path_factory) -> dict[str, list[dict]]:
    folder = tmp_path_factory.mktemp("variants") / "media"
    folder.mkdir()
    videos = media_dir / "videos"
    shutil.copy(videos / "d3.mp4", folder / "d3.mp4")
    shutil.copy(videos / "d0.mp4", folder / "d0.mp4")
    shutil.copy(videos / "d9.mp4", folder / "d9.mp4")
    degrade.darken(videos / "d3.mp4", folder / "d3_dark.mp4", factor=0.25, max_frames=150)
    degrade.downscale(videos / "d3.mp4", folder / "d3_small.mp4", factor=4, max_frames=150)
    degrade.replace_green_background(videos / "d0.mp4", folder / "d0_moving_bg.mp4", texture_seed=3)
    degrade.mouth_patch(videos / "d9.mp4", folder / "d9_mouth_patch.mp4", fraction=0.8,
                        colour=(200, 170, 150), max_frames=240)
    config = load_config(None, {"features.enabled": False})
    out = folder.parent / "out"
    build(config, out, discover(dataset_entries(config, [str(folder)], [])), progress=False)
    with Catalog(out, read_only=True) as cat:
        rows = cat.query("SELECT s.rel_path, c.verdict, c.reasons, c.n_frames FROM clips c "
                         "JOIN sources s USING (source_id) ORDER BY c.clip_id").to_pylist()
    out_rows: dict[str, list[dict]] = {}
    for r in rows:
        out_rows.setdefault(Path(r["rel_path"]).stem, []).append(r)
    return out_rows


def kept(rows: list[dict]) -> int:
    return sum(r["verdict"] == "kept" for r in rows)


def reasons(rows: list[dict]) -> set[str]:
    return {x for r in rows for x in r["reasons"]}


def test_darkened_d3_is_rejected_for_lighting_while_d3_is_kept(verdicts):
    assert kept(verdicts["d3"]) >= 1
    assert kept(verdicts["d3_dark"]) == 0 and "lighting" in reasons(verdicts["d3_dark"])


def test_moving_background_on_d0_is_rejected_while_d0_is_kept(verdicts):
    assert kept(verdicts["d0"]) >= 1
    assert kept(verdicts["d0_moving_bg"]) == 0
    assert reasons(verdicts["d0_moving_bg"]) == {"background_motion"}


def test_mouth_patch_on_d9_is_rejected_or_split_for_occlusion(verdicts):
    assert kept(verdicts["d9"]) >= 1
    patched = verdicts["d9_mouth_patch"]
    assert "occlusion" in reasons(patched)
    # Most of the patched frames end up in rejected clips (the clip may be split around them).
    frames_rejected = sum(r["n_frames"] for r in patched if "occlusion" in r["reasons"])
    assert frames_rejected >= 0.5 * sum(r["n_frames"] for r in patched)


def test_downscaled_d3_is_rejected_for_resolution(verdicts):
    assert kept(verdicts["d3_small"]) == 0 and "resolution" in reasons(verdicts["d3_small"])
