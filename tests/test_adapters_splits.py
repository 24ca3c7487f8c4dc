"""The seeded eval split (manifests/splits.py), MEAD's published test split and the named queries
over datasets."""
from __future__ import annotations

import random
from importlib import resources

import duckdb
import pytest

from manifests import schemas
from manifests.adapters import MetadataError, SourceSpec, make_adapter
from manifests.adapters.mead import EMOTIONS
from manifests.splits import choose_eval
from tests.dataset_replicas import build_all_replicas, build_mead


def synthetic_clips(seed: int = 7) -> list[dict]:
    """VFHQ/CelebV-HQ/HDTF-like clips: people with 1-6 clips, some null identities."""
    rng = random.Random(seed)
    rows = []
    for d, n_people in (("vfhq", 60), ("celebvhq", 60), ("hdtf", 20)):
        for p in range(n_people):
            source = f"{d}-src{p}"
            identity = None if (d == "celebvhq" and p % 5 == 0) else f"{d}-person{p}"
            for k in range(rng.randint(1, 6)):
                rows.append({"clip_id": f"{source}-{k}", "source_id": source, "dataset": d, "identity": identity})
    # A VFHQ raw video with two people: neither may be split from the other.
    rows += [{"clip_id": "vfhq-shared-0", "source_id": "vfhq-shared", "dataset": "vfhq", "identity": "vfhq-A"},
             {"clip_id": "vfhq-shared-1", "source_id": "vfhq-shared", "dataset": "vfhq", "identity": "vfhq-B"},
             {"clip_id": "vfhq-B-other", "source_id": "vfhq-other", "dataset": "vfhq", "identity": "vfhq-B"}]
    # A CelebV-HQ identity that also appears in HDTF: must stay in training.
    rows += [{"clip_id": "cv-x", "source_id": "cv-x-src", "dataset": "celebvhq", "identity": "shared-person"},
             {"clip_id": "hd-x", "source_id": "hd-x-src", "dataset": "hdtf", "identity": "shared-person"}]
    return rows


def test_eval_split_is_identity_and_source_disjoint_and_about_n():
    rows = synthetic_clips()
    chosen = choose_eval(rows, n=100, seed=3)
    assert 90 <= len(chosen) <= 100
    eval_rows = [r for r in rows if r["clip_id"] in chosen]
    train_rows = [r for r in rows if r["clip_id"] not in chosen]
    assert {r["dataset"] for r in eval_rows} == {"vfhq", "celebvhq"}

    def ids(rs):
        return {r["identity"] for r in rs if r["identity"]}

    def srcs(rs):
        return {r["source_id"] for r in rs}

    assert not ids(eval_rows) & ids(train_rows)
    assert not srcs(eval_rows) & srcs(train_rows)
    assert "cv-x" not in chosen and "hd-x" not in chosen
    # Both datasets contribute roughly half.
    per = {d: sum(r["dataset"] == d for r in eval_rows) for d in ("vfhq", "celebvhq")}
    assert min(per.values()) >= 40


def test_eval_split_is_seeded_and_order_free():
    rows = synthetic_clips()
    a = choose_eval(rows, n=100, seed=3)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert choose_eval(shuffled, n=100, seed=3) == a
    assert choose_eval(rows, n=100, seed=4) != a
    assert choose_eval(rows, n=0, seed=3) == set()


def test_eval_split_over_the_replicas(tmp_path, fixtures_dir):
    roots = build_all_replicas(tmp_path, fixtures_dir)
    records = []
    for name in ("vfhq", "celebvhq", "hdtf"):
        for spec in make_adapter(name, str(roots[name])).iter_sources():
            if isinstance(spec, MetadataError):
                continue
            for k, clip in enumerate(spec.clips or [None]):
                identity = (clip.identity if clip and clip.identity else None) or spec.identity
                records.append({"clip_id": f"{spec.source_id}-{k}", "source_id": spec.source_id,
                                "dataset": spec.dataset, "identity": identity})
    chosen = choose_eval(records, n=3, seed=0)
    assert 0 < len(chosen) <= 3
    picked = [r for r in records if r["clip_id"] in chosen]
    assert {r["dataset"] for r in picked} <= {"vfhq", "celebvhq"}
    # The two-person VFHQ video goes whole or not at all.
    shared = [r["clip_id"] for r in records if r["identity"] and r["identity"].startswith("K_-9xq2ZmQw")]
    assert len(shared) == 2 and (set(shared) <= chosen or not set(shared) & chosen)


