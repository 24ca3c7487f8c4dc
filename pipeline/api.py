"""The Python API: build, open a build, query it, and read its frames as PyTorch tensors, a Ray
Dataset or a Hugging Face dataset, in a few lines (``import pipeline as portrait``).

    build = portrait.curate(["media/"], out="out/")         # or portrait.open("out/")
    build.query("SELECT verdict, count(*) FROM clips GROUP BY ALL")
    for frame in build.frames(["latent", "position_map"]): ...   # dicts of torch tensors

(``curate``, not ``build``: ``pipeline.build`` is the module that runs builds.)
Everything here goes through the same code as the CLI (pipeline.build, manifests.catalog); the
readers need nothing of ours but the shard list: the shards are plain Parquet with nested
fixed_size_list arrays (manifests/schemas.py).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from manifests import tensors
from manifests.catalog import Catalog
from manifests.schemas import ARRAYS

# Per-frame columns a reader usually wants; "jpeg" (the crop) is left out unless asked for.
FRAME_KEYS = ["clip_id", "source_id", "frame_index", "view", "timestamp_s"]
DEFAULT_ARRAYS = ["latent", "position_map", "landmarks", "pose"]


def curate(inputs: str | Path | Iterable[str | Path] = (), out: str | Path = "out", *,
          datasets: dict[str, str | Path] | None = None, config: str | Path | dict | None = None,
          progress: bool = False, retry_errors: bool = False) -> Build:
    """Build (or resume building) ``out`` from plain folders ``inputs`` and/or ``datasets``
    ({name: root} in their official layouts). ``config``: a YAML path, or a dict of dotted
    overrides as ``--set`` takes them ({"sampling.fps": 10}). Returns the opened build."""
    from .build import build as run_build
    from .config import load_config
    from .sources import dataset_entries, discover

    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    path, overrides = (config, {}) if isinstance(config, (str, Path)) else (None, dict(config or {}))
    cfg = load_config(path, overrides)
    entries = dataset_entries(cfg, [str(p) for p in inputs], [f"{k}={v}" for k, v in (datasets or {}).items()])
    run_build(cfg, out, discover(entries, progress=progress), progress=progress, retry_errors=retry_errors)
    return Build(out)


def open(out: str | Path) -> Build:  # noqa: A001 - portrait.open(OUT) reads as intended
    """An existing build folder (``OUT`` or ``OUT/catalog.duckdb``)."""
    p = Path(out)
    return Build(p.parent if p.suffix == ".duckdb" else p)


class Build:
    """A build folder: its catalog (DuckDB) and shards (Parquet)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        with self._catalog():
            pass  # fail now, in one line, if there is no readable catalog

    def _catalog(self) -> Catalog:
        return Catalog(self.out, read_only=True)

    def __repr__(self) -> str:
        return f"portrait.Build({str(self.out)!r})"

    # ---- the catalog ----------------------------------------------------------------------
    def query(self, sql: str, params: list | dict | None = None) -> pa.Table:
        """SQL over sources, clips, frames, runs, shards, errors (a pyarrow Table; ``.to_pandas()``)."""
        with self._catalog() as cat:
            return cat.query(sql, params)

    def named(self, name: str, **params: float) -> pa.Table:
        """A named query (manifests/sql), e.g. ``named("rethreshold", max_occluded_share=0.5)``."""
        with self._catalog() as cat:
            return cat.named(name, params)

    def clips(self, verdict: str | None = "kept") -> pa.Table:
        where = "" if verdict is None else " WHERE verdict = $verdict"
        return self.query("SELECT * EXCLUDE (thumbnails) FROM clips" + where + " ORDER BY clip_id",
                          None if verdict is None else {"verdict": verdict})

    @property
    def shard_paths(self) -> list[str]:
        """Absolute paths of the committed, readable shards."""
        with self._catalog() as cat:
            return [str(self.out / p) for p in cat.shard_paths()]

    # ---- frames -----------------------------------------------------------------------------
    def frames(self, arrays: list[str] | None = None, *, jpeg: bool = False, require: bool = True,
               shards: list[str] | None = None) -> Iterator[dict]:
        """Every stored frame as a dict: ids, and each of ``arrays`` as a torch tensor (its
        stored dtype and shape). ``require``: skip frames missing one of them (e.g. no
        latents without a VAE), so a DataLoader's default collate always works."""
        import torch

        arrays = DEFAULT_ARRAYS if arrays is None else list(arrays)
        unknown = sorted(set(arrays) - set(ARRAYS))
        if unknown:
            raise ValueError(f"unknown array column(s) {unknown}; known: {sorted(ARRAYS)}")
        columns = FRAME_KEYS + arrays + (["jpeg"] if jpeg else [])
        for path in self.shard_paths if shards is None else shards:
            for batch in pq.ParquetFile(path).iter_batches(columns=columns, batch_size=256):
                table = pa.Table.from_batches([batch])
                values = {a: tensors.to_numpy(table.column(a)) for a in arrays}
                for i, row in enumerate(table.select(FRAME_KEYS + (["jpeg"] if jpeg else [])).to_pylist()):
                    got = {a: values[a][i] for a in arrays}
                    if require and any(v is None for v in got.values()):
                        continue
                    row.update({a: None if v is None else torch.from_numpy(v.copy()) for a, v in got.items()})
                    yield row

    def torch_dataset(self, arrays: list[str] | None = None, **kwargs) -> FrameDataset:
        """A torch IterableDataset of :meth:`frames` (shards dealt to DataLoader workers)."""
        return FrameDataset(self, arrays, kwargs)

    def ray_dataset(self, arrays: list[str] | None = None):
        """A Ray Dataset over the shards whose array columns are NumPy tensors (N, *shape)."""
        import ray.data

        arrays = DEFAULT_ARRAYS if arrays is None else list(arrays)
        ds = ray.data.read_parquet(self.shard_paths).select_columns(FRAME_KEYS + arrays)

        def to_tensors(batch: pa.Table) -> dict:
            out = {k: batch.column(k).to_numpy(zero_copy_only=False) for k in FRAME_KEYS}
            out.update({a: tensors.stack(batch.column(a)) for a in arrays})
            return out

        return ds.map_batches(to_tensors, batch_format="pyarrow")

    def hf_dataset(self, arrays: list[str] | None = None, cache_dir: str | None = None):
        """A Hugging Face ``datasets.Dataset`` of the shards, formatted as torch tensors."""
        import datasets

        arrays = DEFAULT_ARRAYS if arrays is None else list(arrays)
        ds = datasets.load_dataset("parquet", data_files=self.shard_paths, split="train", cache_dir=cache_dir)
        return ds.select_columns(FRAME_KEYS + arrays).with_format("torch", columns=arrays, output_all_columns=True)


def _frame_dataset_base():
    from torch.utils.data import IterableDataset

    return IterableDataset


class FrameDataset(_frame_dataset_base()):
    """:meth:`Build.frames` for a DataLoader: each worker reads its own shards."""

    def __init__(self, build: Build, arrays: list[str] | None, kwargs: dict):
        self.build, self.arrays, self.kwargs = build, arrays, kwargs
        self.shards = build.shard_paths

    def __iter__(self):
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        mine = self.shards if info is None else self.shards[info.id :: info.num_workers]
        return self.build.frames(self.arrays, shards=mine, **self.kwargs)
