"""Dataset-wide steps after the sources are in: intensity bins and levels, the eval split.

They read and write the catalog only (never the shards), so they are cheap to re-run whenever
the dataset changes: the shards stay as they are.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from manifests import schemas
from manifests.catalog import Catalog
from manifests.splits import EVAL_SPLIT, choose_eval
from stages.intensity import bin_edges, to_levels


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


def eval_split(catalog: Catalog, n: int, seed: int, datasets: list[str]) -> int:
    """Re-draw the evaluation split over the kept clips (manifests/splits.py has the rule).

    Clips drawn before get their dataset's own split back first, so the split always reflects
    the current dataset. Returns the number of eval clips.
    """
    catalog.con.execute(
        "UPDATE clips SET split = s.split FROM sources s WHERE clips.source_id = s.source_id AND clips.split = ?",
        [EVAL_SPLIT],
    )
    records = catalog.query(
        "SELECT clip_id, source_id, dataset, identity FROM clips WHERE verdict = 'kept'"
    ).to_pylist()
    chosen = sorted(choose_eval(records, n=n, seed=seed, datasets=tuple(datasets)))
    if chosen:
        catalog.con.execute("UPDATE clips SET split = ? WHERE list_contains(?, clip_id)", [EVAL_SPLIT, chosen])
    return len(chosen)
