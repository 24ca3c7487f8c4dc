"""Shared test fixtures: where the real fixture media live."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
