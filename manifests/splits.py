"""The evaluation split: ~100 clips from VFHQ and CelebV-HQ (as in RealPortrait), held out
from training with nothing of theirs in training: no shared person, video or footage, across
every dataset of the catalog.

Rule (pure, seeded, independent of input order):

1. Each record (a clip or a source: ``dataset``, ``source_id``, optionally ``identity``,
   ``video_id``, ``dup_group``, and an id, ``clip_id`` or else ``source_id``) belongs to a
   *group*: the connected component of "shares a source file, an identity string, a source
   video id (the YouTube id the datasets name) or a duplicate group (the same footage found by
   its perceptual signature, manifests/duplicates.py)", plus any extra ``links`` (pairs of
   record ids; the caller passes identity-embedding neighbours). So neither a person, nor a
   source video, nor a piece of footage is ever split between train and eval, whichever
   datasets hold it.
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
training readers exclude 'eval' by default. :func:`leaks` finds what a split shares with
training (``portrait eval-split --check``).
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

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


# What ties two records together (rule 1): the record field and its key prefix.
_SHARED = (("identity", "identity"), ("video_id", "video"), ("dup_group", "dup"))


def choose_eval(records: Iterable[Mapping[str, Any]], n: int = 100, seed: int = 0,
                datasets: tuple[str, ...] = EVAL_DATASETS,
                links: Iterable[tuple[str, str]] = ()) -> set[str]:
    """Ids (clip_id, else source_id) of the records assigned to the eval split. ``links``:
    extra pairs of record ids that must stay on one side (e.g. the same face by embedding)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    records = list(records)
    groups = _Groups()
    source_of: dict[str, str] = {}
    for r in records:
        source = f"source:{r['source_id']}"
        groups.find(source)
        source_of[_record_id(r)] = source
        for field, prefix in _SHARED:
            if r.get(field):
                groups.union(f"{prefix}:{r[field]}", source)
    for a, b in links:
        if a in source_of and b in source_of:
            groups.union(source_of[a], source_of[b])

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


def leaks(records: Iterable[Mapping[str, Any]], links: Iterable[tuple[str, str]] = ()) -> list[dict[str, str]]:
    """What the eval records share with the others (``split`` != 'eval'): one dict per eval
    record and training record that share an identity, a video id or a duplicate group (or a
    ``links`` pair), with ``by`` (the field) and ``key`` (the shared value). Sorted; empty when
    the split is leak-free."""
    records = list(records)
    by_key: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        for field, _ in _SHARED:
            if r.get(field):
                by_key[(field, str(r[field]))].append(r)
    found: set[tuple[str, str, str, str]] = set()
    for (field, key), rs in by_key.items():
        evals = [_record_id(r) for r in rs if r.get("split") == EVAL_SPLIT]
        if not evals:
            continue
        for t in (_record_id(r) for r in rs if r.get("split") != EVAL_SPLIT):
            found.update((e, t, field, key) for e in evals)
    split_of = {_record_id(r): r.get("split") for r in records}
    for a, b in links:
        if a in split_of and b in split_of and (split_of[a] == EVAL_SPLIT) != (split_of[b] == EVAL_SPLIT):
            e, t = (a, b) if split_of[a] == EVAL_SPLIT else (b, a)
            found.add((e, t, "embedding", ""))
    return [dict(eval=e, train=t, by=by, key=key) for e, t, by, key in sorted(found)]


def embedding_links(ids: list[str], embeddings: np.ndarray, queries: Iterable[str], threshold: float,
                    chunk: int = 65536) -> list[tuple[str, str]]:
    """Pairs (query id, other id) whose L2-normalised embeddings (N, D) have a cosine
    similarity >= ``threshold``: the same person, for ArcFace. Queries x N, in chunks of the N
    side, so memory stays at one chunk's scores; the queries are the eval clips (about 100),
    never all N, which would be quadratic."""
    index = {cid: i for i, cid in enumerate(ids)}
    rows = [index[q] for q in queries if q in index]
    if not rows or len(ids) == 0:
        return []
    q = embeddings[rows]
    out: list[tuple[str, str]] = []
    for start in range(0, len(ids), chunk):
        sims = q @ embeddings[start:start + chunk].T  # (Q, chunk)
        for qi, j in zip(*np.nonzero(sims >= threshold)):
            other = ids[start + int(j)]
            if other != ids[rows[qi]]:
                out.append((ids[rows[qi]], other))
    return out
