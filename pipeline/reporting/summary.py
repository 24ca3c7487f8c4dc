"""Printed summaries of a build: sources and clips by outcome and reason, per dataset."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from manifests.catalog import Catalog


def print_table(table: pa.Table, limit: int = 50, more: bool = False) -> None:
    """Up to ``limit`` rows; ``more``: ``table`` is the head of a longer result."""
    if table.num_rows == 0:
        print("(no rows)")
        return
    rel = duckdb.from_arrow(table)
    rel.show(max_rows=limit, max_width=200)
    if more:
        print(f"... more than {limit} rows (--limit N shows more; --csv/--parquet write them all)")
    elif table.num_rows > limit:
        print(f"... {table.num_rows} rows in all (use --csv/--parquet for everything)")


def print_summary(out_dir: Path) -> None:
    with Catalog(out_dir, read_only=True) as cat:
        print("Per dataset:")
        print_table(cat.named("summary"))
        print("Rejections and errors by reason:")
        print_table(cat.named("rejections"))
        errors = cat.query("SELECT stage, count(*) AS n FROM errors GROUP BY stage ORDER BY n DESC")
        if errors.num_rows:
            print("Errors by stage (see the `errors` table for messages):")
            print_table(errors)


def discovery_table(out_dir: Path) -> pa.Table:
    """Per dataset, what the latest run's discovery found (``runs.notes_json['discovery']``)."""
    import json

    with Catalog(out_dir, read_only=True) as cat:
        run = cat.latest_run()
    counts = (json.loads(run["notes_json"]) if run and run.get("notes_json") else {}).get("discovery") or {}
    rows = [{"dataset": name, **{k: v for k, v in c.items() if isinstance(v, (int, float))},
             "skipped": ", ".join(f"{k}: {v}" for k, v in (c.get("skipped") or {}).items())}
            for name, c in counts.items()]
    return pa.Table.from_pylist(rows)


def print_report(out_dir: Path) -> None:
    """`portrait report` as text: discovery per dataset, outcomes, then bytes per frame by feature."""
    from .preview import storage_report

    print("Discovery (latest run), per dataset:")
    print_table(discovery_table(out_dir))
    print_summary(out_dir)
    print("Storage per stored frame, by feature:")
    print_table(pa.Table.from_pylist(storage_report(out_dir)), limit=100)
