"""Stream training samples from the build's Parquet shards (a PyTorch IterableDataset).

Clip selection goes through the catalog: kept clips only; the evaluation split
(``split = 'eval'``) and clips built by a run with any random-weights model are left out unless
asked for; datasets are mixed by the ``weight`` of the build config (``runs.config_json``).

Samples
- stage 1, video clip: two different random frames, reference and driving (RealPortrait's
  pairs). The build stores maps against the clip's reference frame (``reference_frames[0]``,
  frame 0 when null); the map against the drawn reference is composed from the two frames'
  stored maps (remap.py). ``random_reference=False``: the stored reference frame and another.
- stage 1, image: reference = view 0, driving = a random precomputed crop view k > 0 (its latent
  and its position map).
- stage 2: ``frames`` consecutive frames of a video clip that do not include the clip's
  reference frame (the model must not be able to copy it), with that reference frame.
Each batch carries the clips' sampling ``fps`` (``clips.fps``; 0 for images).

Index: where every stored frame lives (shard, row group, row) is a compact NumPy index,
memory-mapped by every rank and worker, built once per set of committed shards under
``OUT/index/<key>`` (or ``$PORTRAIT_INDEX_DIR`` / ``~/.cache`` when OUT is read-only).
Integrity: a shard is checked against the catalog's sha256 the first time a process opens it;
a corrupted shard is refused with one line.

Order and partition (all computed from metadata, so a position can be skipped to cheaply):
every epoch, each clip gets ``samples_per_clip`` samples scaled by its dataset's weight share;
row-group units (the clips whose rows start in one Parquet row group) are shuffled with
``(seed, epoch)`` and dealt round-robin to the ``world_size * num_workers`` readers, so no two
readers share a sample and each reads its own row groups; when there are fewer units than
readers, samples are dealt instead. Each reader shuffles its samples across ``mix_units``
row-group units at a time (32 by default: a batch mixes clips, datasets and identities) and
reads each row group once per such group.

Batches: the dataset yields whole batches (use ``DataLoader(batch_size=None)``). The
DataLoader takes batch k from worker ``k % num_workers``; so the number of batches one rank has
consumed is its whole reader position (``start_batch`` resumes there exactly).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, get_worker_info

from manifests import tensors
from manifests.catalog import Catalog, CatalogError

from .frame_index import _VERIFIED, FrameIndex, ReaderError, corrupt_message, open_index
from .remap import compose_map

__all__ = ["ClipEntry", "FrameIndex", "ReaderError", "Sample", "ShardReader", "open_index", "select_clips"]


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


def select_clips(
    out_dir: str | Path,
    include_eval: bool = False,
    include_random_weights: bool = False,
    datasets: list[str] | None = None,
    dataset_weights: dict[str, float] | None = None,
) -> list[ClipEntry]:
    """Kept clips eligible for training, with their dataset weight (no index rows yet)."""
    try:
        with Catalog(out_dir, read_only=True) as cat:
            rows = cat.query(
                "SELECT c.clip_id, c.dataset, c.split, c.media_type, c.reference_frames, c.fps, "
                "r.config_json, r.models_json FROM clips c LEFT JOIN runs r USING (run_id) "
                "WHERE c.verdict = 'kept' ORDER BY c.clip_id"
            ).to_pylist()
    except CatalogError as e:
        raise ReaderError(f"cannot read the build at {out_dir}: {e}") from None
    chosen = []
    for r in rows:
        if r["split"] == "eval" and not include_eval:
            continue
        if _random_weights(r["models_json"]) and not include_random_weights:
            continue
        if datasets is not None and r["dataset"] not in datasets:
            continue
        weight = (dataset_weights or {}).get(r["dataset"], _config_weights(r["config_json"]).get(r["dataset"], 1.0))
        if weight <= 0:
            continue
        refs = r["reference_frames"] or [0]
        fps = float(r["fps"] or 0.0) if r["media_type"] == "video" else 0.0
        chosen.append(ClipEntry(r["clip_id"], r["dataset"], r["media_type"], int(refs[0]), weight, fps))
    return chosen


def index_shards(out_dir: str | Path, clips: list[ClipEntry], index: FrameIndex | None = None) -> list[ClipEntry]:
    """Set each clip's row range in the frame index; clips without stored frames are dropped."""
    index = index or open_index(out_dir)
    where = {cid: k for k, cid in enumerate(index.clip_ids)}
    kept = []
    for c in clips:
        k = where.get(c.clip_id)
        if k is not None and index.clip_start[k + 1] > index.clip_start[k]:
            c.start, c.stop = int(index.clip_start[k]), int(index.clip_start[k + 1])
            kept.append(c)
    return kept


