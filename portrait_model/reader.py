"""Stream training samples from the build's Parquet shards (a PyTorch IterableDataset).

Clip selection goes through the catalog: kept clips only; the evaluation split
(``split = 'eval'``) and clips built by a run with any random-weights model are left out unless
asked for; datasets are mixed by the ``weight`` of the build config (``runs.config_json``).

Samples
- stage 1, video clip: reference = the clip's reference frame (``reference_frames[0]``, frame 0
  when null; position maps are stored relative to it), driving = another random frame.
- stage 1, image: reference = view 0, driving = a random precomputed crop view k > 0 (its latent
  and its position map).
- stage 2: ``frames`` consecutive frames of a video clip, with the clip's reference frame.

Order and partition (all computed from metadata, so a position can be skipped to cheaply):
every epoch, each clip gets ``samples_per_clip`` samples scaled by its dataset's weight share;
row-group units (the clips whose rows start in one Parquet row group) are shuffled with
``(seed, epoch)`` and dealt round-robin to the ``world_size * num_workers`` readers, so no two
readers share a sample and each reads its own row groups; when there are fewer units than
readers, samples are dealt instead. Each reader shuffles its samples within windows of
``shuffle_window`` and reads each row group at most once per window.

Batches: the dataset yields whole batches (use ``DataLoader(batch_size=None)``). The
DataLoader takes batch k from worker ``k % num_workers``; so the number of batches one rank has
consumed is its whole reader position (``start_batch`` resumes there exactly).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, get_worker_info

from manifests import tensors
from manifests.catalog import Catalog, CatalogError

from . import PortraitModelError


class ReaderError(PortraitModelError):
    """The build cannot be read for training as asked."""


@dataclass
class ClipEntry:
    clip_id: str
    dataset: str
    media_type: str
    reference_frame: int
    weight: float
    shard: str = ""  # relative to the output folder
    rows: dict = field(default_factory=dict)  # (frame_index, view) -> (row_group, row_in_group)

    def video_frames(self) -> list[int]:
        return sorted(fi for fi, view in self.rows if view == 0)

    def views(self) -> list[int]:
        return sorted(view for fi, view in self.rows if fi == 0 and view > 0)


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
    """Kept clips eligible for training, with their dataset weight (no shard rows yet)."""
    try:
        with Catalog(out_dir, read_only=True) as cat:
            rows = cat.query(
                "SELECT c.clip_id, c.dataset, c.split, c.media_type, c.reference_frames, "
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
        chosen.append(ClipEntry(r["clip_id"], r["dataset"], r["media_type"], int(refs[0]), weight))
    return chosen


def index_shards(out_dir: str | Path, clips: list[ClipEntry]) -> list[ClipEntry]:
    """Fill each clip's shard and row positions from the shards' id columns."""
    out_dir = Path(out_dir)
    by_id = {c.clip_id: c for c in clips}
    with Catalog(out_dir, read_only=True) as cat:
        shard_paths = cat.shard_paths()
    for rel in shard_paths:
        path = out_dir / rel
        if not path.is_file():
            raise ReaderError(f"shard {rel} named by the catalog is missing under {out_dir}")
        pf = pq.ParquetFile(path)
        for rg in range(pf.num_row_groups):
            ids = pf.read_row_group(rg, columns=["clip_id", "frame_index", "view"]).to_pydict()
            for i, (cid, fi, view) in enumerate(zip(ids["clip_id"], ids["frame_index"], ids["view"])):
                clip = by_id.get(cid)
                if clip is not None:
                    clip.shard = rel
                    clip.rows[(int(fi), int(view))] = (rg, i)
    return [c for c in clips if c.rows]


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
        shuffle_window: int = 128,
        latent_size: int | None = None,
        include_eval: bool = False,
        include_random_weights: bool = False,
        datasets: list[str] | None = None,
        dataset_weights: dict[str, float] | None = None,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ):
        if stage not in (1, 2):
            raise ReaderError(f"stage must be 1 or 2, got {stage}")
        self.out_dir = Path(out_dir)
        self.stage, self.batch_size, self.seed = stage, batch_size, seed
        self.frames = frames if stage == 2 else 1
        self.samples_per_clip = samples_per_clip
        self.shuffle_window = shuffle_window
        self.latent_size = latent_size
        self.rank, self.world_size = rank, world_size
        self.start_batch = start_batch
        selected = select_clips(out_dir, include_eval, include_random_weights, datasets, dataset_weights)
        indexed = index_shards(out_dir, selected)
        self.clips = [c for c in indexed if self._options(c)]
        self._choices = [self._options(c) for c in self.clips]
        unit_keys = sorted({(c.shard, min(c.rows.values())[0]) for c in self.clips})
        where = {k: i for i, k in enumerate(unit_keys)}
        self._unit = [where[(c.shard, min(c.rows.values())[0])] for c in self.clips]
        self._n_units = len(unit_keys)
        if not self.clips:
            what = "video clips with %d consecutive frames" % self.frames if stage == 2 else "kept clips with frames"
            raise ReaderError(
                f"no {what} to train on in {self.out_dir} (eval split and random-weights runs are excluded "
                "unless asked for)"
            )
        self._files: dict[str, pq.ParquetFile] = {}

    # ---- what a clip can give ---------------------------------------------------------------
    def _options(self, clip: ClipEntry):
        """Stage 1: driving keys; stage 2: window start positions. Empty = clip unusable."""
        if clip.media_type == "image":
            return [(0, v) for v in clip.views()] if self.stage == 1 else []
        frames = clip.video_frames()
        if (clip.reference_frame, 0) not in clip.rows:
            return []
        if self.stage == 1:
            others = [f for f in frames if f != clip.reference_frame]
            return [(f, 0) for f in (others or frames)]
        n = self.frames
        return [i for i in range(len(frames) - n + 1) if frames[i + n - 1] - frames[i] == n - 1]

    def _draw(self, ci: int, rng: np.random.Generator) -> Sample:
        clip = self.clips[ci]
        options = self._choices[ci]
        pick = options[int(rng.integers(len(options)))]
        if clip.media_type == "image":
            return Sample(ci, (0, 0), (pick,))
        ref = (clip.reference_frame, 0)
        if self.stage == 1:
            return Sample(ci, ref, (pick,))
        frames = clip.video_frames()
        return Sample(ci, ref, tuple((frames[pick + i], 0) for i in range(self.frames)))

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
        """This reader's samples of one epoch, shuffled within windows; disjoint across readers."""
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
        w = max(1, self.shuffle_window)
        out = []
        for start in range(0, len(mine), w):
            chunk = mine[start : start + w]
            out.extend(chunk[i] for i in rng.permutation(len(chunk)))
        return out

    # ---- reading -------------------------------------------------------------------------------
    def _file(self, rel: str) -> pq.ParquetFile:
        if rel not in self._files:
            self._files[rel] = pq.ParquetFile(self.out_dir / rel)
        return self._files[rel]

    def _load(self, samples: list[Sample]) -> dict:
        """(clip, key) -> (latent, position_map) arrays, each row group read once."""
        wanted: dict[tuple[str, int], dict[int, tuple[int, tuple[int, int]]]] = defaultdict(dict)
        for s in samples:
            clip = self.clips[s.clip]
            for key in (s.reference, *s.frames):
                rg, row = clip.rows[key]
                wanted[(clip.shard, rg)][row] = (s.clip, key)
        loaded = {}
        for (shard, rg), rows in wanted.items():
            order = sorted(rows)
            table = self._file(shard).read_row_group(rg, columns=["latent", "position_map"]).take(order)
            lat, pos = table.column("latent").to_pylist(), table.column("position_map").to_pylist()
            for j, row in enumerate(order):
                ci, key = rows[row]
                latent = tensors.decode(lat[j])
                if latent is None:
                    raise ReaderError(
                        f"clip {self.clips[ci].clip_id} has no latents: the build ran without a VAE "
                        "(features.latents.backend: none); rebuild with latents to train"
                    )
                loaded[(ci, key)] = (latent, tensors.decode(pos[j]))
        return loaded

    def _collate(self, samples: list[Sample], loaded: dict) -> dict:
        def lat(ci, key):
            return loaded[(ci, key)][0]

        def pos(ci, key):
            p = loaded[(ci, key)][1]
            if p is None:
                raise ReaderError(f"clip {self.clips[ci].clip_id} frame {key[0]} has no position map")
            return p

        latents = torch.from_numpy(np.stack([np.stack([lat(s.clip, k) for k in s.frames], 1) for s in samples]))
        reference = torch.from_numpy(np.stack([lat(s.clip, s.reference) for s in samples]))
        maps = torch.from_numpy(np.stack([np.stack([pos(s.clip, k) for k in s.frames], 1) for s in samples]))
        if self.latent_size and latents.shape[-1] != self.latent_size:
            latents, reference = self._resize(latents), self._resize(reference.unsqueeze(2)).squeeze(2)
        return {
            "latents": latents,  # (B, 4, T, h, w) float16
            "reference": reference,  # (B, 4, h, w)
            "position_maps": maps,  # (B, 3, T, P, P)
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
        while True:
            plan = self.worker_samples(epoch, reader, readers)
            epoch += 1
            if skip_samples >= len(plan):
                skip_samples -= len(plan)
                continue
            plan, skip_samples = plan[skip_samples:], 0
            for start in range(0, len(plan), self.shuffle_window):
                window = plan[start : start + self.shuffle_window]
                pending.extend(window)
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
