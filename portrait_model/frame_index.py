"""The frame index of a build: where every stored frame lives, in memory-mapped NumPy arrays.

One row per stored frame, sorted by (clip, frame_index, view): shard, row group and row, 18
bytes a frame (45M frames: under 1 GB on disk, shared through the page cache by every rank and
dataloader worker instead of a Python dict per process); clip ids are one memory-mapped Arrow
string array. Built once per set of committed shards (the key hashes the catalog's shard paths
and sha256s), reading only the footers and three small columns of each shard, through the
storage layer (local folders and object stores alike), several shards at a time; one process
builds it under a file lock while the others wait.

Where it lives: ``OUT/index/<key>`` for a local OUT this process may write; otherwise (an
object store, a read-only OUT) ``$PORTRAIT_INDEX_DIR`` or ``~/.cache/portrait_model``, in a
folder of its own per build (``<hash of OUT's URI>/<key>``). Beside it, ``verified/`` holds the
markers of shards this node hashed in full (shard_files.py), and ``catalog-*`` the part of the
catalog the reader needs (shard rows, kept clips, runs), saved per published catalog (its size
and modification time) so that a remote catalog is downloaded once per node, not per process.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from manifests.catalog import Catalog, CatalogError
from manifests.storage import Location, StorageUnavailable, resolve

from .shard_files import BadShard, ReaderError, ShardPool, first_line

__all__ = ["Build", "FrameIndex", "ReaderError", "open_build", "open_index"]

INDEX_VERSION = 2
SHARD_COLUMNS = "path, rows, bytes, sha256, footer_sha256, verified_at, problem"
CLIP_COLUMNS = ["clip_id", "dataset", "split", "media_type", "reference_frame", "fps", "run_id", "dup_group"]
# In the snapshot folder's name: a snapshot written with other CLIP_COLUMNS is made again.
_SNAPSHOT_VERSION = 2
INDEX_THREADS = 16  # shards read at once while indexing: each waits on the disk or the network


@dataclass
class FrameIndex:
    """Every stored frame of a build, sorted by (clip, frame_index, view), in NumPy arrays."""

    shards: list[str]  # relative paths; ``shard`` codes index this list
    sha256: list[str]
    clip_ids: pa.StringArray  # sorted
    clip_start: np.ndarray  # (n_clips + 1,) int64: rows of clip k are [clip_start[k], clip_start[k+1])
    clip_v0: np.ndarray  # (n_clips,) int32: rows of clip k with view 0
    frame: np.ndarray  # (n_rows,) int32
    view: np.ndarray  # int16
    shard: np.ndarray  # int32
    row_group: np.ndarray  # int32
    row: np.ndarray  # int32, within the row group
    bad: dict[str, str]  # shards left out (built with skip_bad): path -> what is wrong

    ARRAYS = ("clip_start", "clip_v0", "frame", "view", "shard", "row_group", "row")


@dataclass
class Build:
    """What the reader needs of one published catalog, and the build's frame index."""

    loc: Location
    shards: list[dict]  # catalog rows (SHARD_COLUMNS), in the index's shard order
    clips: pa.Table  # kept clips (CLIP_COLUMNS), sorted by clip_id
    runs: dict[str, dict]  # run_id -> {"config_json", "models_json"}
    index: FrameIndex
    root: Path  # the folder holding the index, the markers and the catalog snapshots

    @property
    def marker_dir(self) -> Path:
        return self.root / "verified"


def _locate(out: str | os.PathLike | Location) -> Location:
    try:
        loc = resolve(out)
    except StorageUnavailable as e:
        raise ReaderError(f"cannot read the build at {out}: {e}") from None
    return loc


def _root(loc: Location) -> Path:
    override = os.environ.get("PORTRAIT_INDEX_DIR")
    if not override and loc.is_local and os.access(loc.root, os.W_OK):
        return loc.local_path / "index"
    base = Path(override) if override else Path.home() / ".cache" / "portrait_model" / "index"
    # A shared cache holds several builds: each its own folder, so that removing a stale index
    # of one build never touches another's.
    return base / hashlib.sha256(loc.uri.encode()).hexdigest()[:16]


