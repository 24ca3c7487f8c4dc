"""The evaluation split: ~100 clips from VFHQ and CelebV-HQ (as in RealPortrait), held out
from training by identity.

Rule (pure, seeded, independent of input order):

1. Each record (a clip or a source: ``dataset``, ``identity``, ``source_id`` and an id,
   ``clip_id`` or else ``source_id``) belongs to a *group*: its identity (an identity string
   names the same person wherever it appears), or its source video where identity is null.
   Groups that share a source video are merged (a VFHQ raw video with two people), so neither
   a person nor a source video is ever split between train and eval.
2. Only groups made entirely of records of the eval datasets (``vfhq``, ``celebvhq``) can be
   drawn; a group also seen in another dataset stays in training.
3. Groups are ordered by ``sha1(f"{seed}:{group key}")`` (group key = its smallest member
   key), so the draw does not depend on record order and the same seed gives the same split.
4. The target ``n`` is shared evenly between the eval datasets (the first gets the remainder);
   each dataset takes whole groups in that order while they fit in its quota (a group too big
   for the room left is skipped, the next one tried). What a dataset cannot fill goes to the
   others, in the same order.

The result is the set of record ids to mark ``split='eval'``. Pass the clips you want
eligible (e.g. the kept clips of a build); the caller writes the split into the catalog, and
training readers exclude 'eval' by default.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

EVAL_DATASETS = ("vfhq", "celebvhq")
EVAL_SPLIT = "eval"


class _Groups:
    """Union-find over string keys."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, k: str) -> str:
        self.parent.setdefault(k, k)
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _record_id(r: Mapping[str, Any]) -> str:
    rid = r.get("clip_id") or r.get("source_id")
    if not rid:
        raise ValueError("each record needs a clip_id or a source_id")
    return str(rid)


def choose_eval(records: Iterable[Mapping[str, Any]], n: int = 100, seed: int = 0,
                datasets: tuple[str, ...] = EVAL_DATASETS) -> set[str]:
    """Ids (clip_id, else source_id) of the records assigned to the eval split."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    records = list(records)
    groups = _Groups()
    for r in records:
        source = f"source:{r['source_id']}"
        groups.find(source)
        if r.get("identity"):
            groups.union(f"identity:{r['identity']}", source)

    members: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        members[groups.find(f"source:{r['source_id']}")].append(r)

    def order(key: str) -> str:
        return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()

    by_dataset: dict[str, list[tuple[str, list[Mapping[str, Any]]]]] = defaultdict(list)
    for key in sorted(members, key=order):
        rs = members[key]
        names = {r["dataset"] for r in rs}
        if len(names) == 1 and next(iter(names)) in datasets:
            by_dataset[next(iter(names))].append((key, rs))

    quotas = {d: n // len(datasets) + (1 if i < n % len(datasets) else 0) for i, d in enumerate(datasets)}
    chosen: set[str] = set()
    taken: set[str] = set()

    def fill(dataset: str, room: int) -> int:
        used = 0
        for key, rs in by_dataset.get(dataset, []):
            if key in taken or used + len(rs) > room:
                continue
            taken.add(key)
            chosen.update(_record_id(r) for r in rs)
            used += len(rs)
            if used == room:
                break
        return used

    left = 0
    for d in datasets:
        left += quotas[d] - fill(d, quotas[d])
    for d in datasets:  # what a dataset could not fill goes to the others
        if left <= 0:
            break
        left -= fill(d, left)
    return chosen
