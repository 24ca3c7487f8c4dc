"""Stream training samples from the build's Parquet shards (a PyTorch IterableDataset).

The build may be a local (or mounted) folder or an object store (``s3://bucket/out``, or any
URI ``manifests.storage`` resolves): everything is read through the project's storage layer.

Clip selection goes through the catalog: kept clips only; the evaluation split
(``split = 'eval'``) and clips built by a run with any random-weights model are left out unless
asked for; ``one_per_dup_group`` keeps one clip of each duplicate group (``clips.dup_group``,
the same footage found in several datasets: the clip with the most frames); datasets are mixed
by the ``weight`` of the build config (``runs.config_json``):
``mix="per-dataset"`` (default) gives each dataset its weight's share of an epoch whatever its
clip count; ``mix="per-clip"`` gives each clip its dataset's weight (so a dataset's share grows
with its clip count, and equal weights sample every clip alike).

Samples
- stage 1, video clip: two different random frames, reference and driving (RealPortrait's
  pairs). The build stores maps against the clip's reference frame (``reference_frames[0]``,
  frame 0 when null); the map against the drawn reference is composed from the two frames'
  stored maps (remap.py). ``reference="stored"``: the stored reference frame and another.
- stage 1, image: reference = view 0, driving = a random precomputed crop view k > 0 (its latent
  and its position map).
- stage 2: ``frames`` consecutive frames of a video clip that do not include the reference
  frame (the model must not be able to copy it): by default the clip's stored reference frame;
  ``reference="random"`` draws it from the clip's other frames (maps composed, as in stage 1).
Each batch carries the clips' sampling ``fps`` (``clips.fps``; 0 for images).

Index and integrity: frame_index.py (where every frame lives, memory-mapped, built once per
build and node) and shard_files.py (a bounded pool of open shards; a shard is trusted on its
size, footer and verification record, hashed in full only where no record covers it, once per
node). A bad shard is refused with one line naming ``portrait verify``, or, with
``skip_bad_shards``, left out with a warning that names it and counts the samples lost.

Order and partition (all computed from metadata with vectorised NumPy: about a second per
10M samples, so a position can be skipped to cheaply): every epoch, each clip gets its share
of ``len(clips) * samples_per_clip`` samples; row-group units (the clips whose rows start in
one Parquet row group) are shuffled with ``(seed, epoch)`` and dealt round-robin to the
``world_size * num_workers`` readers, so no two readers share a sample and each reads its own
row groups; when there are fewer units than readers, samples are dealt instead. Each sample's
random draws (which frames) are a hash of (seed, epoch, its position in the epoch), so every
reader computes the same global plan without drawing for the others' samples. Each reader
shuffles its samples across ``mix_units`` row-group units at a time (32 by default: a batch
mixes clips, datasets and identities) and reads each row group once per such group.

Batches: the dataset yields whole batches (use ``DataLoader(batch_size=None)``). The
DataLoader takes batch k from worker ``k % num_workers``; so the number of batches one rank has
consumed is its whole reader position (``start_batch`` resumes there exactly).
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, get_worker_info

from manifests import tensors
from manifests.storage import Location

from .frame_index import Build, FrameIndex, open_build, open_index
from .remap import compose_maps
from .shard_files import BadShard, ReaderError, ShardPool

__all__ = ["ClipEntry", "FrameIndex", "ReaderError", "Sample", "ShardReader", "open_index", "select_clips"]

MIXES = ("per-dataset", "per-clip")
REFERENCES = ("auto", "stored", "random")
COLUMNS = ["latent", "position_map"]


@dataclass
class ClipEntry:
    clip_id: str
    dataset: str
    media_type: str
    reference_frame: int
    weight: float
    fps: float = 0.0  # sampling rate of the stored frames (0: image)
    start: int = 0  # this clip's rows in the frame index: [start, stop)
    stop: int = 0


def _random_weights(models_json: str | None) -> bool:
    if not models_json:
        return False
    try:
        models = json.loads(models_json)
    except json.JSONDecodeError:
        return False
    return any(isinstance(m, dict) and m.get("random_weights") for m in models.values())


def _config_weights(config_json: str | None) -> dict[str, float]:
    if not config_json:
        return {}
    try:
        entries = json.loads(config_json).get("datasets", [])
    except (json.JSONDecodeError, AttributeError):
        return {}
    return {e["name"]: float(e.get("weight", 1.0)) for e in entries if isinstance(e, dict) and "name" in e}


class ClipTable:
    """The clips trained on, as NumPy columns (a million clips cost a few tens of MB, not a
    Python object each); ``table[i]`` gives a ClipEntry."""

    def __init__(self, ids: pa.Array, datasets: list[str], dataset: np.ndarray, image: np.ndarray,
                 reference_frame: np.ndarray, weight: np.ndarray, fps: np.ndarray, start: np.ndarray,
                 stop: np.ndarray):
        self.ids, self.datasets = ids, datasets
        self.dataset, self.image, self.reference_frame = dataset, image, reference_frame
        self.weight, self.fps, self.start, self.stop = weight, fps, start, stop

    def take(self, keep: np.ndarray) -> ClipTable:
        return ClipTable(self.ids.take(pa.array(np.flatnonzero(keep) if keep.dtype == bool else keep)),
                         self.datasets, self.dataset[keep], self.image[keep], self.reference_frame[keep],
                         self.weight[keep], self.fps[keep], self.start[keep], self.stop[keep])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> ClipEntry:
        i = int(i)
        return ClipEntry(self.ids[i].as_py(), self.datasets[self.dataset[i]],
                         "image" if self.image[i] else "video", int(self.reference_frame[i]),
                         float(self.weight[i]), float(self.fps[i]), int(self.start[i]), int(self.stop[i]))

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def _one_per_group(groups: np.ndarray, n_frames: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``keep`` with one clip per duplicate group left: the one with the most stored frames
    (ties: the first by clip_id, the table's order), among the clips ``keep`` already holds."""
    sel = np.flatnonzero(keep)
    if not len(sel):
        return keep
    order = sel[np.lexsort((sel, -n_frames[sel], groups[sel]))]  # by group, most frames first, then id
    first = np.ones(len(order), bool)
    first[1:] = groups[order[1:]] != groups[order[:-1]]
    out = np.zeros_like(keep)
    out[order[first]] = True
    return out


