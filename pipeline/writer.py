"""In the last operator's actors: the frames of finished sources become shards on OUT.

A *unit* is the work one actor call gets: consecutive sources (short videos and images alike)
whose frames together fill about one shard (pipeline/build.py: ``plan_units``), or one long
video, in one row, so that its end is the end of the call and no actor holds frames past it (a
Ray Data actor is never told that the stream ended). The writer takes each source's frames as
soon as they are done and packs them into shards, flushing when they reach
``storage.shard_target_mb`` and at the end of the unit, so shard count follows bytes, not the
number of files; a source's frames never span two shards (a long video's one shard may exceed
the target). It returns only small rows (sources, clips, errors, shard info): the driver
commits them and never sees a frame.

Shard ids are ``<run id>-<unit>-<6 hex>``: a unit retried by Ray after its worker died writes
new ids, and the dead attempt's files stay announced by their pending markers, which the
driver's cleanup removes.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

import pyarrow as pa

from manifests.shards import SHARD_DIR, ShardInfo, write_shard
from manifests.storage import resolve

_SORT = [("source_id", "ascending"), ("clip_id", "ascending"), ("frame_index", "ascending"), ("view", "ascending")]


@dataclass(frozen=True)
class WriterSettings:
    """What the last operator needs to write shards (travels to the actors)."""

    out: str  # OUT, a local path or a URI
    run_id: str
    shard_target_mb: float
    row_group_rows: int
    compression: str


class ShardWriter:
    """The frames of one unit's sources, packed into shards."""

    def __init__(self, settings: WriterSettings, unit: int):
        self.s = settings
        self.unit = unit
        self.out = resolve(settings.out)
        self.pending: list[tuple[str, pa.Table]] = []
        self.bytes = 0
        self.shards: list[ShardInfo] = []

    def add(self, source_id: str, frames: pa.Table) -> None:
        if frames.num_rows == 0:
            return
        self.pending.append((source_id, frames))
        self.bytes += frames.nbytes
        if self.bytes >= self.s.shard_target_mb * 1e6:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered as one shard. An OSError (a full disk, a refused upload)
        propagates: the caller reports it, and the marker stays for the next cleanup."""
        if not self.pending:
            return
        frames = pa.concat_tables([t for _, t in self.pending]).sort_by(_SORT)
        shard_id = f"{self.s.run_id}-{self.unit:05d}-{uuid.uuid4().hex[:6]}"
        self.shards.append(write_shard(frames, self.out, shard_id, self.s.row_group_rows, self.s.compression,
                                       run_id=self.s.run_id, source_ids=tuple(sid for sid, _ in self.pending)))
        self.pending, self.bytes = [], 0

    def finish(self) -> list[ShardInfo]:
        self.flush()
        return self.shards

    def failure(self, e: OSError) -> str:
        """The one line a failed write becomes (the build stops on it: a storage error)."""
        where = self.out.url(SHARD_DIR)
        return (f"cannot write a shard in {where}: {getattr(e, 'strerror', None) or str(e).splitlines()[0]}; "
                "free space (or fix the storage) and run the same command again to resume")

