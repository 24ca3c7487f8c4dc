"""The frame index of a build: where every stored frame lives, in memory-mapped NumPy arrays.

One row per stored frame, sorted by (clip, frame_index, view): shard, row group and row, 18
bytes a frame (45M frames: under 1 GB on disk, shared through the page cache by every rank and
dataloader worker instead of a Python dict per process). Built once per set of committed shards
(the key hashes the catalog's shard paths and sha256s) under ``OUT/index/<key>``, or
``$PORTRAIT_INDEX_DIR`` / ``~/.cache`` when OUT is read-only; one process builds it under a file
lock while the others wait. Shard integrity: ``corrupt_message`` compares a shard's sha256 with
the catalog's (the reader calls it once per shard per process).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests.catalog import Catalog, CatalogError
from manifests.shards import sha256_of

from . import PortraitModelError

INDEX_VERSION = 1
_VERIFIED: set[str] = set()  # shards whose sha256 this process has checked


class ReaderError(PortraitModelError):
    """The build cannot be read for training as asked."""


@dataclass
class FrameIndex:
    """Every stored frame of a build, sorted by (clip, frame_index, view), in NumPy arrays."""

    shards: list[str]  # relative paths; ``shard`` codes index this list
    sha256: list[str]
    clip_ids: list[str]
    clip_start: np.ndarray  # (n_clips + 1,) int64: rows of clip k are [clip_start[k], clip_start[k+1])
    frame: np.ndarray  # (n_rows,) int32
    view: np.ndarray  # int16
    shard: np.ndarray  # int32
    row_group: np.ndarray  # int32
    row: np.ndarray  # int32, within the row group

    ARRAYS = ("clip_start", "frame", "view", "shard", "row_group", "row")


def _index_folder(out_dir: Path, key: str) -> Path:
    override = os.environ.get("PORTRAIT_INDEX_DIR")
    if override:
        return Path(override) / key
    if os.access(out_dir, os.W_OK):
        return out_dir / "index" / key
    return Path.home() / ".cache" / "portrait_model" / "index" / key


def open_index(out_dir: str | Path) -> FrameIndex:
    """The build's frame index, memory-mapped; built first (once, under a file lock) if absent."""
    out_dir = Path(out_dir)
    try:
        with Catalog(out_dir, read_only=True) as cat:
            shards = cat.query("SELECT path, sha256 FROM shards ORDER BY path").to_pylist()
    except CatalogError as e:
        raise ReaderError(f"cannot read the build at {out_dir}: {e}") from None
    key = hashlib.sha256(json.dumps([INDEX_VERSION, shards]).encode()).hexdigest()[:20]
    folder = _index_folder(out_dir, key)
    if not (folder / "meta.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait and then read it
            if not (folder / "meta.json").is_file():
                _build_index(out_dir, shards, folder)
    meta = json.loads((folder / "meta.json").read_text())
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in FrameIndex.ARRAYS}
    return FrameIndex(meta["shards"], meta["sha256"], meta["clip_ids"], **arrays)


def corrupt_message(out_dir: Path, rel: str, want: str) -> str | None:
    got = sha256_of(out_dir / rel)
    if got == want:
        return None
    return (f"shard {rel} is corrupted (sha256 {got[:12]}... but the catalog recorded {want[:12]}...): "
            f"run `portrait verify {out_dir}` and rebuild its sources")


def _build_index(out_dir: Path, shards: list[dict], folder: Path) -> None:
    ids, frames, views, codes, groups, rows = [], [], [], [], [], []
    for code, entry in enumerate(shards):
        rel, path = entry["path"], out_dir / entry["path"]
        if not path.is_file():
            raise ReaderError(f"shard {rel} named by the catalog is missing under {out_dir}")
        try:
            pf = pq.ParquetFile(path)
            for rg in range(pf.num_row_groups):
                t = pf.read_row_group(rg, columns=["clip_id", "frame_index", "view"])
                ids.append(t.column("clip_id").combine_chunks().cast(pa.string()))
                frames.append(t.column("frame_index").to_numpy().astype(np.int32))
                views.append(t.column("view").to_numpy().astype(np.int16))
                codes.append(np.full(t.num_rows, code, np.int32))
                groups.append(np.full(t.num_rows, rg, np.int32))
                rows.append(np.arange(t.num_rows, dtype=np.int32))
        except (OSError, pa.ArrowException) as e:
            raise ReaderError(corrupt_message(out_dir, rel, entry["sha256"])
                              or f"shard {rel} is unreadable: {str(e).splitlines()[0]}") from None
    all_ids = pa.chunked_array(ids, type=pa.string()) if ids else pa.chunked_array([], type=pa.string())
    clip_ids = pc.unique(all_ids).to_pylist()
    clip_ids.sort()
    clip_code = pc.index_in(all_ids, value_set=pa.array(clip_ids, pa.string())).to_numpy(zero_copy_only=False)
    cat = (lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt))
    frame, view = cat(frames, np.int32), cat(views, np.int16)
    order = np.lexsort((view, frame, clip_code))
    starts = np.searchsorted(clip_code[order], np.arange(len(clip_ids) + 1)).astype(np.int64)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays = dict(clip_start=starts, frame=frame[order], view=view[order], shard=cat(codes, np.int32)[order],
                  row_group=cat(groups, np.int32)[order], row=cat(rows, np.int32)[order])
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", arr)
    (tmp / "meta.json").write_text(json.dumps({
        "version": INDEX_VERSION, "shards": [e["path"] for e in shards], "sha256": [e["sha256"] for e in shards],
        "clip_ids": clip_ids}))
    os.replace(tmp, folder)
    # Indexes of earlier shard sets (before a resumed or extended build) are stale: remove them.
    # Processes still mapping them keep reading their open files (POSIX unlink semantics).
    for other in folder.parent.iterdir():
        if other.is_dir() and other != folder and (other / "meta.json").is_file():
            shutil.rmtree(other, ignore_errors=True)
