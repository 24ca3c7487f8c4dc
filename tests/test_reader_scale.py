"""The reader at paper scale: builds on an object store, a bounded number of open files, shards
trusted on their verification records (hashed in full only where none covers them, once per
node), flipped bytes refused in one line, bad shards skipped when asked, vectorised plans,
stage-2 references drawn from the clip, per-clip mixing."""
from __future__ import annotations

import hashlib
import json
import resource
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from manifests import shards as shard_module
from manifests.catalog import Catalog
from portrait_model.reader import ReaderError, ShardReader
from tests.test_object_store import BUCKET, s3  # noqa: F401 - the local S3 server fixture

from model_shards import make_many_shards, make_test_build

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def own_index_cache(tmp_path, monkeypatch):
    """Indexes and verification markers of remote or read-only builds go to this test's folder."""
    monkeypatch.delenv("PORTRAIT_INDEX_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """520 shards of one 4-frame clip each (row groups of 2 frames)."""
    return make_many_shards(tmp_path_factory.mktemp("many") / "out", 520)


@pytest.fixture
def count_hashes(monkeypatch):
    """Every whole-shard sha256 the reader computes, by shard path."""
    seen = Counter()
    real = shard_module.sha256_at

    def counting(out, rel, *a, **k):
        seen[rel] += 1
        return real(out, rel, *a, **k)

    monkeypatch.setattr(shard_module, "sha256_at", counting)
    return seen


def digest(batch) -> str:
    h = hashlib.sha256(json.dumps(batch["clip_id"]).encode())
    for key in ("latents", "reference", "position_maps"):
        h.update(batch[key].numpy().tobytes())
    return h.hexdigest()


def unrecord(out):
    """As if the shards came from a build older than the verification records."""
    with Catalog(out) as cat:
        cat.con.execute("UPDATE shards SET verified_at = NULL")


# ---- integrity -----------------------------------------------------------------------------
def test_recorded_shards_are_never_hashed_and_the_others_once_per_node(fixtures_dir, tmp_path, count_hashes):
    out = make_test_build(tmp_path / "rec", n_frames=4, n_clips=2, with_image=False, with_excluded=False)
    for _ in range(2):
        ShardReader(out, 1, 1, samples_per_clip=2).first_batch()
    assert sum(count_hashes.values()) == 0  # the build's record covers every shard

    unrecord(out)
    reader = ShardReader(out, 1, 1, samples_per_clip=2)
    next(reader.batches_for(0, 1))  # the first window opens both shards: no record, so hashed
    assert sorted(count_hashes) == sorted(reader.index.shards) and set(count_hashes.values()) == {1}
    for _ in range(2):  # later processes on this node (a fresh pool each) trust the markers
        next(ShardReader(out, 1, 1, samples_per_clip=2).batches_for(0, 1))
    assert set(count_hashes.values()) == {1}


def _latent_page(path: Path) -> int:
    """An offset inside the first row group's latent pages."""
    md = pq.read_metadata(path)
    col = next(md.row_group(0).column(i) for i in range(md.num_columns)
               if md.row_group(0).column(i).path_in_schema.startswith("latent"))
    return col.data_page_offset + col.total_compressed_size // 2


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["footer", "page-unrecorded", "page-crc"])
def test_a_flipped_byte_is_refused_in_one_line(fixtures_dir, tmp_path, where, count_hashes):
    """Shards carry Parquet page CRCs (manifests/shards.py), so a flipped page byte in a shard
    verified earlier is refused where it is read, without hashing the whole shard."""
    out = make_test_build(tmp_path / "flip", n_frames=4, n_clips=1, with_image=False, with_excluded=False)
    if where == "page-unrecorded":
        unrecord(out)
    rel = ShardReader(out, 1, 1).index.shards[0]
    path = out / rel
    _flip(path, path.stat().st_size - 200 if where == "footer" else _latent_page(path))
    with pytest.raises(ReaderError) as err:
        ShardReader(out, 1, 1).first_batch()
    message = str(err.value)
    assert "corrupted" in message and rel in message and "portrait verify" in message and "\n" not in message
    if where != "page-unrecorded":  # recorded: found without hashing the whole shard
        assert sum(count_hashes.values()) == 0


def test_a_missing_shard_is_refused_or_skipped_with_a_count(fixtures_dir, tmp_path, capfd):
    out = make_test_build(tmp_path / "gone", n_frames=4, n_clips=3, with_image=False, with_excluded=False)
    reader = ShardReader(out, 1, 2)
    gone = reader.index.shards[1]
    (out / gone).unlink()
    with pytest.raises(ReaderError, match=f"shard {gone} .*missing.*portrait verify"):
        ShardReader(out, 1, 2).first_batch()
    skipping = ShardReader(out, 1, 2, samples_per_clip=4, skip_bad_shards=True)
    batches = [b for _, b in zip(range(6), skipping.batches_for(0, 1))]
    warned = [line for line in capfd.readouterr().err.splitlines() if "warning: skipping shard" in line]
    assert warned and gone in warned[0] and "samples" in warned[0]
    assert all(len(b["clip_id"]) == 2 for b in batches)  # lost samples replaced within the batch
    assert {"d3-part0-0", "d3-part2-0"} == {c for b in batches for c in b["clip_id"]}


# ---- bounded files, many shards ---------------------------------------------------------------
EPOCH_SCRIPT = """
import hashlib, json, sys
sys.path[:0] = [{repo!r}, {tests!r}]
from portrait_model.reader import ShardReader
reader = ShardReader({out!r}, 1, 8, seed=1)
n = len(reader.worker_plan(0, 0, 1)) // 8
digests = []
for _, batch in zip(range(n), reader.batches_for(0, 1)):
    h = hashlib.sha256(json.dumps(batch["clip_id"]).encode())
    for key in ("latents", "reference", "position_maps"):
        h.update(batch[key].numpy().tobytes())
    digests.append(h.hexdigest())
print(json.dumps({{"digests": digests, "open": len(reader.pool), "opens": reader.pool.opens}}))
"""