class _Lock:
    """One process per node builds what is missing; the others wait, then read it."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / ".lock"

    def __enter__(self):
        self.f = open(self.path, "w")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self.f.close()


def _snapshot(loc: Location, root: Path) -> tuple[list[dict], pa.Table, dict]:
    """Shard rows, kept clips and runs of the published catalog; read from the catalog once
    per node and version of it (its size and modification time), then from the saved copy."""
    try:
        info = loc.info("catalog.duckdb")
    except OSError as e:
        raise ReaderError(f"cannot read the build at {loc.uri}: {first_line(e)}") from None
    if info.size is None or info.type.name != "File":
        raise ReaderError(f"cannot read the build at {loc.uri}: no catalog at {loc.url('catalog.duckdb')}")
    folder = root / f"catalog-v{_SNAPSHOT_VERSION}-{info.size}-{info.mtime_ns}"
    if not (folder / "done").is_file():
        with _Lock(root):
            if not (folder / "done").is_file():
                _save_snapshot(loc, folder)
    meta = json.loads((folder / "meta.json").read_text())
    with pa.memory_map(str(folder / "clips.arrow")) as source:
        clips = ipc.open_file(source).read_all()
    return meta["shards"], clips, meta["runs"]


def _save_snapshot(loc: Location, folder: Path) -> None:
    try:
        with Catalog(loc, read_only=True) as cat:
            shards = cat.shards(SHARD_COLUMNS)
            # A catalog older than clips.dup_group: every clip its own group.
            has_groups = cat.query("SELECT count(*) AS n FROM information_schema.columns "
                                   "WHERE table_name = 'clips' AND column_name = 'dup_group'").column(0)[0].as_py() > 0
            clips = cat.query(
                "SELECT clip_id, dataset, split, media_type, coalesce(reference_frames[1], 0) AS reference_frame, "
                f"fps, run_id, {'coalesce(dup_group, clip_id)' if has_groups else 'clip_id'} AS dup_group "
                "FROM clips WHERE verdict = 'kept' ORDER BY clip_id")
            runs = cat.query("SELECT run_id, config_json, models_json FROM runs").to_pylist()
    except CatalogError as e:
        raise ReaderError(f"cannot read the build at {loc.uri}: {e}") from None
    for s in shards:
        s["verified_at"] = s["verified_at"].isoformat() if s["verified_at"] is not None else None
    tmp = folder.with_name(folder.name + f".{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    clips = clips.cast(pa.schema([pa.field(n, t) for n, t in zip(CLIP_COLUMNS, [
        pa.string(), pa.string(), pa.string(), pa.string(), pa.int64(), pa.float64(), pa.string(), pa.string()])]))
    with ipc.new_file(str(tmp / "clips.arrow"), clips.schema) as w:
        w.write_table(clips)
    (tmp / "meta.json").write_text(json.dumps({"shards": shards, "runs": {r["run_id"]: r for r in runs}}))
    (tmp / "done").write_text("")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    # Snapshots of earlier catalogs are stale: only the newest is kept.
    for other in folder.parent.glob("catalog-*"):
        if other.is_dir() and other != folder and not other.name.endswith(".partial"):
            shutil.rmtree(other, ignore_errors=True)


def open_build(out: str | os.PathLike | Location, skip_bad: bool = False, max_open: int = 32) -> Build:
    """The build's catalog snapshot and frame index, memory-mapped; built first (once, under a
    file lock) if absent."""
    loc = _locate(out)
    root = _root(loc)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReaderError(f"cannot write the frame index under {root}: {first_line(e)} "
                          "(set PORTRAIT_INDEX_DIR to a writable folder)") from None
    shards, clips, runs = _snapshot(loc, root)
    listing = json.dumps([INDEX_VERSION, [[s["path"], s["sha256"]] for s in shards]])
    key = hashlib.sha256(listing.encode()).hexdigest()[:20]
    folder = root / key
    if not (folder / "meta.json").is_file():
        with _Lock(root):
            if not (folder / "meta.json").is_file():
                _build_index(loc, shards, folder, root / "verified", skip_bad, max_open)
    meta = json.loads((folder / "meta.json").read_text())
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in FrameIndex.ARRAYS}
    with pa.memory_map(str(folder / "clip_ids.arrow")) as source:
        clip_ids = ipc.open_file(source).read_all().column(0).combine_chunks()
    index = FrameIndex(meta["shards"], meta["sha256"], clip_ids, bad=meta.get("bad", {}), **arrays)
    if index.bad and not skip_bad:
        rel, problem = next(iter(index.bad.items()))
        raise ReaderError(f"shard {rel} {problem}: run `portrait verify {loc.uri}` (and rebuild its sources)")
    return Build(loc, shards, clips, runs, index, root)


def open_index(out: str | os.PathLike | Location) -> FrameIndex:
    return open_build(out).index


def _read_keys(pool: ShardPool, code: int):
    """(clip_id, frame_index, view, row group, row) of every row of one shard (opened, checked
    and closed here: each shard is read once while indexing, from several threads)."""
    pf = pool.open_checked(code)
    try:
        t = pf.read(columns=["clip_id", "frame_index", "view"])
    except (OSError, pa.ArrowException) as e:
        raise pool._read_failure(code, e) from None
    finally:
        pf.close()
    sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
    groups = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    rows = np.arange(t.num_rows, dtype=np.int32) - np.repeat(np.cumsum([0] + sizes[:-1]).astype(np.int32), sizes)
    return (t.column("clip_id").combine_chunks().cast(pa.string()), t.column("frame_index").to_numpy().astype(np.int32),
            t.column("view").to_numpy().astype(np.int16), groups, rows)


def _build_index(loc: Location, shards: list[dict], folder: Path, marker_dir: Path, skip_bad: bool,
                 max_open: int) -> None:
    pool = ShardPool(loc, shards, marker_dir, max_open=max_open)
    bad: dict[str, str] = {}

    def one(code: int):
        try:
            return _read_keys(pool, code)
        except BadShard as e:
            if not skip_bad:
                raise
            bad[e.rel] = e.problem
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(INDEX_THREADS, pool.max_open, len(shards)))) as threads:
        parts = list(threads.map(one, range(len(shards))))
    ids, frames, views, codes, groups, rows = [], [], [], [], [], []
    for code, part in enumerate(parts):
        if part is None:
            continue
        i, f, v, g, r = part
        ids.append(i)
        frames.append(f)
        views.append(v)
        codes.append(np.full(len(f), code, np.int32))
        groups.append(g)
        rows.append(r)
    all_ids = pa.chunked_array(ids, type=pa.string())
    clip_ids = pc.unique(all_ids).sort()
    clip_code = pc.index_in(all_ids, value_set=clip_ids).to_numpy(zero_copy_only=False)

    def cat(parts: list, dt) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, dt)

    frame, view = cat(frames, np.int32), cat(views, np.int16)
    order = np.lexsort((view, frame, clip_code))
    sorted_code = clip_code[order]
    starts = np.searchsorted(sorted_code, np.arange(len(clip_ids) + 1)).astype(np.int64)
    v0 = np.bincount(sorted_code[view[order] == 0], minlength=len(clip_ids)).astype(np.int32)
    tmp = folder.with_name(folder.name + f".{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays = dict(clip_start=starts, clip_v0=v0, frame=frame[order], view=view[order],
                  shard=cat(codes, np.int32)[order], row_group=cat(groups, np.int32)[order],
                  row=cat(rows, np.int32)[order])
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", arr)
    table = pa.table({"clip_id": clip_ids})
    with ipc.new_file(str(tmp / "clip_ids.arrow"), table.schema) as w:
        w.write_table(table)
    (tmp / "meta.json").write_text(json.dumps({
        "version": INDEX_VERSION, "shards": [e["path"] for e in shards], "sha256": [e["sha256"] for e in shards],
        "bad": bad}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    # Indexes of earlier shard sets (before a resumed or extended build) are stale: remove them.
    # Processes still mapping them keep reading their open files (POSIX unlink semantics).
    for other in folder.parent.iterdir():
        if other.is_dir() and other != folder and (other / "meta.json").is_file() and (other / "row.npy").exists():
            shutil.rmtree(other, ignore_errors=True)
