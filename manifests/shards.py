"""Parquet shards: announced, written atomically, checksummed, checked against the catalog.

Writing a shard takes three steps, so that an interrupted build leaves nothing ambiguous:

1. a *pending marker* ``shards/<shard_id>.pending.json`` is written first: it says "the build
   is writing this shard and has not committed it yet" (run id, sources);
2. the shard is written under a temporary name, flushed to disk, and renamed;
3. after the catalog commit that names the shard, the marker is removed (:func:`settle`).

The same protocol holds on object stores (``manifests.storage``), with one difference: an
upload appears whole when it completes, so the shard is written locally to a temporary file
(hashed there) and uploaded under its final name; there is no rename.

Cleanup (:func:`clean_uncommitted`) removes only files a marker announces and the catalog does
not name: a file the build did not write (a user's notes, a shard copied from elsewhere) is
never deleted, only reported. :func:`check_shard` compares a shard on disk with its catalog row.

Integrity without reading whole files: besides the sha256 of the whole file, the catalog
records the sha256 of the shard's *footer* (the Parquet FileMetaData plus its 8-byte tail:
schema, row groups, row counts, page offsets). Every reader reads the footer anyway, so
comparing it costs one hash of a few kilobytes: a shard whose footer differs from the one
written (a flipped byte there, a truncated or replaced file) is never read for data, and a
flipped byte inside the pages is found by the full hash (`portrait verify`), which records
when each shard last matched (``shards.verified_at``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import PortraitError
from .storage import Location, fsync_dir, resolve

SHARD_DIR = "shards"
PARTIAL_SUFFIX = ".partial"
PENDING_SUFFIX = ".pending.json"
MARKER_FORMAT = "portrait-pending-shard/1"
# A build's shard ids are "<run id>-<unit>-<6 hex>" (written by workers, pipeline/writer.py; older
# builds: "<run id>-<sequence>"), run ids "<UTC time>-<6 hex>" (pipeline/build.py): a marker
# with such a name is the build's even if a crash truncated its content.
_SHARD_ID = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{6}-[0-9]{5,}(-[0-9a-f]{6})?$")


@dataclass(frozen=True)
class ShardInfo:
    shard_id: str
    path: str  # relative to the output folder
    rows: int
    bytes: int
    sha256: str
    source_ids: tuple[str, ...] = ()  # the sources whose frames it holds (all of each)
    footer_sha256: str = ""  # sha256 of the Parquet footer and its 8-byte tail (footer_digest)


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


def sha256_at(out: Location, rel: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with out.fs.open_input_stream(out.path(rel)) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# Parquet files end with the footer, its length (4 bytes, little-endian) and the magic b"PAR1".
_TAIL = 8
_MAGIC = b"PAR1"
_FOOTER_GUESS = 64 << 10  # one read of the file's end holds most footers (else a second read)


class FooterError(PortraitError, ValueError):
    """The end of a file is not a Parquet footer."""


def footer_digest(f, size: int) -> str:
    """sha256 of a Parquet file's footer and tail, from an open random-access file of ``size``
    bytes (a local file or a pyarrow one): one read of the end of the file, rarely two."""
    if size < 2 * _TAIL:
        raise FooterError(f"{size} bytes: too short for a Parquet file")
    guess = min(size, _FOOTER_GUESS)
    f.seek(size - guess)
    end = f.read(guess)
    if end[-4:] != _MAGIC:
        raise FooterError("no Parquet magic at the end of the file")
    need = int.from_bytes(end[-_TAIL:-4], "little") + _TAIL
    if need > size - 4:
        raise FooterError(f"footer length {need - _TAIL} exceeds the file")
    if need > guess:
        f.seek(size - need)
        end = f.read(need)
    return hashlib.sha256(end[-need:]).hexdigest()


def _marker(shard_id: str) -> str:
    return f"{SHARD_DIR}/{shard_id}{PENDING_SUFFIX}"


def write_shard(
    table: pa.Table,
    out_dir: str | Path | Location,
    shard_id: str,
    row_group_rows: int = 1024,
    compression: str = "zstd",
    run_id: str = "",
    source_ids: tuple[str, ...] = (),
) -> ShardInfo:
    """Announce, write, flush and rename (or upload) one shard. On an error (a full disk)
    nothing under the final name exists and the partial file is removed; the marker stays for
    the next cleanup."""
    out = resolve(out_dir)
    rel = f"{SHARD_DIR}/{shard_id}.parquet"
    out.makedirs(SHARD_DIR)
    if out.exists(rel):
        raise FileExistsError(f"shard {out.url(rel)} exists already: shard ids must be unique")
    out.write_bytes(_marker(shard_id), json.dumps({"format": MARKER_FORMAT, "shard_id": shard_id, "run_id": run_id,
                                                   "source_ids": list(source_ids)}).encode())
    if out.is_local:
        partial = out.path(rel) + PARTIAL_SUFFIX
    else:
        fd, partial = tempfile.mkstemp(prefix=f"{shard_id}-", suffix=".parquet")
        os.close(fd)
    try:
        pq.write_table(
            table,
            partial,
            row_group_size=row_group_rows,
            compression=None if compression == "none" else compression,
            # JPEG and float16 payloads do not compress as dictionaries; keep ids dictionary-encoded.
            use_dictionary=["clip_id", "source_id", "view_params"],
            write_statistics=["clip_id", "source_id", "frame_index", "timestamp_s"],
            # A CRC32 per page: a byte flipped inside a page of a shard verified earlier is
            # refused where it is read (the trainer verifies them), not returned as data.
            write_page_checksum=True,
        )
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        size, digest = os.path.getsize(partial), sha256_of(Path(partial))
        with open(partial, "rb") as f:
            footer = footer_digest(f, size)
        if out.is_local:
            os.replace(partial, out.path(rel))
            fsync_dir(out.path(SHARD_DIR))
        else:
            out.upload(partial, rel)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    finally:
        if not out.is_local:
            Path(partial).unlink(missing_ok=True)
    return ShardInfo(shard_id=shard_id, path=rel, rows=table.num_rows, bytes=size, sha256=digest,
                     source_ids=tuple(source_ids), footer_sha256=footer)


def settle(out_dir: str | Path | Location, shard_id: str) -> None:
    """The shard is committed: it is no longer pending."""
    resolve(out_dir).delete(_marker(shard_id))


def _is_build_file(name: str) -> bool:
    return name.endswith((".parquet", PARTIAL_SUFFIX, PENDING_SUFFIX))


def build_files(out_dir: str | Path | Location) -> list[str]:
    """Shard files, partial files and markers in OUT/shards (what a build writes there)."""
    out = resolve(out_dir)
    return sorted(rel.split("/", 1)[1] for rel in out.files(SHARD_DIR)
                  if "/" in rel and _is_build_file(rel))


def clean_uncommitted(out_dir: str | Path | Location, committed: set[str], run_id: str | None = None,
                      listed: dict[str, int] | None = None) -> Cleanup:
    """Remove what an interrupted build left: the files a pending marker announces that the
    catalog does not name (``committed``: paths relative to OUT). Everything else stays.
    ``run_id``: only that run's markers (a build cleaning up after its own retried work).
    ``listed``: the caller's listing of OUT/shards (``Location.files``)."""
    out = resolve(out_dir)
    result = Cleanup()
    listed = out.files(SHARD_DIR) if listed is None else listed
    if not listed:
        return result
    names = {rel[len(SHARD_DIR) + 1:] for rel in listed}
    owned: set[str] = set()
    for name in sorted(n for n in names if n.endswith(PENDING_SUFFIX)):
        shard_id = name[: -len(PENDING_SUFFIX)]
        marker = f"{SHARD_DIR}/{name}"
        if run_id is not None and not shard_id.startswith(run_id + "-"):
            owned.add(name)
            continue
        if not (_SHARD_ID.match(shard_id) or _is_marker(out, marker, shard_id)):
            continue
        owned.add(name)
        for f in (f"{shard_id}.parquet", f"{shard_id}.parquet{PARTIAL_SUFFIX}"):
            owned.add(f)
            rel = f"{SHARD_DIR}/{f}"
            if rel not in committed and f in names:
                out.delete(rel)
                result.removed.append(rel)
        out.delete(marker)  # committed (the crash came before settle) or now cleaned
    if run_id is not None:
        return result
    for name in sorted(names):
        rel = f"{SHARD_DIR}/{name}"
        if name not in owned and rel not in committed:
            result.foreign.append(rel)
    return result


