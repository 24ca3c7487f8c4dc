"""`portrait verify OUT [--repair]`: every committed shard checked against the catalog.

Each shard's size, footer and sha256 are compared with its ``shards`` row, and what was found
is recorded in the catalog (``shards.verified_at`` for the sound ones, ``shards.problem`` for
the others), so that readers trust a verified shard without hashing it again and leave a bad
one out. ``--repair`` un-commits the sources whose frames a bad shard held (and the shard
itself, whose file is removed: the catalog named it, so the build wrote it), so the next build
redoes exactly those; a build does the same by itself for the shards it finds missing or
damaged when it starts (:func:`repair_shards`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from manifests.catalog import Catalog, CatalogError
from manifests.shards import check_shards, remove_build_shard

log = logging.getLogger(__name__)


@dataclass
class Verdict:
    checked: int = 0
    bad: dict[str, str] = field(default_factory=dict)  # shard path -> what is wrong
    sources: list[dict] = field(default_factory=list)  # source_id, rel_path of the bad shards' sources
    repaired: bool = False
    recorded: bool = False  # the findings were written to the catalog


def repair_shards(cat: Catalog, bad: dict[str, str]) -> list[dict]:
    """Un-commit the bad shards and every source whose frames they held, then remove the
    shards' files where their names say a build wrote them (any other file is left, and
    named). Returns those sources."""
    sources = cat.sources_of_shards(sorted(bad))
    if bad:
        cat.uncommit([s["source_id"] for s in sources], sorted(bad))
        cat.publish(final=True)
        kept = [rel for rel in sorted(bad) if not remove_build_shard(cat.out, rel)]
        if kept:
            log.warning("left %d file(s) whose names no build gives: %s", len(kept), ", ".join(kept))
    return sources


def verify(out_dir: str | Path, repair: bool = False) -> Verdict:
    """``out_dir``: a local folder or a URI (a remote catalog is worked on in a local copy and
    published back before the bad shards are removed). Without ``repair`` the findings are
    still recorded, unless a build holds the catalog (then they are only printed)."""
    try:
        cat = Catalog(out_dir, working_copy=True)
    except CatalogError:
        if repair:
            raise
        cat = Catalog(out_dir, read_only=True)  # a build is running: check, print, record nothing
    with cat:
        rows = cat.shards("path, rows, bytes, sha256, footer_sha256")
        result = Verdict(checked=len(rows))
        result.bad = check_shards(cat.out, rows, upto="sha256", threads=4)
        result.sources = cat.sources_of_shards(sorted(result.bad))
        if repair and result.bad:
            repair_shards(cat, result.bad)
            result.repaired = True
        elif not cat.read_only:
            cat.record_checks([r["path"] for r in rows if r["path"] not in result.bad], result.bad)
            cat.publish(final=True)
            result.recorded = True
    return result


def print_verdict(v: Verdict, out_dir: str | Path) -> None:
    for path, problem in sorted(v.bad.items()):
        print(f"BAD {path}: {problem}")
    if not v.bad:
        print(f"ok: {v.checked} shard(s) match the catalog (size, footer, sha256)"
              + ("" if v.recorded else "; a build holds the catalog, so this check was not recorded"))
        return
    names = ", ".join(s["rel_path"] for s in v.sources) or "-"
    if v.repaired:
        print(f"repaired: {len(v.bad)} of {v.checked} shard(s) removed from the catalog with their "
              f"{len(v.sources)} source(s) ({names}); build again to redo them")
    else:
        print(f"{len(v.bad)} of {v.checked} shard(s) do not match the catalog; their {len(v.sources)} source(s): "
              f"{names}; the next build redoes them (`portrait verify {out_dir} --repair` un-commits them now)")
