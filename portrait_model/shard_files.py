"""Open shards for training: a bounded pool of open files, integrity without rehashing.

Any location ``manifests.storage`` resolves (a local folder, ``s3://``, other ``pyarrow.fs``
URIs) is read through its pyarrow filesystem, so the same code reads local and remote builds.

Bounded: at most ``max_open`` shards are open in a process (least recently used closed first),
and never more than a quarter of the process's descriptor limit, so a run over thousands of
shards cannot fail hours in with "Too many open files". Re-opening a shard costs one read of its
end (the footer), which is also what checks it.

Integrity (see manifests/shards.py for the records): a shard is opened only when
- its size is the catalog's, and ``portrait verify`` has not recorded a ``problem`` for it;
- its footer (read anyway: row groups, offsets, schema) hashes to the recorded
  ``footer_sha256`` (older catalogs: its row count is the catalog's). Checked at every open;
- its whole-file sha256 matched once: the build that wrote it, or ``portrait verify``, recorded
  that (``verified_at``), or, where no record covers it, this node hashed it once and left a
  marker (``<index folder>/verified/``, keyed by path, sha256, size and modification time) that
  every later process on the node (or on every node, for an index on a shared OUT) trusts.
A byte flipped inside a data page of a shard verified earlier is not seen by these checks: pages
written with CRCs (``write_page_checksum``) are checked on every read (the pool turns
``page_checksum_verification`` on), and a page that fails to decode makes the pool hash the
whole shard once to tell corruption from other errors. Otherwise ``portrait verify`` finds it.
Every refusal is one line naming the shard and ``portrait verify``.
"""
from __future__ import annotations

import hashlib
import os
import resource
from collections import OrderedDict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from manifests import shards as shard_files
from manifests.shards import FooterError, footer_digest
from manifests.storage import Location

from . import PortraitModelError

# Most footers fit one read of this much of the file's end (a 256 MB shard in row groups of 32
# rows has a footer of about 90 KB), so opening a shard is one request on an object store.
TAIL_BYTES = 256 << 10


class ReaderError(PortraitModelError):
    """The build cannot be read for training as asked."""


class BadShard(ReaderError):
    """A shard that fails its checks (missing, resized, changed, corrupted)."""

    def __init__(self, code: int, rel: str, problem: str, out: str):
        self.code, self.rel, self.problem = code, rel, problem
        super().__init__(f"shard {rel} {problem}: run `portrait verify {out}` (and rebuild its sources)")


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def descriptor_budget(max_open: int) -> int:
    """``max_open``, but at most a quarter of this process's soft descriptor limit (the rest is
    for Python, torch, the index maps and sockets)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max(1, max_open)
    return max(1, min(max_open, soft // 4))


class _Tail:
    """A file's last ``TAIL_BYTES`` read once; ``footer_digest`` seeks and reads in it."""

    def __init__(self, f, size: int):
        self.start = max(0, size - TAIL_BYTES)
        f.seek(self.start)
        self.data = f.read(size - self.start)
        self.f, self.pos, self.extra = f, self.start, 0

    def seek(self, pos: int) -> None:
        self.pos = pos

    def read(self, n: int) -> bytes:
        if self.pos >= self.start:
            out = self.data[self.pos - self.start : self.pos - self.start + n]
        else:  # a footer larger than the tail read: one more read
            self.f.seek(self.pos)
            out = self.f.read(n)
            self.extra += len(out)
        self.pos += len(out)
        self.last = out
        return out