def _selected(build: Build, include_eval: bool, include_random_weights: bool, datasets: list[str] | None,
              dataset_weights: dict[str, float] | None, one_per_dup_group: bool = False) -> ClipTable:
    """Kept clips eligible for training, with their dataset weight and index rows (clips
    without stored frames are left out). ``one_per_dup_group``: one clip of each duplicate
    group (``clips.dup_group``: the same footage in several datasets or files)."""
    clips = build.clips
    keep = np.ones(clips.num_rows, bool)
    if not include_eval:
        keep &= pc.fill_null(pc.not_equal(clips.column("split"), "eval"), True).to_numpy(zero_copy_only=False)
    run_ids = clips.column("run_id").to_numpy(zero_copy_only=False)
    runs = build.runs
    if not include_random_weights:
        bad_runs = [r for r, v in runs.items() if _random_weights(v.get("models_json"))]
        keep &= ~np.isin(run_ids, bad_runs)
    names = clips.column("dataset").to_numpy(zero_copy_only=False)
    if datasets is not None:
        keep &= np.isin(names, datasets)
    # A clip's weight: the caller's, else its run's build config's, else 1.
    weight = np.ones(clips.num_rows)
    per_run = {r: _config_weights(v.get("config_json")) for r, v in runs.items()}
    for name in np.unique(names):
        is_name = names == name
        if dataset_weights and name in dataset_weights:
            weight[is_name] = float(dataset_weights[name])
            continue
        for r, w in per_run.items():
            if name in w:
                weight[is_name & (run_ids == r)] = w[name]
    keep &= weight > 0
    index = build.index
    where = pc.fill_null(pc.index_in(clips.column("clip_id"), value_set=index.clip_ids), -1).to_numpy().astype(np.int64)
    keep &= where >= 0
    k = np.where(keep, where, 0)
    start, stop = np.asarray(index.clip_start)[k], np.asarray(index.clip_start)[k + 1]
    keep &= stop > start
    if one_per_dup_group:
        keep = _one_per_group(clips.column("dup_group").to_numpy(zero_copy_only=False), stop - start, keep)
    sel = np.flatnonzero(keep)
    names_sel = names[sel]
    ds_names = sorted(set(names_sel.tolist()))
    ds_code = np.searchsorted(np.array(ds_names, dtype=object), names_sel).astype(np.int32) if len(sel) else \
        np.zeros(0, np.int32)
    fps = clips.column("fps").to_numpy(zero_copy_only=False)[sel].astype(float)
    image = clips.column("media_type").to_numpy(zero_copy_only=False)[sel] == "image"
    fps = np.where(image | np.isnan(fps), 0.0, fps)
    return ClipTable(clips.column("clip_id").take(pa.array(sel)).combine_chunks(), ds_names, ds_code, image,
                     clips.column("reference_frame").to_numpy(zero_copy_only=False)[sel].astype(np.int64),
                     weight[sel], fps, start[sel].astype(np.int64), stop[sel].astype(np.int64))


