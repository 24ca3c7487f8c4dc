"""The Python API (`import pipeline as portrait`): the README's example runs as written, and the
frames it yields are the stored ones."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import pipeline as portrait
from manifests import tensors

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture()
def ray_cleanup():
    import ray

    started_before = ray.is_initialized()
    yield
    if not started_before and ray.is_initialized():  # the example's Ray Dataset started it
        ray.shutdown()


def test_readme_example_runs(media_dir, tmp_path, monkeypatch, capsys, ray_cleanup):
    (tmp_path / "media").mkdir()
    shutil.copy(media_dir / "images" / "s1.jpg", tmp_path / "media" / "s1.jpg")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "kept" in out  # the query printed the verdicts
    assert "torch.Size([2, 3, 64, 64])" in out
    assert "torch.Size([478, 2])" in out
    assert "(2, 478, 2)" in out
    assert (tmp_path / "out" / "catalog.duckdb").is_file()


def test_frames_are_the_stored_arrays(feature_build):
    build = portrait.open(feature_build / "catalog.duckdb")
    n = build.query("SELECT count(*) AS n FROM frames WHERE latent IS NOT NULL").to_pylist()[0]["n"]
    frames = list(build.frames(["latent", "pose"]))
    assert len(frames) == n > 0
    first = frames[0]
    assert tuple(first["latent"].shape) == (4, 64, 64) and str(first["latent"].dtype) == "torch.float16"
    stored = tensors.rows(build.query(
        "SELECT latent FROM frames WHERE clip_id = $c AND frame_index = $f AND view = $v",
        {"c": first["clip_id"], "f": first["frame_index"], "v": first["view"]}))[0]["latent"]
    assert np.array_equal(first["latent"].numpy(), stored)
    kept = build.clips("kept")
    assert set(kept.column("clip_id").to_pylist()) == {f["clip_id"] for f in frames}


def test_unknown_columns_and_missing_builds_are_clear(tmp_path, feature_build):
    with pytest.raises(ValueError, match="unknown array column"):
        next(portrait.open(feature_build).frames(["latents"]))
    from manifests.catalog import CatalogError

    with pytest.raises(CatalogError, match="no catalog"):
        portrait.open(tmp_path / "nothing")