class ShardPool:
    """Open shards of one build, ``max_open`` at most. ``rows``: the catalog's shard rows
    (path, rows, bytes, sha256, footer_sha256, verified_at, problem)."""

    def __init__(self, loc: Location, rows: list[dict], marker_dir: Path | None, max_open: int = 32):
        self.loc, self.rows, self.marker_dir = loc, rows, marker_dir
        self.max_open = descriptor_budget(max_open)
        self._open: OrderedDict[int, pq.ParquetFile] = OrderedDict()
        self._checked: set[int] = set()  # whole-file integrity established in this process
        self._bad: dict[int, BadShard] = {}
        self._pid = os.getpid()
        # What this process asked the storage for (footers and column chunks), for the bench.
        self.bytes_read = 0
        self.opens = 0
        self.full_hashes = 0

    # ---- opening ---------------------------------------------------------------------------
    def _fresh(self) -> None:
        """A forked DataLoader worker must not share open files (and their offsets) with its
        parent: it opens its own."""
        if os.getpid() != self._pid:
            self._open.clear()  # the parent's objects: dropped, not closed (the parent uses them)
            self._pid = os.getpid()
            self.bytes_read = self.opens = self.full_hashes = 0

    def file(self, code: int) -> pq.ParquetFile:
        self._fresh()
        if code in self._bad:
            raise self._bad[code]
        pf = self._open.get(code)
        if pf is not None:
            self._open.move_to_end(code)
            return pf
        try:
            pf = self.open_checked(code)
        except BadShard as e:
            self._bad[code] = e
            raise
        while len(self._open) >= self.max_open:
            _, old = self._open.popitem(last=False)
            old.close()
        self._open[code] = pf
        return pf

    def bad(self, code: int, problem: str) -> BadShard:
        e = BadShard(code, self.rows[code]["path"], problem, self.loc.uri)
        self._bad[code] = e
        old = self._open.pop(code, None)
        if old is not None:
            old.close()
        return e

    def open_checked(self, code: int) -> pq.ParquetFile:
        row = self.rows[code]
        rel = row["path"]
        if row.get("problem"):
            raise self.bad(code, f"was found bad by `portrait verify` ({row['problem']})")
        try:
            f = self.loc.open_input(rel)
        except FileNotFoundError:
            raise self.bad(code, f"named by the catalog is missing under {self.loc.uri}") from None
        except OSError as e:
            raise ReaderError(f"cannot open shard {self.loc.url(rel)}: {first_line(e)}") from None
        try:
            size = f.size()
            if size != row["bytes"]:
                raise self.bad(code, f"is {size} bytes, the catalog says {row['bytes']} (changed after it was written)")
            tail = _Tail(f, size)
            self.opens += 1
            try:
                digest = footer_digest(tail, size)
            except FooterError as e:
                raise self.bad(code, f"is corrupted (its end is not a Parquet footer: {first_line(e)})") from None
            self.bytes_read += len(tail.data) + tail.extra
            if row.get("footer_sha256") and digest != row["footer_sha256"]:
                raise self.bad(code, "is corrupted (its footer differs from the one written)")
            try:
                need = int.from_bytes(tail.data[-8:-4], "little") + 8
                metadata = pq.read_metadata(pa.BufferReader(tail.last[-need:]))
            except (pa.ArrowException, OSError) as e:
                raise self.bad(code, f"has an unreadable footer ({first_line(e)})") from None
            if not row.get("footer_sha256") and metadata.num_rows != row["rows"]:
                raise self.bad(code, f"holds {metadata.num_rows} rows, the catalog says {row['rows']}")
            if code not in self._checked:
                if not (row.get("footer_sha256") and row.get("verified_at")):
                    self._hash_once(code)
                self._checked.add(code)
            # Object stores: the two columns of a row group are adjacent, fetched as one range.
            return pq.ParquetFile(f, metadata=metadata, page_checksum_verification=True,
                                  pre_buffer=not self.loc.is_local)
        except BaseException:
            f.close()
            raise

    def _marker(self, code: int) -> Path | None:
        if self.marker_dir is None:
            return None
        row = self.rows[code]
        info = self.loc.info(row["path"])
        mtime = info.mtime_ns if info.mtime_ns is not None else ""
        key = hashlib.sha256(f"{row['path']}\0{row['sha256']}\0{info.size}\0{mtime}".encode()).hexdigest()[:32]
        return self.marker_dir / key

    def _hash_once(self, code: int) -> None:
        """The whole-file sha256, once per shard per node (a marker records a match)."""
        marker = self._marker(code)
        if marker is not None and marker.is_file():
            return
        row = self.rows[code]
        got = self.full_hash(code)
        if got != row["sha256"]:
            raise self.bad(code, f"is corrupted (sha256 {got[:12]}... "
                                 f"but the catalog recorded {row['sha256'][:12]}...)")
        if marker is not None:
            try:
                marker.parent.mkdir(parents=True, exist_ok=True)
                tmp = marker.with_name(f"{marker.name}.{os.getpid()}.partial")
                tmp.write_text(row["path"] + "\n")
                os.replace(tmp, marker)
            except OSError:
                pass  # a read-only cache: the next process hashes again, nothing worse

    def full_hash(self, code: int) -> str:
        self.full_hashes += 1
        try:
            return shard_files.sha256_at(self.loc, self.rows[code]["path"])
        except FileNotFoundError:
            raise self.bad(code, f"named by the catalog is missing under {self.loc.uri}") from None
        except OSError as e:
            raise ReaderError(f"cannot read shard {self.loc.url(self.rows[code]['path'])}: {first_line(e)}") from None

    # ---- reading ---------------------------------------------------------------------------
    def read_row_group(self, code: int, rg: int, columns: list[str]) -> pa.Table:
        pf = self.file(code)
        try:
            table = pf.read_row_group(rg, columns=columns)
        except (OSError, pa.ArrowException) as e:
            raise self._read_failure(code, e) from None
        meta = pf.metadata.row_group(rg)
        self.bytes_read += sum(meta.column(i).total_compressed_size for i in range(meta.num_columns)
                               if meta.column(i).path_in_schema.split(".", 1)[0] in columns)
        return table

    def _read_failure(self, code: int, e: BaseException) -> ReaderError:
        text = first_line(e)
        if "CRC" in text or "checksum" in text.lower():
            return self.bad(code, f"is corrupted (a page fails its checksum: {text})")
        # A page that does not decode: corruption, or a storage error? The whole file's hash says.
        row = self.rows[code]
        if self.full_hash(code) != row["sha256"]:
            return self.bad(code, "is corrupted (sha256 differs from the catalog's)")
        return ReaderError(f"cannot read shard {self.loc.url(row['path'])}: {text}")

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()

    def __len__(self) -> int:
        self._fresh()
        return len(self._open)