def remove_build_shard(out_dir: str | Path | Location, rel: str) -> bool:
    """Remove a committed shard that is missing or damaged, only if its name is one a build
    gives (``shards/<run id>-<unit>-<hex>.parquet``): a file a user put there under a name the
    catalog happens to hold is left alone. Returns whether it was removed (or was gone)."""
    folder, _, name = rel.rpartition("/")
    if folder != SHARD_DIR or not name.endswith(".parquet") or not _SHARD_ID.match(name[: -len(".parquet")]):
        return False
    resolve(out_dir).delete(rel)
    return True


def _is_marker(out: Location, marker: str, shard_id: str) -> bool:
    try:
        d = json.loads(out.read_bytes(marker))
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and d.get("format") == MARKER_FORMAT and d.get("shard_id") == shard_id


CHECKS = ("size", "footer", "sha256")  # each costs more than the one before


def check_shard(out_dir: str | Path | Location, row: dict, upto: str = "sha256", size: int | None = -1) -> str | None:
    """What is wrong with a committed shard (``row`` from the catalog's ``shards``), or None.

    Checks in order, stopping after ``upto``: the size (a stat; or ``size`` when the caller
    listed the folder already, None for a file not listed); the footer (its sha256 against the
    recorded one, or, for shards committed before footers were recorded, its row count); the
    sha256 of the whole file (a flipped byte inside a page changes only that)."""
    depth = CHECKS.index(upto)
    out = resolve(out_dir)
    rel = row["path"]
    if size == -1:
        try:
            info = out.info(rel)
        except OSError as e:
            return f"unreadable ({getattr(e, 'strerror', None) or e})"
        size = info.size if info.type != pafs.FileType.NotFound else None
    if size is None:
        return "missing"
    if size != row["bytes"]:
        return f"size {size} bytes, the catalog says {row['bytes']}"
    if depth < 1:
        return None
    if problem := _footer_problem(out, rel, row, size):
        return problem
    if depth < 2:
        return None
    try:
        digest = sha256_at(out, rel)
    except OSError as e:
        return f"unreadable ({getattr(e, 'strerror', None) or e})"
    if digest != row["sha256"]:
        return "sha256 differs from the catalog's (the file changed after it was written)"
    return None


