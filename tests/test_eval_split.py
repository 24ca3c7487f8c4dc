"""The leakage-free eval split over a catalog that mixes datasets sharing videos, duplicates
and people: nothing of an eval clip's video, footage or face may stay in training."""
from __future__ import annotations

import numpy as np

from manifests import schemas
from manifests.catalog import Catalog
from manifests.splits import EVAL_SPLIT, choose_eval, embedding_links, leaks
from pipeline.cli import main as portrait
from pipeline.finalize import eval_leaks, eval_split

RUN = "split-run"
DIM = 512


def _unit(rng, base=None, noise=0.0):
    v = rng.standard_normal(DIM) if base is None else base + noise * rng.standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _mixed_catalog(out, rng) -> dict[str, list[str]]:
    """VFHQ and CelebV-HQ clips (the eval datasets) beside VoxCeleb2 and HDTF clips that share
    their YouTube videos, their footage (duplicate groups) or their people (embeddings of the
    same face under another dataset's identity name). Returns the clips tied to training data."""
    sources, clips, tied = [], [], {"video": [], "dup": [], "face": []}
    people = [_unit(rng) for _ in range(60)]

    def add(dataset, i, video_id, person, dup=None, identity=None):
        sid, cid = f"{dataset}-s{i}", f"{dataset}-c{i}"
        sources.append(dict(source_id=sid, dataset=dataset, path=f"/d/{sid}.mp4", rel_path=f"{sid}.mp4",
                            media_type="video", identity=identity, split="train", video_id=video_id,
                            status="kept", run_id=RUN))
        clips.append(dict(clip_id=cid, source_id=sid, dataset=dataset, identity=identity, split="train",
                          media_type="video", clip_index=0, start_s=0.0, end_s=4.0, n_frames=50, fps=12.5,
                          verdict="kept", reasons=[], video_id=video_id, dup_group=dup or cid, run_id=RUN,
                          identity_embedding=_unit(rng, people[person], 0.02)))
        return cid

    for i in range(40):
        ds = "vfhq" if i % 2 == 0 else "celebvhq"
        cid = add(ds, i, f"yt{i:03d}", person=i, identity=f"{ds}-person{i}")
        if i % 4 == 0:  # the same YouTube video, cut again by VoxCeleb2
            add("voxceleb2", i, f"yt{i:03d}", person=i, identity=f"id{i:05d}")
            tied["video"].append(cid)
        elif i % 4 == 1:  # the same footage re-encoded under another name in HDTF (no video id)
            add("hdtf", i, None, person=i, dup=cid, identity=f"hdtf{i}")
            tied["dup"].append(cid)
        elif i % 4 == 2:  # the same person in another video of VoxCeleb2
            add("voxceleb2", 100 + i, f"other{i:03d}", person=i, identity=f"id{100 + i:05d}")
            tied["face"].append(cid)
    with Catalog(out) as cat:
        cat.commit_sources(schemas.table_from_rows(sources, schemas.SOURCES),
                           schemas.table_from_rows(clips, schemas.CLIPS), schemas.empty_table(schemas.ERRORS),
                           run_id=RUN)
    return tied


def test_eval_split_has_no_leak_by_video_duplicate_or_face(tmp_path):
    rng = np.random.default_rng(0)
    tied = _mixed_catalog(tmp_path, rng)
    with Catalog(tmp_path) as cat:
        # What the earlier rule (identity and source file only) draws leaks by all three.
        records = cat.query("SELECT clip_id, source_id, dataset, identity FROM clips").to_pylist()
        naive = choose_eval(records, n=20, seed=0)
        assert naive & set(tied["video"]) and naive & set(tied["dup"]) and naive & set(tied["face"])

        # 20 asked for; only the 10 eval clips nothing ties to training can be drawn.
        assert eval_split(cat, 20, 0, ["vfhq", "celebvhq"], identity_threshold=0.4) == 10
        assert eval_leaks(cat, 0.4) == []
        drawn = set(cat.query("SELECT clip_id FROM clips WHERE split = 'eval'").column(0).to_pylist())
    assert drawn == {f"{'vfhq' if i % 2 == 0 else 'celebvhq'}-c{i}" for i in range(40) if i % 4 == 3}


def test_eval_split_check_names_each_leak(tmp_path, capsys):
    rng = np.random.default_rng(1)
    tied = _mixed_catalog(tmp_path, rng)
    assert portrait(["eval-split", str(tmp_path)]) == 0
    assert "no leaks" in capsys.readouterr().out
    assert portrait(["eval-split", str(tmp_path), "--check"]) == 0
    # A hand-made split that puts tied clips in eval: --check names each leak, and fails.
    with Catalog(tmp_path) as cat:
        cat.con.execute("UPDATE clips SET split = 'eval' WHERE list_contains(?, clip_id)",
                        [[tied["video"][0], tied["dup"][0], tied["face"][0]]])
    assert portrait(["eval-split", str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out
    assert f"eval {tied['video'][0]} and training voxceleb2-c0 share video_id yt000" in out
    assert f"eval {tied['dup'][0]} and training hdtf-c1 share dup_group {tied['dup'][0]}" in out
    assert f"eval {tied['face'][0]} and training voxceleb2-c102 share embedding" in out
    # Re-drawing repairs it.
    assert portrait(["eval-split", str(tmp_path)]) == 0
    with Catalog(tmp_path, read_only=True) as cat:
        assert eval_leaks(cat, 0.4) == []


def test_groups_join_through_video_ids_duplicates_and_links():
    rows = [
        dict(clip_id="a", source_id="s1", dataset="vfhq", video_id="yt1"),
        dict(clip_id="b", source_id="s2", dataset="vfhq", dup_group="g"),
        dict(clip_id="c", source_id="s3", dataset="vfhq"),
        dict(clip_id="x", source_id="s4", dataset="voxceleb2", video_id="yt1"),
        dict(clip_id="y", source_id="s5", dataset="hdtf", dup_group="g"),
        dict(clip_id="z", source_id="s6", dataset="voxceleb2"),
    ]
    assert choose_eval(rows, n=10, seed=0, datasets=("vfhq",)) == {"c"}
    assert choose_eval(rows, n=10, seed=0, datasets=("vfhq",), links=[("c", "z")]) == set()
    split = [dict(r, split=EVAL_SPLIT if r["dataset"] == "vfhq" else "train") for r in rows]
    found = {(x["eval"], x["train"], x["by"]) for x in leaks(split, links=[("c", "z")])}
    assert found == {("a", "x", "video_id"), ("b", "y", "dup_group"), ("c", "z", "embedding")}


def test_embedding_links_find_the_same_face_only():
    rng = np.random.default_rng(2)
    a, b = _unit(rng), _unit(rng)
    emb = np.stack([a, _unit(rng, a, 0.02), b, _unit(rng, b, 0.02)])
    ids = ["a1", "a2", "b1", "b2"]
    assert sorted(embedding_links(ids, emb, ["a1"], 0.4, chunk=1)) == [("a1", "a2")]
    assert embedding_links(ids, emb, ["nobody"], 0.4) == []
