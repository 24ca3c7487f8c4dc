"""The shards read as ordinary Parquet: Hugging Face datasets, Ray Data, DuckDB and PyArrow get
correctly shaped arrays with no code of this project (nothing from manifests/ or pipeline/ is
imported to read them)."""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

# Shapes of the fixture build (default settings: 512 px crops, 64 px maps, SD1.5 latent layout).
SHAPES = {"latent": (4, 64, 64), "position_map": (3, 64, 64), "landmarks": (478, 2), "pose": (133, 3)}
DTYPES = {"latent": "float16", "position_map": "float16", "landmarks": "float32", "pose": "float32"}


def shard_files(out: Path) -> list[str]:
    files = sorted(str(p) for p in (out / "shards").glob("*.parquet"))
    assert files, f"no shards under {out}"
    return files


def flat_to_numpy(col) -> np.ndarray:
    """PyArrow only: a nested fixed_size_list column as (rows, *shape), zero-copy."""
    arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    shape = []
    while hasattr(arr.type, "list_size"):
        shape.append(arr.type.list_size)
        arr = arr.flatten()
    return arr.to_numpy(zero_copy_only=False).reshape((-1, *shape))


def test_parquet_metadata_records_the_contract(feature_build):
    for f in shard_files(feature_build):
        meta = pq.read_metadata(f).metadata
        assert meta[b"portrait.schema_version"] == b"3"
        arrays = json.loads(meta[b"portrait.arrays"])
        for name, shape in SHAPES.items():
            assert tuple(arrays[name]["shape"]) == shape and arrays[name]["dtype"] == DTYPES[name]
        assert arrays["latent"]["scaling_factor"] > 0  # what a decoder divides by
        table = pq.read_table(f, columns=list(SHAPES))
        for name, shape in SHAPES.items():
            a = flat_to_numpy(table.column(name))
            assert a.shape == (table.num_rows, *shape) and a.dtype == np.dtype(DTYPES[name])


def test_huggingface_datasets_gives_torch_tensors(feature_build, tmp_path):
    datasets = pytest.importorskip("datasets")
    import torch

    ds = datasets.load_dataset("parquet", data_files=shard_files(feature_build), split="train", cache_dir=str(tmp_path))
    n = ds.num_rows
    assert n > 0
    batch = ds.with_format("torch", columns=list(SHAPES) + ["view"])[:n]
    for name, shape in SHAPES.items():
        t = batch[name]
        assert isinstance(t, torch.Tensor) and tuple(t.shape) == (n, *shape), name
    assert torch.isfinite(batch["latent"]).all()
    # A plain DataLoader with its default collate (every row has every array, views included).
    loader = torch.utils.data.DataLoader(ds.with_format("torch", columns=["latent", "pose"]), batch_size=4)
    first = next(iter(loader))
    assert tuple(first["latent"].shape) == (min(4, n), *SHAPES["latent"])
    assert tuple(first["pose"].shape) == (min(4, n), *SHAPES["pose"])


@pytest.fixture()
def ray_session():
    import ray

    started = not ray.is_initialized()  # the session's builds may have one running already
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def test_ray_data_reads_the_shards(feature_build, ray_session):
    ds = ray_session.data.read_parquet(shard_files(feature_build), override_num_blocks=1)
    batch = ds.take_batch(8, batch_format="pyarrow")
    rows = batch.num_rows
    assert rows > 0
    for name, shape in SHAPES.items():
        a = flat_to_numpy(batch.column(name))
        assert a.shape == (rows, *shape) and a.dtype == np.dtype(DTYPES[name]), name


def test_duckdb_alone_sees_the_shapes(feature_build):
    files = shard_files(feature_build)
    con = duckdb.connect()
    row = con.execute(
        "SELECT len(latent), len(latent[1]), len(latent[1][1]), len(position_map), len(position_map[1]), "
        "len(landmarks), len(landmarks[1]), len(pose), len(pose[1]), typeof(latent) "
        "FROM read_parquet(?) LIMIT 1", [files]).fetchone()
    assert row[:9] == (4, 64, 64, 3, 64, 478, 2, 133, 3) and row[9] == "FLOAT[][][]"
    # Every stored frame has all four arrays, image views included.
    missing = con.execute("SELECT count(*) FROM read_parquet(?) WHERE latent IS NULL OR position_map IS NULL "
                          "OR landmarks IS NULL OR pose IS NULL", [files]).fetchone()[0]
    assert missing == 0
    kv = dict(con.execute("SELECT key::VARCHAR, value::VARCHAR FROM parquet_kv_metadata(?)", [files[0]]).fetchall())
    assert kv["portrait.schema_version"] == "3"