def select_clips(
    out_dir: str | Path | Location,
    include_eval: bool = False,
    include_random_weights: bool = False,
    datasets: list[str] | None = None,
    dataset_weights: dict[str, float] | None = None,
    one_per_dup_group: bool = False,
) -> list[ClipEntry]:
    """Kept clips eligible for training (with stored frames), with their dataset weight."""
    return list(_selected(open_build(out_dir), include_eval, include_random_weights, datasets, dataset_weights,
                          one_per_dup_group))


@dataclass(frozen=True)
class Sample:
    clip: int  # index into the reader's clip list
    reference: tuple[int, int]  # (frame_index, view)
    frames: tuple[tuple[int, int], ...]


@dataclass
class Plan:
    """Samples as arrays: clip (into the reader's clips), the reference frame's index row, the
    first driving frame's index row (stage 2: ``frames`` consecutive rows from there)."""

    clip: np.ndarray
    ref: np.ndarray
    drive: np.ndarray

    def __len__(self) -> int:
        return len(self.clip)

    def __getitem__(self, s) -> Plan:
        return Plan(self.clip[s], self.ref[s], self.drive[s])

    @staticmethod
    def concat(parts: list[Plan]) -> Plan:
        return Plan(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("clip", "ref", "drive")))


def _where(mask: np.ndarray):
    """An index for the true entries: a slice (no copies) when all or none are true."""
    if mask.all():
        return slice(None)
    return np.flatnonzero(mask) if mask.any() else slice(0, 0)


def _pick(u: np.ndarray, n: np.ndarray) -> np.ndarray:
    """floor(u * n) for u in [0, 1): a uniform choice among n (0 where n is 0)."""
    return (u * n).astype(np.int64)