# -- MEAD's published split ------------------------------------------------------------------------
def mead_tree(root, actors=("M003", "W009"), views=("front", "left_30")) -> list[str]:
    """Every clip MEAD records for these actors and views (30 sentences per emotion and level,
    40 for neutral, level 1 only), as empty files: the adapter reads only the paths."""
    rels = []
    for actor in actors:
        for view in views:
            for emotion in EMOTIONS:
                for level in (1,) if emotion == "neutral" else (1, 2, 3):
                    for n in range(1, (40 if emotion == "neutral" else 30) + 1):
                        rel = f"{actor}/video/{view}/{emotion}/level_{level}/{n:03d}.mp4"
                        (root / rel).parent.mkdir(parents=True, exist_ok=True)
                        (root / rel).write_bytes(b"")
                        rels.append(rel)
    return rels


def mead_splits(root, **options) -> dict[str, str]:
    items = list(make_adapter("mead", str(root), **options).iter_sources())
    assert not [i for i in items if isinstance(i, MetadataError)]
    return {i.rel_path: i.split for i in items if isinstance(i, SourceSpec)}


def test_mead_test_split_is_the_last_sentences_of_each_emotion_and_level(tmp_path):
    mead_tree(tmp_path)
    splits = mead_splits(tmp_path)
    for rel, split in splits.items():
        _, _, view, emotion, level, name = rel.split("/")
        n = int(name[:3])
        # github.com/uniBruce/Mead README: the last 10 of neutral's 40, the last 6 of the others' 30.
        assert split == ("test" if n > (30 if emotion == "neutral" else 24) else "train"), rel
    by_group: dict[tuple, int] = {}
    for rel, split in splits.items():
        actor, _, view, emotion, level, _ = rel.split("/")
        by_group[(actor, view, emotion, level)] = by_group.get((actor, view, emotion, level), 0) + (split == "test")
    assert len(by_group) == 2 * 2 * 22  # actors x views x (7 emotions x 3 levels + neutral)
    assert all(n == (10 if g[2] == "neutral" else 6) for g, n in by_group.items())


def test_mead_partial_download_gives_every_file_the_split_of_the_full_set(tmp_path):
    mead_tree(tmp_path / "full")
    full = mead_splits(tmp_path / "full")
    rng = random.Random(5)
    rels = sorted(full)
    subsets = [
        rng.sample(rels, 40),  # scattered files
        [r for r in rels if r.startswith("W009/video/front/angry/level_2/")][:26],  # the first 26 of a level
        [r for r in rels if "/neutral/" in r and r.startswith("M003/video/left_30/")][-3:],  # the last 3 only
        [r for r in rels if r.endswith("/030.mp4")],  # one sentence of every emotion and level
        ["M003/video/front/happy/level_3/001.mp4"],  # a single file
    ]
    for k, subset in enumerate(subsets):
        root = tmp_path / f"part{k}"
        for rel in subset:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"")
        assert mead_splits(root) == {rel: full[rel] for rel in subset}, k
    # Under a wrapper folder, as the per-actor archives are often unpacked: the same splits.
    wrapped = tmp_path / "wrapped"
    for rel in subsets[0]:
        (wrapped / "MEAD" / rel).parent.mkdir(parents=True, exist_ok=True)
        (wrapped / "MEAD" / rel).write_bytes(b"")
    assert mead_splits(wrapped) == {f"MEAD/{rel}": full[rel] for rel in subsets[0]}


def test_mead_split_settings(tmp_path):
    rels = mead_tree(tmp_path, actors=("M003",), views=("front",))
    # Per emotion, "other" for the emotions not named.
    splits = mead_splits(tmp_path, test_sentences={"other": 3, "sad": 0}, sentences={"neutral": 40, "other": 30})
    assert splits["M003/video/front/angry/level_2/027.mp4"] == "train"
    assert splits["M003/video/front/angry/level_2/028.mp4"] == "test"
    assert {splits[r] for r in rels if "/sad/" in r} == {"train"}
    (tmp_path / "M003/video/front/sad/level_1/031.mp4").write_bytes(b"")  # beyond the count, yet 0 test: train
    assert mead_splits(tmp_path, test_sentences={"sad": 0})["M003/video/front/sad/level_1/031.mp4"] == "train"
    (tmp_path / "M003/video/front/sad/level_1/031.mp4").unlink()
    assert splits["M003/video/front/neutral/level_1/031.mp4"] == "test"  # neutral keeps its default 10
    # A number beyond the configured count is after the last sentence: test.
    assert mead_splits(tmp_path, sentences={"other": 20})["M003/video/front/fear/level_1/030.mp4"] == "test"
    # The older rule only when asked for: the last tenth of what is present, per actor, emotion, level.
    fraction = mead_splits(tmp_path, test_fraction=0.1)
    assert fraction["M003/video/front/neutral/level_1/036.mp4"] == "train"
    assert fraction["M003/video/front/neutral/level_1/037.mp4"] == "test"
    assert set(mead_splits(tmp_path, test_fraction=0).values()) == {"train"}
    for bad in ({"test_sentences": {"joy": 2}}, {"test_sentences": {"other": -1}}, {"sentences": {"other": 2.5}},
                {"test_sentences": {"other": 31}}, {"test_fraction": 1.0},
                {"test_fraction": 0.1, "test_sentences": {"other": 6}}):
        with pytest.raises(ValueError, match="mead"):
            make_adapter("mead", str(tmp_path), **bad)


