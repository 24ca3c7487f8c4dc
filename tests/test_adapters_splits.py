"""The seeded eval split (manifests/splits.py) and the named queries over datasets."""
from __future__ import annotations

import random
from importlib import resources

import duckdb
import pytest

from manifests import schemas
from manifests.adapters import MetadataError, make_adapter
from manifests.splits import choose_eval
from tests.dataset_replicas import build_all_replicas


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
