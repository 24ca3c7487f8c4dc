"""Parquet shards: written atomically, checksummed, read back by path.

A shard is written under a temporary name in the same folder, flushed to disk, then renamed:
no partial file is ever visible under its final name. Only shards recorded in the catalog's
``shards`` table are part of the dataset; anything else in the folder is debris of an
interrupted build and is removed by :func:`remove_orphans`.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHARD_DIR = "shards"
PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class ShardInfo:
    shard_id: str
    path: str  # relative to the output folder
    rows: int
    bytes: int
    sha256: str


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_shard(
    table: pa.Table,
    out_dir: str | Path,
    shard_id: str,
    row_group_rows: int = 1024,
    compression: str = "zstd",
) -> ShardInfo:
    out_dir = Path(out_dir)
    folder = out_dir / SHARD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{shard_id}.parquet"
    partial = folder / f"{shard_id}.parquet{PARTIAL_SUFFIX}"
    if final.exists():
        raise FileExistsError(f"shard {final} exists already: shard ids must be unique")
    pq.write_table(
        table,
        partial,
        row_group_size=row_group_rows,
        compression=None if compression == "none" else compression,
        # JPEG and float16 payloads do not compress as dictionaries; keep ids dictionary-encoded.
        use_dictionary=["clip_id", "source_id", "view_params"],
        write_statistics=["clip_id", "source_id", "frame_index", "timestamp_s"],
    )
    with open(partial, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(partial, final)
    return ShardInfo(
        shard_id=shard_id,
        path=final.relative_to(out_dir).as_posix(),
        rows=table.num_rows,
        bytes=final.stat().st_size,
        sha256=sha256_of(final),
    )


def remove_orphans(out_dir: str | Path, known_paths: set[str]) -> list[str]:
    """Delete shard files (and partial files) that no committed catalog row names."""
    folder = Path(out_dir) / SHARD_DIR
    removed = []
    if not folder.is_dir():
        return removed
    for f in sorted(folder.iterdir()):
        rel = f.relative_to(out_dir).as_posix()
        if f.is_file() and rel not in known_paths:
            f.unlink()
            removed.append(rel)
    return removed
