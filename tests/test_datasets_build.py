"""One build over mini replicas of all nine datasets at once (their real layouts and metadata)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from manifests.catalog import Catalog
from pipeline.build import build
from pipeline.config import load_config
from pipeline.finalize import eval_leaks
from pipeline.sources import dataset_entries, discover
from tests.dataset_replicas import EXPECTED_COUNTS, EXPECTED_ERRORS, build_all_replicas


@pytest.fixture(scope="module")
def mixed_build(tmp_path_factory, fixtures_dir):
    root = tmp_path_factory.mktemp("replicas")
    replicas = build_all_replicas(root, fixtures_dir)
    config = load_config(None, {
        "sampling.fps": 2.0,  # few frames: this test is about metadata, not pixels
        "features.enabled": False,
        "eval_split.n": 2,
    })
    entries = dataset_entries(config, [], [f"{name}={path}" for name, path in replicas.items()])
    discovery = discover(entries)
    out = root / "out"
    build(config, out, discovery, progress=False)
    return out, discovery, replicas


def test_every_dataset_is_built_with_its_metadata(mixed_build):
    out, discovery, replicas = mixed_build
    with Catalog(out, read_only=True) as cat:
        per = {r["dataset"]: r for r in cat.query(
            "SELECT dataset, count(*) AS n, count(identity) AS with_identity, count(DISTINCT split) AS splits, "
            "bool_and(status IN ('kept', 'rejected', 'error')) AS accounted FROM sources GROUP BY dataset").to_pylist()}
        labelled = cat.query(
            "SELECT labels['emotion'] AS emotion, labels['view'] AS view FROM sources WHERE dataset = 'mead'"
        ).to_pylist()
    assert set(per) == set(replicas)
    for name, row in per.items():
        assert row["n"] == discovery.found[name]
        assert row["accounted"]
        if name != "ffhq":  # FFHQ has no identities
            assert row["with_identity"] == row["n"], name
    assert all(r["emotion"] and r["view"] for r in labelled)


def test_metadata_errors_name_file_and_line(mixed_build):
    out, _, _ = mixed_build
    with Catalog(out, read_only=True) as cat:
        rows = cat.query("SELECT dataset, message FROM errors WHERE stage = 'metadata'").to_pylist()
    assert len(rows) == sum(EXPECTED_ERRORS.values())
    for dataset, n in EXPECTED_ERRORS.items():
        assert sum(r["dataset"] == dataset for r in rows) == n, dataset
    assert any(":" in r["message"].split(" ")[0] for r in rows)  # file:line prefix


def test_clips_inherit_identity_split_and_labels(mixed_build):
    out, _, _ = mixed_build
    with Catalog(out, read_only=True) as cat:
        mismatched = cat.query(
            "SELECT c.clip_id FROM clips c JOIN sources s USING (source_id) "
            "WHERE c.dataset <> s.dataset OR (c.identity IS NULL AND s.identity IS NOT NULL) "
            "OR (c.split <> s.split AND c.split <> 'eval')").to_pylist()
        hdtf = cat.query(
            "SELECT start_s, end_s, labels['clip_key'] AS key FROM clips WHERE dataset = 'hdtf' LIMIT 5"
        ).to_pylist()
    assert mismatched == []
    assert any(r["key"] for r in hdtf)  # one HDTF video has no time row: whole file, no key


def test_eval_split_leaks_nothing_across_datasets(mixed_build):
    """The replicas reuse the same fixture footage across datasets (d0 is a VFHQ download, a
    CelebV-HQ clip and several VoxCeleb2 utterances): the duplicate groups span datasets, and
    the eval split shares no identity, source, video id or duplicate group with training."""
    out, _, _ = mixed_build
    with Catalog(out, read_only=True) as cat:
        ev = cat.query("SELECT DISTINCT dataset, identity, source_id FROM clips WHERE split = 'eval'").to_pylist()
        train = cat.query(
            "SELECT DISTINCT identity, source_id FROM clips WHERE split IS DISTINCT FROM 'eval'"
        ).to_pylist()
        per_split = cat.named("identities_per_split").to_pylist()
        spans = cat.query("SELECT dup_group, count(DISTINCT dataset) AS n FROM clips WHERE verdict = 'kept' "
                          "GROUP BY dup_group HAVING n > 1").to_pylist()
        video_ids = cat.query("SELECT dataset, count(video_id) AS n FROM clips GROUP BY dataset").to_pylist()
        found = eval_leaks(cat, 0.4)
    assert spans, "the d0 copies of several datasets form one duplicate group"
    assert {r["dataset"] for r in video_ids if r["n"]} >= {"vfhq", "voxceleb2", "celebvhq"}
    assert found == []
    if not ev:
        pytest.skip("no kept VFHQ/CelebV-HQ clips in the replicas to draw from")
    assert {r["dataset"] for r in ev} <= {"vfhq", "celebvhq"}
    eval_ids = {r["identity"] for r in ev if r["identity"]}
    eval_sources = {r["source_id"] for r in ev}
    assert not eval_ids & {r["identity"] for r in train if r["identity"]}
    assert not eval_sources & {r["source_id"] for r in train}
    assert any(r["split"] == "eval" for r in per_split)


def test_discovery_counts_are_stored_per_dataset(mixed_build):
    out, discovery, _ = mixed_build
    with Catalog(out, read_only=True) as cat:
        notes = cat.query("SELECT notes_json FROM runs ORDER BY started_at DESC LIMIT 1").to_pylist()[0]["notes_json"]
    stored = json.loads(notes)["discovery"]
    assert stored == discovery.counts_json()
    got = {
        name: (c["files_found"], c["sources"], c["no_metadata"], c["rows_without_file"], c["unparseable"], c["skipped"])
        for name, c in stored.items()
    }
    assert got == EXPECTED_COUNTS
    assert [Path(p).name for p in stored["hdtf"]["unparseable_at"]] == ["RD_annotion_time.txt:3"]


def test_downloaded_containers_and_hostile_links_do_not_stop_the_build(mixed_build):
    out, _, _ = mixed_build
    with Catalog(out, read_only=True) as cat:
        vfhq = {r["rel_path"]: r["status"] for r in
                cat.query("SELECT rel_path, status FROM sources WHERE dataset = 'vfhq'").to_pylist()}
        refused = cat.query("SELECT message FROM errors WHERE dataset = 'mead' AND stage = 'metadata'").to_pylist()
        mead = cat.query("SELECT count(*) AS n FROM sources WHERE dataset = 'mead'").to_pylist()[0]["n"]
    # yt-dlp's .webm and .mkv downloads are read like any video.
    assert vfhq["videos/xyz_-A1b2C3.webm"] in ("kept", "rejected")
    assert vfhq["videos/K_-9xq2ZmQw.mkv"] in ("kept", "rejected")
    # The MEAD replica holds a link loop and a link out of the root: error rows, the rest built.
    assert any("link loop" in r["message"] for r in refused)
    assert any("leaves the dataset root" in r["message"] for r in refused)
    assert mead == EXPECTED_COUNTS["mead"][1]
