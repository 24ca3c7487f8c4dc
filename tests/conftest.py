"""Shared test fixtures: where the real fixture media live."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# One Ray auth mode for every Ray instance this test process starts or joins: Ray fixes the
# mode once per process, so an instance started after the variable changed (the CLI asks for
# token mode on a local instance; the test clusters run without tokens) fails to start. Tests
# that check what a user sees run the CLI in a subprocess without it.
os.environ["RAY_AUTH_MODE"] = "disabled"


def fixtures_root() -> Path:
    return Path(os.environ.get("PORTRAIT_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    root = fixtures_root()
    if not root.is_dir():
        pytest.skip(f"fixture folder {root} is absent (set PORTRAIT_FIXTURES)")
    return root


@pytest.fixture(scope="session")
def media_dir(fixtures_dir) -> Path:
    return fixtures_dir / "media"


@pytest.fixture(scope="session")
def small_vae_dir(tmp_path_factory) -> Path:
    from tests.small_models import save_small_vae

    return save_small_vae(tmp_path_factory.mktemp("vae") / "small_vae")


@pytest.fixture(scope="session")
def feature_build(media_dir, small_vae_dir, tmp_path_factory) -> Path:
    """A real build (local Ray, every feature, latents from a small VAE) of one fixture video
    and two photographs: the shards the trainer and the feature tests read."""
    import shutil

    from pipeline.build import build
    from pipeline.config import load_config
    from pipeline.sources import dataset_entries, discover

    root = tmp_path_factory.mktemp("feature_build")
    media = root / "media"
    media.mkdir()
    for name in ("videos/d0.mp4", "images/s1.jpg", "images/s12.jpg"):
        shutil.copy(media_dir / name, media / name.split("/")[1])
    config = load_config(None, {"features.latents.weights": str(small_vae_dir), "storage.shard_target_mb": 4})
    out = root / "out"
    build(config, out, discover(dataset_entries(config, [str(media)], [])), progress=False)
    return out