def check_shards(out_dir: str | Path | Location, rows: list[dict], upto: str = "footer",
                 sizes: dict[str, int] | None = None, threads: int = 16) -> dict[str, str]:
    """``check_shard`` over many shards, ``threads`` at a time (each check waits on the disk or
    the network, not the CPU): path -> what is wrong, for the bad ones. ``sizes``: a listing of
    OUT (relative path -> size) instead of a stat per shard."""
    from concurrent.futures import ThreadPoolExecutor

    out = resolve(out_dir)

    def one(row: dict) -> str | None:
        size = -1 if sizes is None else sizes.get(row["path"])
        return check_shard(out, row, upto=upto, size=size)

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(rows)))) as pool:
        problems = list(pool.map(one, rows)) if rows else []
    return {r["path"]: p for r, p in zip(rows, problems) if p}


def _footer_problem(out: Location, rel: str, row: dict, size: int) -> str | None:
    want = row.get("footer_sha256")
    try:
        with out.open_input(rel) as f:
            if want:
                return None if footer_digest(f, size) == want else \
                    "footer differs from the one written (row counts and offsets cannot be trusted)"
            rows = pq.read_metadata(f).num_rows
    except FileNotFoundError:
        return "missing"
    except (OSError, FooterError, pa.ArrowException) as e:
        return f"unreadable footer ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    if rows != row["rows"]:
        return f"{rows} rows, the catalog says {row['rows']}"
    return None
