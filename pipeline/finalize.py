"""Dataset-wide steps after the sources are in: intensity bins and levels, duplicate groups
across datasets, the leakage-free eval split.

They read and write the catalog only (never the shards), so they are cheap to re-run whenever
the dataset changes: the shards stay as they are.
"""
from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pyarrow as pa

from manifests import duplicates, schemas, tensors
from manifests.catalog import Catalog
from manifests.splits import EVAL_SPLIT, choose_eval, embedding_links, leaks
from stages.intensity import bin_edges, to_levels

log = logging.getLogger(__name__)


def intensity_levels(catalog: Catalog, levels: int, run_id: str) -> int:
    """Recompute bin edges over every kept clip, and every clip's levels. Returns clips binned."""
    rows = catalog.query(
        "SELECT clip_id, intensity_exp, intensity_head FROM clips "
        "WHERE verdict = 'kept' AND intensity_exp IS NOT NULL AND intensity_head IS NOT NULL"
    ).to_pylist()
    catalog.con.execute("DELETE FROM intensity_bins")
    if not rows:
        catalog.con.execute("UPDATE clips SET intensity_exp_level = NULL, intensity_head_level = NULL")
        return 0
    bins = []
    levels_by_kind = {}
    for kind in ("exp", "head"):
        values = np.array([r[f"intensity_{kind}"] for r in rows], dtype=np.float64)
        edges = bin_edges(values, levels)
        bins.append({"kind": kind, "levels": levels, "edges": edges.tolist(), "n_clips": len(rows), "run_id": run_id})
        levels_by_kind[kind] = edges
    catalog.insert("intensity_bins", schemas.table_from_rows(bins, schemas.INTENSITY_BINS))
    # Levels for every clip with values (kept or not), from the kept clips' edges.
    all_rows = catalog.query("SELECT clip_id, intensity_exp, intensity_head FROM clips").to_pylist()
    exp = np.array([np.nan if r["intensity_exp"] is None else r["intensity_exp"] for r in all_rows])
    head = np.array([np.nan if r["intensity_head"] is None else r["intensity_head"] for r in all_rows])
    update = pa.table({
        "clip_id": [r["clip_id"] for r in all_rows],
        "le": to_levels(exp, levels_by_kind["exp"]),
        "lh": to_levels(head, levels_by_kind["head"]),
    })
    catalog.con.register("_levels", update)
    catalog.con.execute(
        "UPDATE clips SET intensity_exp_level = CASE WHEN _levels.le < 0 THEN NULL ELSE _levels.le END, "
        "intensity_head_level = CASE WHEN _levels.lh < 0 THEN NULL ELSE _levels.lh END "
        "FROM _levels WHERE clips.clip_id = _levels.clip_id"
    )
    catalog.con.unregister("_levels")
    return len(rows)


def duplicate_groups(catalog: Catalog) -> int:
    """Group the kept clips of every dataset in the catalog by their perceptual signatures
    (manifests/duplicates.py: near-neighbour search, not pairwise) into ``clips.dup_group``.
    Returns the number of clips that have a duplicate."""
    t = catalog.query("SELECT clip_id, signature FROM clips WHERE verdict = 'kept' AND signature IS NOT NULL")
    ids = t.column("clip_id").to_pylist()
    signatures = t.column("signature").to_pylist()
    # A signature of another layout version (an older build) cannot be compared: that clip
    # stays ungrouped until a build with this version redoes it.
    stale = sum(1 for sig in signatures if sig[:1] != bytes([duplicates.VERSION]))
    if stale:
        log.warning("%d clip(s) have a signature of another version and are left out of the duplicate groups", stale)
        keep = [i for i, sig in enumerate(signatures) if sig[:1] == bytes([duplicates.VERSION])]
        ids, signatures = [ids[i] for i in keep], [signatures[i] for i in keep]
    groups = duplicates.group_duplicates(ids, signatures)
    catalog.con.execute("UPDATE clips SET dup_group = NULL")
    if not ids:
        return 0
    catalog.con.register("_groups", pa.table({"clip_id": ids, "g": groups}))
    catalog.con.execute("UPDATE clips SET dup_group = _groups.g FROM _groups WHERE clips.clip_id = _groups.clip_id")
    catalog.con.unregister("_groups")
    sizes = Counter(groups)
    return sum(n for n in sizes.values() if n > 1)


_SPLIT_FIELDS = "clip_id, source_id, dataset, identity, video_id, dup_group"
# Re-draws at most this often while the drawn clips' faces keep finding new look-alikes.
_MAX_DRAWS = 20


def _embeddings(catalog: Catalog) -> tuple[list[str], np.ndarray]:
    """The kept clips' identity embeddings: ids and an (N, 512) float32 array (empty without)."""
    t = catalog.query("SELECT clip_id, identity_embedding FROM clips "
                      "WHERE verdict = 'kept' AND identity_embedding IS NOT NULL ORDER BY clip_id")
    if t.num_rows == 0:
        return [], np.zeros((0, 0), np.float32)
    emb = tensors.stack(t.column("identity_embedding"), "float32")
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)  # stored normalised; exact anyway
    return t.column("clip_id").to_pylist(), emb


def eval_split(catalog: Catalog, n: int, seed: int, datasets: list[str], identity_threshold: float) -> int:
    """Re-draw the evaluation split over the kept clips (manifests/splits.py has the rule).

    Clips drawn before get their dataset's own split back first, so the split always reflects
    the current dataset. Where clips have identity embeddings, every drawn clip's look-alikes
    (cosine >= ``identity_threshold``, in any dataset) join its group and the draw is made
    again until it finds no new one, so no face of the eval set is in training under another
    name. Returns the number of eval clips.
    """
    catalog.con.execute(
        "UPDATE clips SET split = s.split FROM sources s WHERE clips.source_id = s.source_id AND clips.split = ?",
        [EVAL_SPLIT],
    )
    records = catalog.query(f"SELECT {_SPLIT_FIELDS} FROM clips WHERE verdict = 'kept'").to_pylist()
    ids, emb = _embeddings(catalog)
    links: set[tuple[str, str]] = set()
    for _ in range(_MAX_DRAWS):
        chosen = choose_eval(records, n=n, seed=seed, datasets=tuple(datasets), links=links)
        found = set(embedding_links(ids, emb, chosen, identity_threshold)) - links
        if not found:
            break
        links |= found
    else:
        log.warning("eval split: drawn clips still found new look-alikes after %d draws; "
                    "`portrait eval-split OUT --check` lists them", _MAX_DRAWS)
    chosen = sorted(chosen)
    if chosen:
        catalog.con.execute("UPDATE clips SET split = ? WHERE list_contains(?, clip_id)", [EVAL_SPLIT, chosen])
    return len(chosen)


def eval_leaks(catalog: Catalog, identity_threshold: float) -> list[dict[str, str]]:
    """What the catalog's eval clips share with kept clips outside the eval split: an identity,
    a video id, a duplicate group, or a face (embedding cosine >= ``identity_threshold``)."""
    records = catalog.query(f"SELECT {_SPLIT_FIELDS}, split FROM clips WHERE verdict = 'kept'").to_pylist()
    ids, emb = _embeddings(catalog)
    evals = [r["clip_id"] for r in records if r["split"] == EVAL_SPLIT]
    return leaks(records, embedding_links(ids, emb, evals, identity_threshold))