def _epoch(out: Path, nofile: int | None) -> dict:
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    script = EPOCH_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), out=str(out))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          preexec_fn=limit if nofile else None)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_epoch_over_520_shards_runs_under_64_descriptors(many):
    ShardReader(many, 1, 8)  # index built here, once
    free = _epoch(many, None)
    limited = _epoch(many, 64)
    assert len(free["digests"]) == 520 // 8
    assert limited["digests"] == free["digests"]
    assert limited["open"] <= 16  # a quarter of the limit
    assert free["open"] <= 32 and free["opens"] >= 520


def test_plans_partition_many_units_and_repeat_for_a_seed(many):
    reader = ShardReader(many, 1, 8, samples_per_clip=3, seed=4)
    epoch = reader.epoch_plan(1)
    for readers in (1, 3, 16):
        parts = [reader.worker_plan(1, r, readers) for r in range(readers)]
        combined = Counter(
            zip(*(np.concatenate([getattr(p, f) for p in parts]).tolist() for f in ("clip", "ref", "drive")))
        )
        assert combined == Counter(zip(epoch.clip.tolist(), epoch.ref.tolist(), epoch.drive.tolist()))
        owners = [set(p.clip.tolist()) for p in parts]
        assert sum(len(o) for o in owners) == len(set().union(*owners))  # a clip's samples go to one reader
    again = ShardReader(many, 1, 8, samples_per_clip=3, seed=4).worker_plan(1, 2, 3)
    assert np.array_equal(again.drive, reader.worker_plan(1, 2, 3).drive)
    assert not np.array_equal(reader.worker_plan(2, 2, 3).drive[:50], again.drive[:50])


def test_mix_per_clip_weights_clips_not_datasets(fixtures_dir, tmp_path):
    out = make_test_build(tmp_path / "mix", n_frames=4, n_clips=6, with_image=True, with_excluded=False)
    share = {}
    for mix in ("per-dataset", "per-clip"):
        reader = ShardReader(out, 1, 1, samples_per_clip=50, mix=mix)
        counts = Counter(reader.clips[int(c)].dataset for c in reader.epoch_plan(0).clip)
        share[mix] = counts["photos"] / sum(counts.values())
    assert abs(share["per-dataset"] - 0.5) < 0.02  # two datasets of weight 1: half each
    assert abs(share["per-clip"] - 1 / 7) < 0.02  # seven clips of weight 1: one seventh is the photo
    with pytest.raises(ReaderError, match="mix must be"):
        ShardReader(out, 1, 1, mix="per-frame")


def test_stage2_can_draw_its_reference_from_the_clip(fixtures_dir, tmp_path):
    from model_shards import identity_map  # noqa: F401 - maps are the identity: composed maps too

    out = make_test_build(tmp_path / "ref2", n_frames=12, n_clips=2, with_image=False, with_excluded=False,
                          references=[(5,), (0,)])
    reader = ShardReader(out, 2, 2, frames=4, samples_per_clip=30, reference="random")
    samples = reader.epoch_samples(0)
    assert len({s.reference for s in samples}) > 4
    for s in samples:
        idx = [fi for fi, _ in s.frames]
        assert idx == list(range(idx[0], idx[0] + 4)) and s.reference[0] not in idx
    batch = reader.first_batch()
    assert batch["position_maps"].shape == (2, 3, 4, 64, 64) and batch["reference"].shape == (2, 4, 64, 64)
    stored = ShardReader(out, 2, 2, frames=4, samples_per_clip=30)
    assert {s.reference for s in stored.epoch_samples(0) if stored.clips[s.clip].clip_id == "d3-part0-0"} == {(5, 0)}


# ---- object stores ----------------------------------------------------------------------------
def _upload(local: Path, uri: str) -> None:
    import pyarrow.fs as pafs

    from manifests import storage

    loc = storage.resolve(uri)
    pafs.copy_files(str(local), loc.root, destination_filesystem=loc.fs)


def test_train_from_an_object_store_resumes_exactly(fixtures_dir, s3, tmp_path):  # noqa: F811
    from pipeline.cli import main

    local = make_test_build(tmp_path / "local", n_frames=8, n_clips=2)
    uri = f"s3://{BUCKET}/reader-train"
    _upload(local, uri)

    def run(run_dir, steps):
        rc = main(["train", "--data", uri, "--run-dir", str(run_dir), "--stage", "1", "--preset", "tiny",
                   "--steps", str(steps), "--batch-size", "2", "--latent-size", "8", "--num-workers", "2",
                   "--log-every", "1", "--checkpoint-every", "2", "--lr", "1e-3"])
        assert rc == 0
        with open(run_dir / "train_log.csv") as f:
            return [line.split(",")[1] for line in f.read().splitlines()[1:]]

    straight = run(tmp_path / "a", 4)
    assert run(tmp_path / "b", 2) == straight[:2]
    assert run(tmp_path / "b", 4) == straight  # resumed at step 2: the same batches, the same losses
    reader = ShardReader(uri, 1, 2, latent_size=8)
    assert not reader.loc.is_local and (Path.home() / ".cache" / "portrait_model" / "index").is_dir()
    local_batch = ShardReader(local, 1, 2, latent_size=8).first_batch()
    assert digest(reader.first_batch()) == digest(local_batch)
