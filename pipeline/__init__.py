"""Orchestration, config and CLI of the data platform; also its Python API (pipeline/api.py):

    import pipeline as portrait
    build = portrait.curate(["media/"], out="out/")   # or portrait.open("out/")

Names are loaded on first use, so ``portrait`` (the CLI) does not import torch to start.
"""
from __future__ import annotations

_API = ("curate", "open", "Build", "FrameDataset")
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
