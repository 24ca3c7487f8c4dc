"""Duplicates in a real build: every kept clip gets a signature from its stored crops, the same
footage re-encoded under another name lands in one duplicate group, another video does not,
and the named query, the report and the eval split see the groups."""
from __future__ import annotations

import shutil

import cv2
import pytest

from manifests.catalog import Catalog
from pipeline.build import build
from pipeline.cli import main as portrait
from pipeline.config import load_config
from pipeline.sources import dataset_entries, discover
from tests.media_makers import read_frames, write_video


@pytest.fixture(scope="module")
def dup_build(media_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("dups")
    media = root / "media"
    media.mkdir()
    shutil.copy(media_dir / "videos" / "d0.mp4", media / "d0.mp4")
    # The same footage at 384 px and 30 fps, re-encoded: what another dataset's copy looks like.
    frames, fps = read_frames(media_dir / "videos" / "d0.mp4")
    small = [cv2.resize(f, (384, 384), interpolation=cv2.INTER_AREA) for f in frames]
    write_video(media / "d0_copy_384.mp4", [small[min(len(small) - 1, round(i * fps / 30))]
                                           for i in range(int(len(small) * 30 / fps))], fps=30)
    # Another person's video (its first 3 s): not a duplicate.
    other, fps3 = read_frames(media_dir / "videos" / "d3.mp4", limit=90)
    write_video(media / "d3_start.mp4", other, fps=fps3)
    config = load_config(None, {"ray.executor": "inline", "features.enabled": False})
    out = root / "out"
    build(config, out, discover(dataset_entries(config, [str(media)], [])), progress=False)
    return out


def test_a_reencoded_copy_shares_a_group_and_another_video_does_not(dup_build):
    with Catalog(dup_build, read_only=True) as cat:
        rows = cat.query("SELECT s.rel_path, c.verdict, c.signature, c.dup_group, c.video_id FROM clips c "
                         "JOIN sources s USING (source_id) ORDER BY s.rel_path").to_pylist()
        named = cat.named("duplicates").to_pylist()
    kept = [r for r in rows if r["verdict"] == "kept"]
    assert {r["rel_path"] for r in kept} == {"d0.mp4", "d0_copy_384.mp4", "d3_start.mp4"}
    assert all(r["signature"] for r in kept) and all(r["video_id"] is None for r in rows)  # a folder: no ids
    group = {r["rel_path"]: r["dup_group"] for r in kept}
    assert group["d0.mp4"] == group["d0_copy_384.mp4"] != group["d3_start.mp4"]
    assert len(named) == 2 and {r["group_size"] for r in named} == {2}


def test_report_shows_the_groups_and_the_split_check_passes(dup_build, tmp_path, capsys):
    assert portrait(["report", "--catalog", str(dup_build), "--html", str(tmp_path / "html")]) == 0
    page = (tmp_path / "html" / "index.html").read_text()
    assert "Duplicates across datasets" in page and "1 group(s)" in page
    capsys.readouterr()
    assert portrait(["eval-split", str(dup_build), "--check"]) == 0
    assert "no leaks" in capsys.readouterr().out
