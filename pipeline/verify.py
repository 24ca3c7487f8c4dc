"""`portrait verify OUT [--repair]`: every committed shard checked against the catalog.

Each shard's size, row count and sha256 are compared with its ``shards`` row. ``--repair``
un-commits the sources whose frames a bad shard held (and the shard itself, whose file is
removed: the catalog named it, so the build wrote it), so the next build redoes exactly those.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from manifests.catalog import Catalog
from manifests.shards import check_shard


@dataclass
class Verdict:
    checked: int = 0
    bad: dict[str, str] = field(default_factory=dict)  # shard path -> what is wrong
    sources: list[dict] = field(default_factory=list)  # source_id, rel_path of the bad shards' sources
    repaired: bool = False


def verify(out_dir: str | Path, repair: bool = False) -> Verdict:
    """``out_dir``: a local folder or a URI (a remote catalog is repaired in a local copy and
    published back before the bad shards are removed)."""
    with Catalog(out_dir, read_only=not repair) as cat:
        rows = cat.shards()
        result = Verdict(checked=len(rows))
        for r in rows:
            if problem := check_shard(cat.out, r):
                result.bad[r["path"]] = problem
        result.sources = cat.sources_of_shards(sorted(result.bad))
        if repair and result.bad:
            cat.uncommit([s["source_id"] for s in result.sources], sorted(result.bad))
            cat.publish(final=True)
            for rel in result.bad:
                cat.out.delete(rel)
            result.repaired = True
    return result


def print_verdict(v: Verdict, out_dir: str | Path) -> None:
    for path, problem in sorted(v.bad.items()):
        print(f"BAD {path}: {problem}")
    if not v.bad:
        print(f"ok: {v.checked} shard(s) match the catalog (size, rows, sha256)")
        return
    names = ", ".join(s["rel_path"] for s in v.sources) or "-"
    if v.repaired:
        print(f"repaired: {len(v.bad)} of {v.checked} shard(s) removed from the catalog with their "
              f"{len(v.sources)} source(s) ({names}); build again to redo them")
    else:
        print(f"{len(v.bad)} of {v.checked} shard(s) do not match the catalog; their {len(v.sources)} source(s): "
              f"{names}; `portrait verify {out_dir} --repair` un-commits them for the next build")
