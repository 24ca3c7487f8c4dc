"""Parquet shards: announced, written atomically, checksummed, checked against the catalog.

Writing a shard takes three steps, so that an interrupted build leaves nothing ambiguous:

1. a *pending marker* ``shards/<shard_id>.pending.json`` is written first: it says "the build
   is writing this shard and has not committed it yet" (run id, sources);
2. the shard is written under a temporary name, flushed to disk, and renamed;
3. after the catalog commit that names the shard, the marker is removed (:func:`settle`).

Cleanup (:func:`clean_uncommitted`) removes only files a marker announces and the catalog does
not name: a file the build did not write (a user's notes, a shard copied from elsewhere) is
never deleted, only reported. :func:`check_shard` compares a shard on disk with its catalog row
(size, row count, sha256).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHARD_DIR = "shards"
PARTIAL_SUFFIX = ".partial"
PENDING_SUFFIX = ".pending.json"
MARKER_FORMAT = "portrait-pending-shard/1"
# A build's shard ids are "<run id>-<sequence>", run ids "<UTC time>-<6 hex>" (pipeline/build.py):
# a marker with such a name is the build's even if a crash truncated its content.
_SHARD_ID = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{6}-[0-9]{5}$")


@dataclass(frozen=True)
class ShardInfo:
    shard_id: str
    path: str  # relative to the output folder
    rows: int
    bytes: int
    sha256: str
    source_ids: tuple[str, ...] = ()  # the sources whose frames it holds (all of each)


@dataclass
class Cleanup:
    removed: list[str] = field(default_factory=list)  # uncommitted files of an interrupted build
    foreign: list[str] = field(default_factory=list)  # files the build did not write: left alone


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _marker(folder: Path, shard_id: str) -> Path:
    return folder / f"{shard_id}{PENDING_SUFFIX}"


def _fsync_dir(folder: Path) -> None:
    """A rename is durable only once its folder is flushed."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_shard(
    table: pa.Table,
    out_dir: str | Path,
    shard_id: str,
    row_group_rows: int = 1024,
    compression: str = "zstd",
    run_id: str = "",
    source_ids: tuple[str, ...] = (),
) -> ShardInfo:
    """Announce, write, flush and rename one shard. On an error (a full disk) nothing under the
    final name exists and the partial file is removed; the marker stays for the next cleanup."""
    out_dir = Path(out_dir)
    folder = out_dir / SHARD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{shard_id}.parquet"
    partial = folder / f"{shard_id}.parquet{PARTIAL_SUFFIX}"
    if final.exists():
        raise FileExistsError(f"shard {final} exists already: shard ids must be unique")
    marker = _marker(folder, shard_id)
    marker.write_text(json.dumps({"format": MARKER_FORMAT, "shard_id": shard_id, "run_id": run_id,
                                  "source_ids": list(source_ids)}))
    try:
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
        _fsync_dir(folder)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return ShardInfo(
        shard_id=shard_id,
        path=final.relative_to(out_dir).as_posix(),
        rows=table.num_rows,
        bytes=final.stat().st_size,
        sha256=sha256_of(final),
        source_ids=tuple(source_ids),
    )


def settle(out_dir: str | Path, shard_id: str) -> None:
    """The shard is committed: it is no longer pending."""
    _marker(Path(out_dir) / SHARD_DIR, shard_id).unlink(missing_ok=True)


def build_files(out_dir: str | Path) -> list[str]:
    """Shard files, partial files and markers in OUT/shards (what a build writes there)."""
    folder = Path(out_dir) / SHARD_DIR
    if not folder.is_dir():
        return []
    return sorted(f.name for f in folder.iterdir()
                  if f.name.endswith((".parquet", PARTIAL_SUFFIX, PENDING_SUFFIX)))


def clean_uncommitted(out_dir: str | Path, committed: set[str]) -> Cleanup:
    """Remove what an interrupted build left: the files a pending marker announces that the
    catalog does not name (``committed``: paths relative to OUT). Everything else stays."""
    out_dir = Path(out_dir)
    folder = out_dir / SHARD_DIR
    result = Cleanup()
    if not folder.is_dir():
        return result
    owned: set[str] = set()
    for marker in sorted(folder.glob(f"*{PENDING_SUFFIX}")):
        shard_id = marker.name[: -len(PENDING_SUFFIX)]
        if not marker.is_file() or not (_SHARD_ID.match(shard_id) or _is_marker(marker, shard_id)):
            continue
        owned.add(marker.name)
        for f in (folder / f"{shard_id}.parquet", folder / f"{shard_id}.parquet{PARTIAL_SUFFIX}"):
            owned.add(f.name)
            rel = f.relative_to(out_dir).as_posix()
            if rel not in committed and f.is_file():
                f.unlink()
                result.removed.append(rel)
        marker.unlink()  # committed (the crash came before settle) or now cleaned
    for f in sorted(folder.iterdir()):
        rel = f.relative_to(out_dir).as_posix()
        if f.name not in owned and rel not in committed:
            result.foreign.append(rel)
    return result


def _is_marker(path: Path, shard_id: str) -> bool:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and d.get("format") == MARKER_FORMAT and d.get("shard_id") == shard_id


CHECKS = ("size", "rows", "sha256")  # each costs more than the one before


def check_shard(out_dir: str | Path, row: dict, upto: str = "sha256") -> str | None:
    """What is wrong with a committed shard (``row`` from the catalog's ``shards``), or None.

    Checks in order, stopping after ``upto``: the size (a stat), the footer's row count, the
    sha256 of the whole file (a flipped byte inside a page changes only that)."""
    depth = CHECKS.index(upto)
    path = Path(out_dir) / row["path"]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if size != row["bytes"]:
        return f"size {size} bytes, the catalog says {row['bytes']}"
    if depth < 1:
        return None
    try:
        rows = pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowException) as e:
        return f"unreadable footer ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    if rows != row["rows"]:
        return f"{rows} rows, the catalog says {row['rows']}"
    if depth < 2:
        return None
    try:
        digest = sha256_of(path)
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if digest != row["sha256"]:
        return "sha256 differs from the catalog's (the file changed after it was written)"
    return None
