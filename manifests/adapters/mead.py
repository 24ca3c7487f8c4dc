"""MEAD: ``<actor>/video/<view>/<emotion>/level_<n>/<NNN>.mp4`` (actor ``M###`` or ``W###``).

Everything is in the path: identity = the actor; labels ``view`` (front, down, top, left_30,
left_60, right_30, right_60), ``emotion`` (8), ``level`` (1-3; neutral has level 1 only),
``gender`` (M/W prefix) and ``utterance``. A video elsewhere, or with a label outside these
sets, is an error naming the file. Whole files, split 'train'.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from .base import VIDEO_EXTENSIONS, MetadataError, SourceSpec
from .textfiles import EntryError, inside, walk_files

VIEWS = ("front", "down", "top", "left_30", "left_60", "right_30", "right_60")
EMOTIONS = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
_PATH = re.compile(r"^(?P<actor>[MW]\d{3})/video/(?P<view>[^/]+)/(?P<emotion>[^/]+)/level_(?P<level>\d+)/(?P<utt>\d{3})\.mp4$")


def parse_mead_path(rel: str) -> dict[str, str]:
    """Labels of a MEAD video path relative to the root; ValueError when it does not fit."""
    m = _PATH.match(rel)
    if not m:
        raise ValueError("path is not <actor M###|W###>/video/<view>/<emotion>/level_<n>/<NNN>.mp4")
    view, emotion, level = m["view"].lower(), m["emotion"].lower(), int(m["level"])
    if view not in VIEWS:
        raise ValueError(f"unknown view {m['view']!r}")
    if emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {m['emotion']!r}")
    if not 1 <= level <= 3 or (emotion == "neutral" and level != 1):
        raise ValueError(f"level {level} does not exist for {emotion}")
    return {"actor": m["actor"], "view": view, "emotion": emotion, "level": str(level),
            "gender": "male" if m["actor"][0] == "M" else "female", "utterance": m["utt"]}


class MEADAdapter:
    name = "mead"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]:
        if not self.root.is_dir():
            yield MetadataError(self.name, str(self.root), None, "not a folder")
            return
        for path in walk_files(self.root, VIDEO_EXTENSIONS):
            rel = path.relative_to(self.root).as_posix()
            try:
                labels = parse_mead_path(rel)
            except ValueError as e:
                yield MetadataError(self.name, str(path), None, str(e))
                continue
            try:
                path, rel = inside(self.root, rel)  # refuses links that point out of the root
            except EntryError as e:
                yield MetadataError(self.name, str(path), None, str(e))
                continue
            actor = labels.pop("actor")
            yield SourceSpec(self.name, str(path), rel, "video", identity=actor, split="train", labels=labels)