def test_mead_replica_split_follows_the_protocol(tmp_path, fixtures_dir):
    # The replica's M030 surprised level_3 holds utterances 001-010 only: all before 025, all train,
    # whereas the old fraction rule made 010 (the last present) a test sentence.
    splits = mead_splits_with_errors(build_mead(tmp_path / "mead", fixtures_dir))
    assert {s for rel, s in splits.items() if "/surprised/level_3/" in rel} == {"train"}
    old = mead_splits_with_errors(tmp_path / "mead", test_fraction=0.1)
    assert old["MEAD/M030/video/front/surprised/level_3/010.mp4"] == "test"


def mead_splits_with_errors(root, **options) -> dict[str, str]:
    """Splits of the sources of a tree that also holds misfits (the replica's planted errors)."""
    items = make_adapter("mead", str(root), **options).iter_sources()
    return {i.rel_path: i.split for i in items if isinstance(i, SourceSpec)}


# -- named queries ---------------------------------------------------------------------------
def _sql(name: str) -> str:
    return (resources.files("manifests") / "sql" / f"{name}.sql").read_text()


@pytest.fixture()
def catalog():
    sources = [
        {"source_id": "s1", "dataset": "vfhq", "path": "/a", "rel_path": "a", "media_type": "video", "identity": "p1",
         "split": "eval", "labels": {"person": "P0"}, "status": "kept", "run_id": "r"},
        {"source_id": "s2", "dataset": "vfhq", "path": "/b", "rel_path": "b", "media_type": "video", "identity": "p2",
         "split": "train", "labels": {}, "status": "rejected", "run_id": "r"},
        {"source_id": "s3", "dataset": "mead", "path": "/c", "rel_path": "c", "media_type": "video", "identity": "M003",
         "split": "train", "labels": {"emotion": "angry"}, "status": "error", "run_id": "r"},
    ]
    base = {"media_type": "video", "clip_index": 0, "n_frames": 10, "reasons": [], "run_id": "r"}
    clips = [
        {**base, "clip_id": "c1", "source_id": "s1", "dataset": "vfhq", "identity": "p1", "split": "eval",
         "start_s": 0.0, "end_s": 1800.0, "verdict": "kept"},
        {**base, "clip_id": "c2", "source_id": "s1", "dataset": "vfhq", "identity": "p1", "split": "eval",
         "start_s": 1800.0, "end_s": 3600.0, "verdict": "kept"},
        {**base, "clip_id": "c3", "source_id": "s2", "dataset": "vfhq", "identity": "p2", "split": "train",
         "start_s": 0.0, "end_s": 5.0, "verdict": "rejected", "reasons": ["blur"]},
    ]
    con = duckdb.connect()
    s_tab = schemas.table_from_rows(sources, schemas.SOURCES)
    c_tab = schemas.table_from_rows(clips, schemas.CLIPS)
    con.register("sources_arrow", s_tab)
    con.register("clips_arrow", c_tab)
    con.execute("CREATE TABLE sources AS SELECT * FROM sources_arrow")
    con.execute("CREATE TABLE clips AS SELECT * FROM clips_arrow")
    yield con
    con.close()


def test_counts_by_dataset_verdict(catalog):
    rows = catalog.execute(_sql("counts_by_dataset_verdict")).fetchall()
    assert rows == [("mead", "error", 0, 1), ("vfhq", "kept", 2, 1), ("vfhq", "rejected", 1, 1)]


def test_hours_by_dataset(catalog):
    rows = catalog.execute(_sql("hours_by_dataset")).fetchall()
    assert rows == [("vfhq", 2, 1.0, 0.0)]  # the kept hour is all in the eval split


def test_identities_per_split(catalog):
    rows = catalog.execute(_sql("identities_per_split")).fetchall()
    assert rows == [("eval", "vfhq", 1, 2, 0)]
    # Labels are a map DuckDB can query.
    assert catalog.execute("SELECT labels['emotion'] FROM sources WHERE dataset = 'mead'").fetchone()[0] in (
        "angry",
        ["angry"],
    )
