"""Shard reader: clip selection, stage-1 pairs / stage-2 windows, the memory-mapped frame index,
partition, mixing across row groups, weights, resumable position, shard integrity."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from manifests import tensors
from manifests.catalog import Catalog
from portrait_model.reader import ReaderError, ShardReader, open_index, select_clips
from portrait_model.remap import compose_map

from model_shards import make_many_shards, make_test_build

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def build(fixtures_dir, tmp_path_factory):
    return make_test_build(tmp_path_factory.mktemp("build"), n_frames=16, n_clips=2)


def stored(build, clip_id, frame_index, view, column):
    with Catalog(build, read_only=True) as cat:
        row = tensors.rows(cat.query(f"SELECT {column} FROM frames WHERE clip_id = '{clip_id}' "
                        f"AND frame_index = {frame_index} AND view = {view}"))[0]
    return tensors.decode(row[column])


def test_selection_excludes_eval_random_weights_and_rejected(build):
    ids = {c.clip_id for c in select_clips(build)}
    assert ids == {"d3-part0-0", "d3-part1-0", "s1-0"}
    assert "eval-0" in {c.clip_id for c in select_clips(build, include_eval=True)}
    assert "random-0" in {c.clip_id for c in select_clips(build, include_random_weights=True)}
    reader = ShardReader(build, 1, 2)
    seen = {cid for e in range(5) for s in reader.epoch_samples(e) for cid in [reader.clips[s.clip].clip_id]}
    assert seen == ids


def test_stage1_pairs_come_from_the_shards(build):
    reader = ShardReader(build, 1, 1, samples_per_clip=4, random_reference=False)
    samples = reader.epoch_samples(0)
    image = next(s for s in samples if reader.clips[s.clip].clip_id == "s1-0")
    video = next(s for s in samples if reader.clips[s.clip].media_type == "video")
    for s in (image, video):
        clip = reader.clips[s.clip]
        batch = reader.batch_of([s])
        (fi, view), = s.frames
        ref_fi, ref_view = s.reference
        np.testing.assert_array_equal(
            batch["reference"][0].numpy(), stored(build, clip.clip_id, ref_fi, ref_view, "latent")
        )
        np.testing.assert_array_equal(
            batch["latents"][0, :, 0].numpy(), stored(build, clip.clip_id, fi, view, "latent")
        )
        np.testing.assert_array_equal(batch["position_maps"][0, :, 0].numpy(),
                                      stored(build, clip.clip_id, fi, view, "position_map"))
    assert image.reference == (0, 0) and image.frames[0][0] == 0 and image.frames[0][1] > 0
    assert video.reference == (0, 0) and video.frames[0][1] == 0 and video.frames[0][0] != 0


def test_stage2_windows_are_consecutive_video_frames(build):
    reader = ShardReader(build, 2, 2, frames=8, samples_per_clip=3)
    for s in reader.epoch_samples(0):
        assert reader.clips[s.clip].media_type == "video"
        idx = [fi for fi, view in s.frames]
        assert idx == list(range(idx[0], idx[0] + 8)) and all(v == 0 for _, v in s.frames)
    batch = reader.first_batch()
    assert batch["latents"].shape == (2, 4, 8, 64, 64) and batch["latents"].dtype == torch.float16
    assert batch["position_maps"].shape == (2, 3, 8, 64, 64)
    assert batch["reference"].shape == (2, 4, 64, 64)
    with pytest.raises(ReaderError, match="consecutive"):
        ShardReader(build, 2, 2, frames=17)


def test_stage1_random_pairs_get_maps_against_their_own_reference(build):
    reader = ShardReader(build, 1, 1, samples_per_clip=40)
    video = [s for s in reader.epoch_samples(0) if reader.clips[s.clip].media_type == "video"]
    assert len({s.reference for s in video}) > 5  # references other than the stored frame 0
    assert all(s.reference != s.frames[0] for s in video)
    s = next(s for s in video if s.reference[0] != 0)
    clip = reader.clips[s.clip]
    batch = reader.batch_of([s])
    (fi, _), = s.frames
    want = compose_map(stored(build, clip.clip_id, fi, 0, "position_map"),
                       stored(build, clip.clip_id, s.reference[0], 0, "position_map"))
    np.testing.assert_array_equal(batch["position_maps"][0, :, 0].numpy(), want)
    np.testing.assert_array_equal(
        batch["reference"][0].numpy(), stored(build, clip.clip_id, s.reference[0], 0, "latent")
    )


def test_stage2_windows_never_contain_the_reference_frame(fixtures_dir, tmp_path):
    out = make_test_build(tmp_path / "refs", n_frames=12, n_clips=2, with_image=False, with_excluded=False,
                          references=[(5,), (11,)])
    reader = ShardReader(out, 2, 1, frames=4, samples_per_clip=50)
    starts = {c.clip_id: set() for c in reader.clips}
    for s in reader.epoch_samples(0):
        clip = reader.clips[s.clip]
        idx = [fi for fi, _ in s.frames]
        assert clip.reference_frame not in idx and s.reference == (clip.reference_frame, 0)
        starts[clip.clip_id].add(idx[0])
    # Reference 5: windows 0-3 and 6-11 only; reference 11 (last frame): windows up to 7-10.
    assert starts["d3-part0-0"] == {0, 1, 6, 7, 8}
    assert starts["d3-part1-0"] == set(range(8))
    with pytest.raises(ReaderError, match="besides the reference"):
        ShardReader(out, 2, 1, frames=12)  # every 12-frame window holds the reference


def test_frame_index_is_memory_mapped_and_built_once(build):
    index = open_index(build)
    assert isinstance(index.frame, np.memmap) and isinstance(index.row_group, np.memmap)
    meta = next((build / "index").glob("*/row.npy")).parent / "meta.json"
    built = meta.stat().st_mtime_ns
    again = open_index(build)
    assert meta.stat().st_mtime_ns == built and again.clip_ids.equals(index.clip_ids)
    # Every stored frame is in it exactly once, where the shard says it is.
    with Catalog(build, read_only=True) as cat:
        n = cat.query("SELECT count(*) AS n FROM frames").column(0)[0].as_py()
    assert len(index.frame) == n
    k = index.clip_ids.to_pylist().index("d3-part0-0")
    rows = range(index.clip_start[k], index.clip_start[k + 1])
    assert [int(index.frame[r]) for r in rows] == list(range(16))


def test_a_changed_build_gets_a_new_index_and_the_stale_one_goes(fixtures_dir, tmp_path):
    import model_shards as ms

    out = make_test_build(tmp_path / "grow", n_frames=4, n_clips=1, with_image=False, with_excluded=False)
    first = open_index(out)
    old = next((out / "index").glob("*/row.npy")).parent
    rgb = ms.decode_video(ms.FIXTURES / "media" / "videos" / "d3.mp4", 3, stride=2)
    with Catalog(out) as cat:  # a resumed build commits one more source and its shard
        rows = [ms.frame_row("more-0", "more", i, 15.0, f, ms.identity_map()) for i, f in enumerate(rgb)]
        ms._commit(cat, out, "more", "test-run", [ms.source_row("more", "talking", "more.mp4", "video", "test-run")],
                   [ms.clip_row("more-0", "more", "talking", 3, 15.0, "test-run")], rows, 16)
    second = open_index(out)
    assert "more-0" in second.clip_ids.to_pylist() and "more-0" not in first.clip_ids.to_pylist()
    assert not old.exists() and len(list((out / "index").glob("*/row.npy"))) == 1


def test_batches_carry_the_clips_fps(build):
    batch = ShardReader(build, 2, 2, frames=4).first_batch()
    assert batch["fps"].tolist() == [15.0, 15.0]
    assert ShardReader(build, 1, 1).video_fps() == [15.0]


def test_a_batch_mixes_32_row_groups(fixtures_dir, tmp_path):
    out = make_test_build(tmp_path / "many", n_frames=2, n_clips=40, with_image=False, with_excluded=False,
                          references=[(0,)] * 40)
    reader = ShardReader(out, 1, 8, samples_per_clip=1)
    assert reader._n_units == 40
    plan = reader.worker_samples(0, 0, 1)
    dealt = [s for s in reader.epoch_samples(0)]
    first = {reader._unit[s.clip] for s in plan[:32]}
    assert len(first) == 32  # the first mixing group spans 32 row groups ...
    assert [s.clip for s in plan[:32]] != [s.clip for s in dealt[:32]]  # ... in a shuffled order
    assert sorted(s.clip for s in plan[:32]) == sorted(s.clip for s in dealt[:32])


def test_latent_resize_for_small_runs(build):
    batch = ShardReader(build, 1, 3, latent_size=16).first_batch()
    assert batch["latents"].shape == (3, 4, 1, 16, 16) and batch["reference"].shape == (3, 4, 16, 16)


@pytest.mark.parametrize("readers", [1, 2, 3, 4, 5])
def test_readers_partition_an_epoch_without_overlap(build, readers):
    reader = ShardReader(build, 1, 1, samples_per_clip=6)
    epoch = reader.epoch_samples(2)
    parts = [reader.worker_samples(2, r, readers) for r in range(readers)]
    assert all(parts), "every reader gets work"
    combined = Counter(s for p in parts for s in p)
    if len(epoch) >= readers:
        assert combined == Counter(epoch)
    if readers <= 3:  # as many row-group units as readers: each reader owns whole clips
        owners = [{reader.clips[s.clip].clip_id for s in p} for p in parts]
        assert sum(len(o) for o in owners) == len(set().union(*owners))


def test_shuffle_is_seeded(build):
    def order(seed, epoch=0):
        reader = ShardReader(build, 1, 1, seed=seed, samples_per_clip=8)
        return [(s.clip, s.frames) for s in reader.worker_samples(epoch, 0, 1)]

    assert order(5) == order(5)
    assert order(5) != order(6)
    assert order(5, 0) != order(5, 1)


def test_dataset_weights_set_the_mix(build):
    reader = ShardReader(build, 1, 1, samples_per_clip=40, dataset_weights={"talking": 1.0, "photos": 3.0})
    counts = Counter(reader.clips[s.clip].dataset for s in reader.epoch_samples(0))
    assert abs(counts["photos"] / sum(counts.values()) - 0.75) < 0.02
    only_video = ShardReader(build, 1, 1, dataset_weights={"talking": 1.0, "photos": 0.0})
    assert {c.dataset for c in only_video.clips} == {"talking"}


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_position_continues_the_stream_exactly(build, workers):
    def stream(start, n):
        reader = ShardReader(build, 1, 2, seed=3, start_batch=start, mix_units=1)
        loader = torch.utils.data.DataLoader(reader, batch_size=None, num_workers=workers)
        it = iter(loader)
        return [next(it) for _ in range(n)]

    full = stream(0, 7)
    tail = stream(4, 3)
    for a, b in zip(full[4:], tail):
        assert a["clip_id"] == b["clip_id"]
        assert torch.equal(a["latents"], b["latents"]) and torch.equal(a["position_maps"], b["position_maps"])


def test_two_dataloader_workers_read_disjoint_samples(build):
    reader = ShardReader(build, 1, 1, samples_per_clip=4, mix_units=1)
    per_epoch = len(reader.epoch_samples(0))
    loader = torch.utils.data.DataLoader(reader, batch_size=None, num_workers=2)
    it = iter(loader)
    batches = [next(it) for _ in range(per_epoch)]
    # Worker w gives batches w, w+2, ...; the first epoch's share of each worker is disjoint.
    w0 = reader.worker_samples(0, 0, 2)
    w1 = reader.worker_samples(0, 1, 2)
    assert not {reader.clips[s.clip].clip_id for s in w0} & {reader.clips[s.clip].clip_id for s in w1}
    got0 = [b["clip_id"][0] for b in batches[0::2]][: len(w0)]
    assert got0 == [reader.clips[s.clip].clip_id for s in w0][: len(got0)]


def test_build_without_latents_is_refused_clearly(fixtures_dir, tmp_path):
    out = make_test_build(tmp_path / "nolat", n_frames=4, n_clips=1, with_image=False, with_excluded=False,
                          latents=False)
    reader = ShardReader(out, 1, 1)
    with pytest.raises(ReaderError, match="no latents.*VAE"):
        reader.first_batch()


def test_missing_build_is_a_one_line_error(tmp_path):
    with pytest.raises(ReaderError, match="cannot read the build"):
        ShardReader(tmp_path / "nowhere", 1, 1)


def test_one_clip_per_duplicate_group(tmp_path):
    """The same footage in three files (one duplicate group) is trained on once with the
    option, and every clip of it without."""
    build = make_many_shards(tmp_path, n_clips=6, frames=4)
    with Catalog(build) as cat:
        cat.con.execute("UPDATE clips SET dup_group = 'm00000-0' WHERE list_contains(?, clip_id)",
                        [["m00000-0", "m00002-0", "m00005-0"]])
    everything = {c.clip_id for c in select_clips(build)}
    assert len(everything) == 6
    once = {c.clip_id for c in select_clips(build, one_per_dup_group=True)}
    assert once == everything - {"m00002-0", "m00005-0"}  # same frames each: the first by clip_id stays
    reader = ShardReader(build, 1, 2, one_per_dup_group=True)
    assert {reader.clips[s.clip].clip_id for e in range(3) for s in reader.epoch_samples(e)} == once
