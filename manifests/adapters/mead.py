"""MEAD: ``<actor>/video/<view>/<emotion>/level_<n>/<NNN>.mp4`` (actor ``M###`` or ``W###``),
directly in the root or under one wrapper folder (``ROOT/MEAD/M003/...``, as the per-actor
archives are often unpacked into a folder of their own).

Everything is in the path: identity = the actor; labels ``view`` (front, down, top, left_30,
left_60, right_30, right_60), ``emotion`` (8), ``level`` (1-3; neutral has level 1 only),
``gender`` (M/W prefix) and ``utterance``. A video elsewhere, or with a label outside these
sets, is an error naming the file (and counted as a file without metadata). Whole files.

Split: MEAD's test set is drawn per actor, emotion and level from the last sentences. Here the
last ``round(test_fraction * n)`` utterance numbers of each (actor, emotion, level) are ``test``
and the rest ``train``; the numbers are pooled over the seven views, so every view of one
recorded sentence lands on the same side (the views are the same take filmed at once, and
splitting them would leak the test sentence into training). ``test_fraction: 0`` keeps all in
``train``.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from .base import NO_METADATA, VIDEO_EXTENSIONS, MetadataError, SourceSpec
from .files import FileIndex
from .root import DatasetRoot

VIEWS = ("front", "down", "top", "left_30", "left_60", "right_30", "right_60")
EMOTIONS = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
_PATH = re.compile(
    r"^(?P<actor>[MW]\d{3})/video/(?P<view>[^/]+)/(?P<emotion>[^/]+)/level_(?P<level>\d+)/(?P<utt>\d{3})\.mp4$"
)


def parse_mead_path(rel: str) -> dict[str, str]:
    """Labels of a MEAD video path relative to the root (or to one wrapper folder in it);
    ValueError when it does not fit."""
    m = _PATH.match(rel) or (_PATH.match(rel.split("/", 1)[1]) if "/" in rel else None)
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


def test_utterances(groups: dict[tuple, set[str]], fraction: float) -> set[tuple]:
    """(actor, emotion, level, utterance) keys in the test split: the last ones of each group."""
    out = set()
    for key, utterances in groups.items():
        n_test = round(fraction * len(utterances))
        for utt in sorted(utterances)[len(utterances) - n_test:] if n_test else []:
            out.add((*key, utt))
    return out


class MEADAdapter:
    name = "mead"

    def __init__(self, root: str | Path, test_fraction: float = 0.1):
        if not 0.0 <= float(test_fraction) < 1.0:
            raise ValueError(f"mead: test_fraction must be in [0, 1), got {test_fraction!r}")
        self.root = DatasetRoot(root)
        self.test_fraction = float(test_fraction)

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]:
        if not self.root.is_dir():
            yield MetadataError(self.name, str(self.root), None, "not a folder")
            return
        self.files = FileIndex.scan(self.root, self.name, [""], VIDEO_EXTENSIONS)
        yield from self.files.problems
        parsed: list[tuple[str, dict[str, str]]] = []
        groups: dict[tuple, set[str]] = defaultdict(set)
        for listed in self.files.listed():
            try:
                labels = parse_mead_path(listed)
            except ValueError as e:
                yield MetadataError(self.name, self.root.name(listed), None, str(e), kind=NO_METADATA)
                continue
            parsed.append((listed, labels))
            groups[(labels["actor"], labels["emotion"], labels["level"])].add(labels["utterance"])
        test = test_utterances(groups, self.test_fraction)
        for listed, labels in parsed:
            path, rel = self.files.real(listed)
            actor = labels.pop("actor")
            split = "test" if (actor, labels["emotion"], labels["level"], labels["utterance"]) in test else "train"
            yield SourceSpec(self.name, path, rel, "video", identity=actor, split=split, labels=labels)
