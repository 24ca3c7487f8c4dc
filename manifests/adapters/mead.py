"""MEAD: ``<actor>/video/<view>/<emotion>/level_<n>/<NNN>.mp4`` (actor ``M###`` or ``W###``),
directly in the root or under one wrapper folder (``ROOT/MEAD/M003/...``, as the per-actor
archives are often unpacked into a folder of their own).

Everything is in the path: identity = the actor; labels ``view`` (front, down, top, left_30,
left_60, right_30, right_60), ``emotion`` (8), ``level`` (1-3; neutral has level 1 only),
``gender`` (M/W prefix) and ``utterance``. A video elsewhere, or with a label outside these
sets, is an error naming the file (and counted as a file without metadata). Whole files.

Split (the published protocol, docs/datasets.md says where each number comes from): at every
level, the last ``test_sentences`` sentences of an emotion are ``test`` (10 for neutral, 6 for
the other seven), the last counted from the ``sentences`` recorded per emotion and level (40
for neutral, 30 for the others). A clip is ``test`` when its utterance number is above
``sentences - test_sentences`` of its emotion (neutral 031-040, the others 025-030), so its
split follows from its own path alone: the same whatever else was downloaded, the same for
every actor and every view of one recorded sentence (the views are one take filmed at once).
Both settings are per emotion (``{"neutral": 10, "other": 6}``; ``other`` covers the emotions
not named; a ``test_sentences`` of 0 keeps that emotion in ``train``). ``test_fraction`` (a
number in [0, 1)) asks for the older rule instead: the last ``round(test_fraction * n)`` of the
utterance numbers present for each (actor, emotion, level), pooled over the views, which
depends on the download; ``test_fraction: 0`` keeps all in ``train``.
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


# The published protocol (github.com/uniBruce/Mead README, "Training set & Testing set Split"):
# sentences in the test set per emotion and level, and sentences recorded per emotion and level
# (neutral: the same README; the other emotions: github.com/uniBruce/Mead/issues/12). ``other``
# stands for every emotion not named.
TEST_SENTENCES = {"neutral": 10, "other": 6}
SENTENCES = {"neutral": 40, "other": 30}


def _per_emotion(name: str, given: dict | None, default: dict[str, int]) -> dict[str, int]:
    """A per-emotion count setting, every emotion filled in (``other`` for those not named)."""
    merged = {**default, **(given or {})}
    unknown = set(merged) - set(EMOTIONS) - {"other"}
    if unknown:
        raise ValueError(f"mead: {name} names unknown emotions {sorted(unknown)} (known: {', '.join(EMOTIONS)}, other)")
    for key, n in merged.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"mead: {name}[{key!r}] must be a whole number >= 0, got {n!r}")
    return {e: merged.get(e, merged["other"]) for e in EMOTIONS}


def first_test_utterance(sentences: dict[str, int], test_sentences: dict[str, int]) -> dict[str, int | None]:
    """Per emotion, the first utterance number in the test split (every later one is test too);
    None where ``test_sentences`` is 0 (that emotion stays in train)."""
    return {e: sentences[e] - test_sentences[e] + 1 if test_sentences[e] else None for e in EMOTIONS}


def protocol_split(labels: dict[str, str], first_test: dict[str, int | None]) -> str:
    """``test`` or ``train`` from a clip's own labels (emotion and utterance number) alone."""
    first = first_test[labels["emotion"]]
    return "test" if first is not None and int(labels["utterance"]) >= first else "train"


def test_utterances(groups: dict[tuple, set[str]], fraction: float) -> set[tuple]:
    """The ``test_fraction`` rule: (actor, emotion, level, utterance) keys in the test split,
    the last ones present in each group (so it depends on what was downloaded)."""
    out = set()
    for key, utterances in groups.items():
        n_test = round(fraction * len(utterances))
        for utt in sorted(utterances)[len(utterances) - n_test:] if n_test else []:
            out.add((*key, utt))
    return out


class MEADAdapter:
    name = "mead"

    def __init__(self, root: str | Path, test_sentences: dict[str, int] | None = None,
                 sentences: dict[str, int] | None = None, test_fraction: float | None = None):
        if test_fraction is not None:
            if test_sentences is not None or sentences is not None:
                raise ValueError("mead: test_fraction replaces the protocol's test_sentences and sentences: give one")
            if not 0.0 <= float(test_fraction) < 1.0:
                raise ValueError(f"mead: test_fraction must be in [0, 1), got {test_fraction!r}")
        self.root = DatasetRoot(root)
        self.test_fraction = None if test_fraction is None else float(test_fraction)
        self.sentences = _per_emotion("sentences", sentences, SENTENCES)
        self.test_sentences = _per_emotion("test_sentences", test_sentences, TEST_SENTENCES)
        over = [e for e in EMOTIONS if self.test_sentences[e] > self.sentences[e]]
        if over:
            raise ValueError(f"mead: test_sentences exceeds sentences for {', '.join(over)}")
        self.first_test = first_test_utterance(self.sentences, self.test_sentences)

    def iter_sources(self) -> Iterator[SourceSpec | MetadataError]:
        if not self.root.is_dir():
            yield MetadataError(self.name, str(self.root), None, "not a folder")
            return
        self.files = FileIndex.scan(self.root, self.name, [""], VIDEO_EXTENSIONS)
        yield from self.files.problems
        parsed: list[tuple[str, dict[str, str]]] = []
        for listed in self.files.listed():
            try:
                parsed.append((listed, parse_mead_path(listed)))
            except ValueError as e:
                yield MetadataError(self.name, self.root.name(listed), None, str(e), kind=NO_METADATA)
        split_of = self._fraction_split(parsed) if self.test_fraction is not None else self._protocol_split
        for listed, labels in parsed:
            path, rel = self.files.real(listed)
            split = split_of(labels)
            actor = labels.pop("actor")
            yield SourceSpec(self.name, path, rel, "video", identity=actor, split=split, labels=labels)

    def _protocol_split(self, labels: dict[str, str]) -> str:
        return protocol_split(labels, self.first_test)

    def _fraction_split(self, parsed: list[tuple[str, dict[str, str]]]):
        """The ``test_fraction`` rule, which needs every utterance number present first."""
        groups: dict[tuple, set[str]] = defaultdict(set)
        for _, labels in parsed:
            groups[(labels["actor"], labels["emotion"], labels["level"])].add(labels["utterance"])
        test = test_utterances(groups, self.test_fraction)

        def split(labels: dict[str, str]) -> str:
            key = (labels["actor"], labels["emotion"], labels["level"], labels["utterance"])
            return "test" if key in test else "train"

        return split