class ShardReader(IterableDataset):
    def __init__(
        self,
        out_dir: str | Path | Location,
        stage: int,
        batch_size: int,
        seed: int = 0,
        frames: int = 16,
        samples_per_clip: int = 1,
        mix_units: int = 32,
        latent_size: int | None = None,
        include_eval: bool = False,
        include_random_weights: bool = False,
        datasets: list[str] | None = None,
        dataset_weights: dict[str, float] | None = None,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        random_reference: bool | None = None,
        reference: str = "auto",
        mix: str = "per-dataset",
        max_open_shards: int = 32,
        skip_bad_shards: bool = False,
        one_per_dup_group: bool = False,
    ):
        if stage not in (1, 2):
            raise ReaderError(f"stage must be 1 or 2, got {stage}")
        if mix not in MIXES:
            raise ReaderError(f"mix must be one of {', '.join(MIXES)}, got {mix!r}")
        if reference not in REFERENCES:
            raise ReaderError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
        if random_reference is not None:  # the older spelling
            reference = "random" if random_reference else "stored"
        self.random_reference = reference == "random" or (reference == "auto" and stage == 1)
        self.out_dir = out_dir
        self.stage, self.batch_size, self.seed = stage, batch_size, seed
        self.frames = frames if stage == 2 else 1
        self.samples_per_clip = samples_per_clip
        self.mix_units = max(1, mix_units)
        self.mix = mix
        self.latent_size = latent_size
        self.rank, self.world_size = rank, world_size
        self.start_batch = start_batch
        self.skip_bad_shards = skip_bad_shards
        build = open_build(out_dir, skip_bad=skip_bad_shards, max_open=max_open_shards)
        self.loc, self.index = build.loc, build.index
        self.pool = ShardPool(build.loc, build.shards, build.marker_dir, max_open=max_open_shards)
        clips = _selected(build, include_eval, include_random_weights, datasets, dataset_weights, one_per_dup_group)
        clips = self._known_bad(clips, build)
        self.clips = clips.take(self._usable(clips))
        if not len(self.clips):
            what = (f"video clips with {self.frames} consecutive frames besides the reference frame"
                    if stage == 2 else "kept clips with frames")
            raise ReaderError(
                f"no {what} to train on in {self.loc.uri} (eval split and random-weights runs are excluded "
                "unless asked for)"
            )
        c = self.clips
        self._n = c.stop - c.start
        self._refpos = np.where(c.image, 0, c.reference_frame - np.asarray(self.index.frame)[c.start])
        units = np.asarray(self.index.shard)[c.start].astype(np.int64) << 32 | np.asarray(self.index.row_group)[c.start]
        keys, self._unit = np.unique(units, return_inverse=True)
        self._n_units = len(keys)
        self._lost: dict[int, int] = {}  # bad shard code -> samples lost (skip mode), this process

    # ---- what a clip can give ---------------------------------------------------------------
    def _known_bad(self, clips: ClipTable, build: Build) -> ClipTable:
        """Shards the catalog marks bad (``portrait verify``) or the index left out: refused
        now, in one line, or (skip mode) their clips left out, with a warning each."""
        problems = {k: f"was found bad by `portrait verify` ({s['problem']})" for k, s in enumerate(build.shards)
                    if s.get("problem")}
        codes = {p: k for k, p in enumerate(self.index.shards)}
        problems.update({codes[p]: why for p, why in self.index.bad.items() if p in codes})
        if not problems:
            return clips
        if not self.skip_bad_shards:
            k, why = next(iter(sorted(problems.items())))
            raise BadShard(k, self.index.shards[k], why, self.loc.uri)
        shard = np.asarray(self.index.shard)
        hit = np.zeros(len(clips), bool)
        for k, why in sorted(problems.items()):
            cum = np.concatenate([[0], np.cumsum(shard == k)])
            in_k = cum[clips.stop] > cum[clips.start]
            hit |= in_k
            _warn(f"warning: skipping shard {self.index.shards[k]} ({why}): its {int(in_k.sum())} clips (about "
                  f"{int(in_k.sum()) * self.samples_per_clip} samples an epoch) are left out; "
                  f"run `portrait verify {self.loc.uri}`")
        return clips.take(~hit)

    def _usable(self, c: ClipTable) -> np.ndarray:
        """Which clips can give a sample of this stage (vectorised over the clip table)."""
        frame = np.asarray(self.index.frame)
        view = np.asarray(self.index.view)
        n = c.stop - c.start
        v0 = np.asarray(self.index.clip_v0)[self._codes(c)] if len(c) else np.zeros(0, np.int64)
        first, last = frame[c.start], frame[c.stop - 1]
        # Images: one frame (0), its view 0 first, and at least one crop view to drive.
        image_ok = c.image & (first == 0) & (last == 0) & (view[c.start] == 0) & (n >= 2) & (self.stage == 1)
        # Videos: consecutive frames, view 0 only (what the build writes), the reference among them.
        refpos = c.reference_frame - first
        video_ok = ~c.image & (v0 == n) & (last - first == n - 1) & (refpos >= 0) & (refpos < n)
        if self.stage == 2:
            t = self.frames
            if self.random_reference:
                video_ok &= n > t  # a window and at least one frame outside it
            else:
                video_ok &= (np.maximum(0, refpos - t + 1) + np.maximum(0, n - t - refpos)) > 0
        return image_ok | video_ok

    def _codes(self, c: ClipTable) -> np.ndarray:
        """The clips' positions in the index (clip_start is sorted: its starts are unique)."""
        return np.searchsorted(np.asarray(self.index.clip_start), c.start)

    def video_fps(self) -> list[float]:
        """The distinct sampling rates of the video clips trained on."""
        fps = self.clips.fps[~self.clips.image]
        return sorted({round(float(f), 3) for f in np.unique(fps) if f > 0})

    # ---- the plan -----------------------------------------------------------------------------
    def _counts(self, rng: np.random.Generator) -> np.ndarray:
        """Samples per clip this epoch."""
        c = self.clips
        n_epoch = len(c) * self.samples_per_clip
        counts = np.zeros(len(c), dtype=np.int64)
        if self.mix == "per-clip":
            expect = n_epoch * c.weight / c.weight.sum()
            return (np.floor(expect) + (rng.random(len(c)) < expect - np.floor(expect))).astype(np.int64)
        # Each dataset its weight's share (the weight of its first clip, as the build config
        # gives one per dataset), spread evenly over its clips, the remainder at random.
        present = np.unique(c.dataset)  # codes follow the names' order
        first = {int(d): int(np.flatnonzero(c.dataset == d)[0]) for d in present}
        total = sum(float(c.weight[i]) for i in first.values())
        for d in present:
            idx = np.flatnonzero(c.dataset == d)
            quota = n_epoch * float(c.weight[first[int(d)]]) / total
            quota = int(math.floor(quota) + (rng.random() < quota - math.floor(quota)))
            counts[idx] += quota // len(idx)
            counts[rng.permutation(idx)[: quota % len(idx)]] += 1
        return counts

    def _global(self, epoch: int) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
        """The epoch in global order: every sample's clip, the units' deal numbers (-1: no
        sample), how many units were dealt, and two uniform draws per sample (float32: enough
        for a choice among a clip's frames, half the memory)."""
        rng = np.random.default_rng([self.seed, epoch])
        counts = self._counts(rng)
        perm = rng.permutation(self._n_units)
        rank = np.empty(self._n_units, np.int64)
        rank[perm] = np.arange(self._n_units)
        order = np.lexsort((np.arange(len(self.clips)), rank[self._unit]))
        clip = np.repeat(order, counts[order])
        unit_count = np.bincount(self._unit, weights=counts, minlength=self._n_units)
        appear = perm[unit_count[perm] > 0]
        deal = np.full(self._n_units, -1, np.int64)
        deal[appear] = np.arange(len(appear))
        u = rng.random((2, len(clip)), dtype=np.float32)
        return clip, deal, len(appear), u[0], u[1]

    def _draw(self, clip: np.ndarray, u1: np.ndarray, u2: np.ndarray) -> Plan:
        """Each sample's frames (index rows) from its two uniform draws."""
        c = self.clips
        st, n = c.start[clip], self._n[clip]
        if self.stage == 1:
            ref, drive = st.copy(), np.empty_like(st)
            img = c.image[clip]
            i = _where(img)  # images: view 0 as the reference, a crop view (rows 1..n-1) to drive
            drive[i] = st[i] + 1 + _pick(u1[i], n[i] - 1)
            pair = ~img & (n >= 2) if self.random_reference else np.zeros(len(clip), bool)
            i = _where(pair)  # two different random frames
            r, d = _pick(u1[i], n[i]), _pick(u2[i], n[i] - 1)
            ref[i], drive[i] = st[i] + r, st[i] + d + (d >= r)
            i = _where(~img & ~pair)  # the stored reference and another frame
            rp, ni = self._refpos[clip[i]], n[i]
            d = _pick(u1[i], ni - 1)
            ref[i], drive[i] = st[i] + rp, st[i] + np.where(ni >= 2, d + (d >= rp), rp)
            return Plan(clip, ref, drive)
        t = self.frames
        if self.random_reference:  # a window, and a reference among the frames outside it
            p = _pick(u1, n - t + 1)
            j = _pick(u2, n - t)
            return Plan(clip, st + np.where(j < p, j, j + t), st + p)
        rp = self._refpos[clip]  # windows before the stored reference, then after it
        left = np.maximum(0, rp - t + 1)
        j = _pick(u1, left + np.maximum(0, n - t - rp))
        return Plan(clip, st + rp, st + np.where(j < left, j, rp + 1 + (j - left)))

    def epoch_plan(self, epoch: int) -> Plan:
        """Every sample of one epoch, in the global (pre-partition) order."""
        clip, _, _, u1, u2 = self._global(epoch)
        return self._draw(clip, u1, u2)

    def worker_plan(self, epoch: int, reader: int, readers: int) -> Plan:
        """This reader's samples of one epoch, shuffled across ``mix_units`` row-group units at a
        time; disjoint across readers."""
        clip, deal, n_dealt, u1, u2 = self._global(epoch)
        m = len(clip)
        if n_dealt >= readers:
            pos = np.flatnonzero(deal[self._unit[clip]] % readers == reader)
        else:  # fewer units than readers: samples are dealt (repeated when fewer than readers)
            total = m * math.ceil(readers / m) if 0 < m < readers else m
            pos = np.arange(reader, total, readers) % max(m, 1)
        units = self._unit[clip[pos]]
        change = np.ones(len(units), bool)
        change[1:] = units[1:] != units[:-1]
        group = (np.cumsum(change) - 1) // self.mix_units
        # A random order inside each group of mix_units units (groups stay in their order).
        rng = np.random.default_rng([self.seed, epoch, reader, 1])
        pos = pos[np.argsort(group + rng.random(len(pos)), kind="stable")]
        return self._draw(clip[pos], u1[pos], u2[pos])

    def _samples(self, plan: Plan) -> list[Sample]:
        frame, view = np.asarray(self.index.frame), np.asarray(self.index.view)
        out = []
        for ci, r, d in zip(plan.clip.tolist(), plan.ref.tolist(), plan.drive.tolist()):
            out.append(Sample(ci, (int(frame[r]), int(view[r])),
                              tuple((int(frame[x]), int(view[x])) for x in range(d, d + self.frames))))
        return out

    def epoch_samples(self, epoch: int) -> list[Sample]:
        return self._samples(self.epoch_plan(epoch))

    def worker_samples(self, epoch: int, reader: int, readers: int) -> list[Sample]:
        return self._samples(self.worker_plan(epoch, reader, readers))

    def _row(self, ci: int, key: tuple[int, int]) -> int:
        start, stop = int(self.clips.start[ci]), int(self.clips.stop[ci])
        frame, view = np.asarray(self.index.frame[start:stop]), np.asarray(self.index.view[start:stop])
        keys = frame.astype(np.int64) * 65536 + view
        return start + int(np.searchsorted(keys, key[0] * 65536 + key[1]))

    def plan_of(self, samples: list[Sample]) -> Plan:
        """Samples (as ``epoch_samples`` gives them) back as a plan."""
        return Plan(np.array([s.clip for s in samples], np.int64),
                    np.array([self._row(s.clip, s.reference) for s in samples], np.int64),
                    np.array([self._row(s.clip, s.frames[0]) for s in samples], np.int64))

    # ---- reading -------------------------------------------------------------------------------
    def _load(self, plan: Plan) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, set[int]]:
        """The plan's frames, each row group read once: (rows, latents, maps, bad shards)."""
        rows = np.unique(np.concatenate([plan.ref, (plan.drive[:, None] + np.arange(self.frames)).ravel()]))
        shard = np.asarray(self.index.shard)[rows]
        group = np.asarray(self.index.row_group)[rows]
        local = np.asarray(self.index.row)[rows]
        keys = shard.astype(np.int64) << 32 | group
        bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True]) if len(keys) else np.zeros(1, np.int64)
        lat = pos = None
        bad: set[int] = set()
        for a, b in zip(bounds[:-1], bounds[1:]):
            code, rg = int(shard[a]), int(group[a])
            if code in bad:
                continue
            try:
                table = self.pool.read_row_group(code, rg, COLUMNS).take(pa.array(local[a:b]))
            except BadShard as e:
                if not self.skip_bad_shards:
                    raise
                bad.add(code)
                self._report_lost(e, plan)
                continue
            latents = table.column("latent")
            if latents.null_count:
                ci = int(np.searchsorted(self.clips.start, rows[a], side="right") - 1)
                raise ReaderError(
                    f"clip {self.clips.ids[ci].as_py()} has no latents: the build ran without a VAE "
                    "(features.latents.backend: none); rebuild with latents to train")
            maps = table.column("position_map")
            if maps.null_count:
                ci = int(np.searchsorted(self.clips.start, rows[a], side="right") - 1)
                raise ReaderError(f"clip {self.clips.ids[ci].as_py()} has frames without a position map: "
                                  "rebuild with features.position_map enabled")
            # Straight from the fixed_size_list buffers: no Python lists of 16k floats per frame.
            la, ma = tensors.stack(latents), tensors.stack(maps)
            if lat is None:
                lat = np.zeros((len(rows), *la.shape[1:]), la.dtype)
                pos = np.zeros((len(rows), *ma.shape[1:]), ma.dtype)
            lat[a:b], pos[a:b] = la, ma
        return rows, lat, pos, bad

    def _report_lost(self, e: BadShard, plan: Plan) -> None:
        shard = np.asarray(self.index.shard)
        need = (shard[plan.ref] == e.code) | np.any(shard[plan.drive[:, None] + np.arange(self.frames)] == e.code, 1)
        _warn(f"warning: skipping shard {e.rel} ({e.problem}): {int(need.sum())} of the {len(plan)} samples this "
              f"reader had loaded at once need it and are replaced by others of their batch; "
              f"run `portrait verify {self.loc.uri}`")
        self._lost[e.code] = self._lost.get(e.code, 0) + int(need.sum())

    def _collate(self, plan: Plan, loaded) -> dict:
        rows, lat, pos, bad = loaded
        t = self.frames
        frames = plan.drive[:, None] + np.arange(t)
        if bad:
            shard = np.asarray(self.index.shard)
            lost = np.isin(shard[plan.ref], list(bad)) | np.isin(shard[frames], list(bad)).any(1)
            good = np.flatnonzero(~lost)
            if not len(good):
                raise ReaderError(f"every sample of a batch needs a bad shard ({len(bad)} skipped): run "
                                  f"`portrait verify {self.loc.uri}`")
            # Lost samples are replaced by the batch's good ones (the batch keeps its size).
            fill = good[np.arange(int(lost.sum())) % len(good)]
            pick = np.arange(len(plan))
            pick[lost] = fill
            plan, frames = plan[pick], frames[pick]
        at_ref, at_frames = np.searchsorted(rows, plan.ref), np.searchsorted(rows, frames)
        latents = torch.from_numpy(np.ascontiguousarray(lat[at_frames].transpose(0, 2, 1, 3, 4)))
        reference = torch.from_numpy(lat[at_ref])
        maps = pos[at_frames]  # (B, T, 3, P, P)
        # Maps are stored against the clip's stored reference frame: against another one,
        # they are composed from the two frames' maps (the inverse of the reference's once).
        frame = np.asarray(self.index.frame)
        c = self.clips
        moved = ~c.image[plan.clip] & (frame[plan.ref] != c.reference_frame[plan.clip])
        for i in np.flatnonzero(moved):
            maps[i] = compose_maps(maps[i], pos[at_ref[i]])
        maps = torch.from_numpy(np.ascontiguousarray(maps.transpose(0, 2, 1, 3, 4)))
        if self.latent_size and latents.shape[-1] != self.latent_size:
            latents, reference = self._resize(latents), self._resize(reference.unsqueeze(2)).squeeze(2)
        ids = c.ids.take(pa.array(plan.clip)).to_pylist()
        return {
            "latents": latents,  # (B, 4, T, h, w) float16
            "reference": reference,  # (B, 4, h, w)
            "position_maps": maps,  # (B, 3, T, P, P)
            "fps": torch.tensor(c.fps[plan.clip], dtype=torch.float32),  # (B,)
            "clip_id": ids,
            "dataset": [c.datasets[d] for d in c.dataset[plan.clip]],
        }

    def batch_of(self, samples: list[Sample] | Plan) -> dict:
        """One batch of the given samples, read here."""
        plan = samples if isinstance(samples, Plan) else self.plan_of(samples)
        return self._collate(plan, self._load(plan))

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """Area-resize latents (B, C, T, h, w) to ``latent_size``: CPU test runs only."""
        b, c, t, h, w = x.shape
        frames = x.float().transpose(1, 2).reshape(b * t, c, h, w)
        frames = F.interpolate(frames, size=(self.latent_size, self.latent_size), mode="area")
        return frames.view(b, t, c, self.latent_size, self.latent_size).transpose(1, 2).to(x.dtype)

    # ---- iteration -----------------------------------------------------------------------------
    def batches_for(self, reader: int, readers: int, skip_samples: int = 0):
        epoch = 0
        pending: list[tuple[Plan, tuple]] = []  # samples carried into the next epoch's first batch
        # Load as many samples at a time as one mixing group holds, so a row group is read once.
        window = max(self.batch_size, self.mix_units * max(1, self.samples_per_clip))
        while True:
            plan = self.worker_plan(epoch, reader, readers)
            epoch += 1
            if skip_samples >= len(plan):
                skip_samples -= len(plan)
                continue
            plan, skip_samples = plan[skip_samples:], 0
            for start in range(0, len(plan), window):
                part = plan[start : start + window]
                loaded = self._load(part)
                pending.append((part, loaded))
                have = sum(len(p) for p, _ in pending)
                usable = have - have % self.batch_size
                if not usable:
                    continue
                whole = Plan.concat([p for p, _ in pending])
                if len(pending) > 1:  # a batch across epochs: its two parts' frames, merged
                    loaded = _merge([ld for _, ld in pending])
                for b in range(0, usable, self.batch_size):
                    yield self._collate(whole[b : b + self.batch_size], loaded)
                rest = whole[usable:]
                pending = [(rest, loaded)] if len(rest) else []

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        reader = self.rank * workers + worker
        readers = self.world_size * workers
        # Batch k of this rank came from worker k % workers.
        consumed = len(range(worker, self.start_batch, workers))
        return self.batches_for(reader, readers, consumed * self.batch_size)

    def first_batch(self) -> dict:
        """One batch read in this process: checks the data before workers start."""
        return next(self.batches_for(0, 1))


def _merge(parts: list[tuple]) -> tuple:
    """Loaded frames of several windows as one (rows sorted, for searchsorted)."""
    keep = [p for p in parts if p[1] is not None]  # a window whose every shard was bad has none
    bad = set().union(*(p[3] for p in parts))
    if not keep:
        return np.zeros(0, np.int64), None, None, bad
    rows = np.concatenate([p[0] for p in keep])
    order = np.argsort(rows, kind="stable")
    return (rows[order], np.concatenate([p[1] for p in keep])[order], np.concatenate([p[2] for p in keep])[order],
            bad)


def _warn(message: str) -> None:
    if message:
        print(message, file=sys.stderr, flush=True)