@dataclass(frozen=True)
class Sample:
    clip: int  # index into the reader's clip list
    reference: tuple[int, int]  # (frame_index, view)
    frames: tuple[tuple[int, int], ...]


class ShardReader(IterableDataset):
    def __init__(
        self,
        out_dir: str | Path,
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
        random_reference: bool = True,
    ):
        if stage not in (1, 2):
            raise ReaderError(f"stage must be 1 or 2, got {stage}")
        self.out_dir = Path(out_dir)
        self.stage, self.batch_size, self.seed = stage, batch_size, seed
        self.frames = frames if stage == 2 else 1
        self.samples_per_clip = samples_per_clip
        self.mix_units = max(1, mix_units)
        self.latent_size = latent_size
        self.rank, self.world_size = rank, world_size
        self.start_batch = start_batch
        self.random_reference = random_reference
        selected = select_clips(out_dir, include_eval, include_random_weights, datasets, dataset_weights)
        self.index = open_index(out_dir)
        self.clips = [c for c in index_shards(out_dir, selected, self.index) if self._usable(c)]
        unit_of = [(int(self.index.shard[c.start]), int(self.index.row_group[c.start])) for c in self.clips]
        unit_keys = sorted(set(unit_of))
        where = {k: i for i, k in enumerate(unit_keys)}
        self._unit = [where[k] for k in unit_of]
        self._n_units = len(unit_keys)
        if not self.clips:
            what = ("video clips with %d consecutive frames besides the reference frame" % self.frames
                    if stage == 2 else "kept clips with frames")
            raise ReaderError(
                f"no {what} to train on in {self.out_dir} (eval split and random-weights runs are excluded "
                "unless asked for)"
            )
        self._files: dict[str, pq.ParquetFile] = {}

    def video_fps(self) -> list[float]:
        """The distinct sampling rates of the video clips trained on."""
        return sorted({round(c.fps, 3) for c in self.clips if c.media_type == "video" and c.fps > 0})

    # ---- what a clip can give ---------------------------------------------------------------
    def _keys(self, clip: ClipEntry) -> tuple[np.ndarray, np.ndarray]:
        return (np.asarray(self.index.frame[clip.start : clip.stop]),
                np.asarray(self.index.view[clip.start : clip.stop]))

    def _options(self, clip: ClipEntry) -> np.ndarray:
        """Stage 1: driving frame indices (video) or view numbers (image); stage 2: window
        starts (positions in the clip's frame list). Empty = clip unusable."""
        frame, view = self._keys(clip)
        if clip.media_type == "image":
            return view[(frame == 0) & (view > 0)].astype(np.int64) if self.stage == 1 else np.zeros(0, np.int64)
        frames = frame[view == 0].astype(np.int64)
        ref = clip.reference_frame
        if ref not in frames:
            return np.zeros(0, np.int64)
        if self.stage == 1:
            others = frames[frames != ref]
            return others if len(others) else frames
        n = self.frames
        if len(frames) < n:
            return np.zeros(0, np.int64)
        starts = np.arange(len(frames) - n + 1)
        first, last = frames[starts], frames[starts + n - 1]
        # Consecutive frames only, and never the reference frame itself.
        return starts[(last - first == n - 1) & ((ref < first) | (ref > last))]

    def _usable(self, clip: ClipEntry) -> bool:
        return len(self._options(clip)) > 0

    def _draw(self, ci: int, rng: np.random.Generator) -> Sample:
        clip = self.clips[ci]
        options = self._options(clip)
        pick = int(options[int(rng.integers(len(options)))])
        if clip.media_type == "image":
            return Sample(ci, (0, 0), ((0, pick),))
        ref = (clip.reference_frame, 0)
        frame, view = self._keys(clip)
        frames = frame[view == 0]
        if self.stage == 1 and self.random_reference and len(frames) >= 2:
            r, d = rng.choice(len(frames), size=2, replace=False)
            return Sample(ci, (int(frames[r]), 0), ((int(frames[d]), 0),))
        if self.stage == 1:
            return Sample(ci, ref, ((pick, 0),))
        return Sample(ci, ref, tuple((int(frames[pick + i]), 0) for i in range(self.frames)))

    def _row(self, ci: int, key: tuple[int, int]) -> int:
        clip = self.clips[ci]
        frame, view = self._keys(clip)
        keys = frame.astype(np.int64) * 65536 + view
        pos = int(np.searchsorted(keys, key[0] * 65536 + key[1]))
        return clip.start + pos

    # ---- the plan -----------------------------------------------------------------------------
    def epoch_samples(self, epoch: int) -> list[Sample]:
        """Every sample of one epoch, in the global (pre-partition) order."""
        rng = np.random.default_rng([self.seed, epoch])
        by_dataset: dict[str, list[int]] = defaultdict(list)
        for i, c in enumerate(self.clips):
            by_dataset[c.dataset].append(i)
        total_weight = sum(self.clips[idx[0]].weight for idx in by_dataset.values())
        n_epoch = len(self.clips) * self.samples_per_clip
        counts = np.zeros(len(self.clips), dtype=np.int64)
        for name in sorted(by_dataset):
            idx = by_dataset[name]
            quota = n_epoch * self.clips[idx[0]].weight / total_weight
            quota = int(math.floor(quota) + (rng.random() < quota - math.floor(quota)))
            counts[idx] += quota // len(idx)
            counts[rng.permutation(idx)[: quota % len(idx)]] += 1
        units: list[list[int]] = [[] for _ in range(self._n_units)]
        for i, u in enumerate(self._unit):
            units[u].append(i)
        samples = []
        for u in rng.permutation(self._n_units):
            for ci in units[u]:
                samples.extend(self._draw(ci, rng) for _ in range(counts[ci]))
        return samples

    def worker_samples(self, epoch: int, reader: int, readers: int) -> list[Sample]:
        """This reader's samples of one epoch, shuffled across ``mix_units`` row-group units at a
        time; disjoint across readers."""
        samples = self.epoch_samples(epoch)
        if samples and len(samples) < readers:
            samples = samples * math.ceil(readers / len(samples))
        # Units in their shuffled order of first appearance, dealt round-robin.
        dealt: dict[int, int] = {}
        for s in samples:
            dealt.setdefault(self._unit[s.clip], len(dealt))
        if len(dealt) >= readers:
            mine = [s for s in samples if dealt[self._unit[s.clip]] % readers == reader]
        else:
            mine = samples[reader::readers]
        rng = np.random.default_rng([self.seed, epoch, reader, 1])
        out, chunk, units = [], [], set()
        for s in mine + [None]:
            if s is None or (self._unit[s.clip] not in units and len(units) == self.mix_units):
                out.extend(chunk[i] for i in rng.permutation(len(chunk)))
                chunk, units = [], set()
            if s is not None:
                chunk.append(s)
                units.add(self._unit[s.clip])
        return out

    # ---- reading -------------------------------------------------------------------------------
    def _file(self, shard: int) -> pq.ParquetFile:
        rel = self.index.shards[shard]
        if rel not in self._files:
            path = self.out_dir / rel
            if str(path) not in _VERIFIED:  # once per shard per process
                if not path.is_file():
                    raise ReaderError(f"shard {rel} named by the catalog is missing under {self.out_dir}")
                problem = corrupt_message(self.out_dir, rel, self.index.sha256[shard])
                if problem:
                    raise ReaderError(problem)
                _VERIFIED.add(str(path))
            self._files[rel] = pq.ParquetFile(path)
        return self._files[rel]

    def _load(self, samples: list[Sample]) -> dict:
        """(clip, key) -> (latent, position_map) arrays, each row group read once."""
        wanted: dict[tuple[int, int], dict[int, tuple[int, tuple[int, int]]]] = defaultdict(dict)
        for s in samples:
            for key in (s.reference, *s.frames):
                r = self._row(s.clip, key)
                wanted[(int(self.index.shard[r]), int(self.index.row_group[r]))][int(self.index.row[r])] = (s.clip, key)
        loaded = {}
        for (shard, rg), rows in wanted.items():
            order = sorted(rows)
            table = self._file(shard).read_row_group(rg, columns=["latent", "position_map"]).take(order)
            # Straight from the fixed_size_list buffers: no Python lists of 16k floats per frame.
            lat, pos = tensors.to_numpy(table.column("latent")), tensors.to_numpy(table.column("position_map"))
            for j, row in enumerate(order):
                ci, key = rows[row]
                latent = lat[j]
                if latent is None:
                    raise ReaderError(
                        f"clip {self.clips[ci].clip_id} has no latents: the build ran without a VAE "
                        "(features.latents.backend: none); rebuild with latents to train"
                    )
                loaded[(ci, key)] = (latent, pos[j])
        return loaded

    def _collate(self, samples: list[Sample], loaded: dict) -> dict:
        def lat(ci, key):
            return loaded[(ci, key)][0]

        def pos(ci, key):
            p = loaded[(ci, key)][1]
            if p is None:
                raise ReaderError(f"clip {self.clips[ci].clip_id} frame {key[0]} has no position map")
            return p

        def motion(s: Sample, key):
            """The driving frame's map against the sample's reference frame."""
            clip = self.clips[s.clip]
            if clip.media_type == "video" and s.reference[0] != clip.reference_frame:
                return compose_map(pos(s.clip, key), pos(s.clip, s.reference))
            return pos(s.clip, key)

        latents = torch.from_numpy(np.stack([np.stack([lat(s.clip, k) for k in s.frames], 1) for s in samples]))
        reference = torch.from_numpy(np.stack([lat(s.clip, s.reference) for s in samples]))
        maps = torch.from_numpy(np.stack([np.stack([motion(s, k) for k in s.frames], 1) for s in samples]))
        if self.latent_size and latents.shape[-1] != self.latent_size:
            latents, reference = self._resize(latents), self._resize(reference.unsqueeze(2)).squeeze(2)
        return {
            "latents": latents,  # (B, 4, T, h, w) float16
            "reference": reference,  # (B, 4, h, w)
            "position_maps": maps,  # (B, 3, T, P, P)
            "fps": torch.tensor([self.clips[s.clip].fps for s in samples], dtype=torch.float32),  # (B,)
            "clip_id": [self.clips[s.clip].clip_id for s in samples],
            "dataset": [self.clips[s.clip].dataset for s in samples],
        }

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """Area-resize latents (B, C, T, h, w) to ``latent_size``: CPU test runs only."""
        b, c, t, h, w = x.shape
        frames = x.float().transpose(1, 2).reshape(b * t, c, h, w)
        frames = F.interpolate(frames, size=(self.latent_size, self.latent_size), mode="area")
        return frames.view(b, t, c, self.latent_size, self.latent_size).transpose(1, 2).to(x.dtype)

    # ---- iteration -----------------------------------------------------------------------------
    def batches_for(self, reader: int, readers: int, skip_samples: int = 0):
        epoch = 0
        pending: list[Sample] = []
        # Load as many samples at a time as one mixing group holds, so a row group is read once.
        window = max(self.batch_size, self.mix_units * max(1, self.samples_per_clip))
        while True:
            plan = self.worker_samples(epoch, reader, readers)
            epoch += 1
            if skip_samples >= len(plan):
                skip_samples -= len(plan)
                continue
            plan, skip_samples = plan[skip_samples:], 0
            for start in range(0, len(plan), window):
                pending.extend(plan[start : start + window])
                usable = len(pending) - len(pending) % self.batch_size
                if not usable:
                    continue
                ready, pending = pending[:usable], pending[usable:]
                loaded = self._load(ready)
                for b in range(0, usable, self.batch_size):
                    yield self._collate(ready[b : b + self.batch_size], loaded)

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
