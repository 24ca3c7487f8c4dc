"""Printed summaries of a build: sources and clips by outcome and reason, per dataset."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from manifests.catalog import Catalog


def print_table(table: pa.Table, limit: int = 50) -> None:
    if table.num_rows == 0:
        print("(no rows)")
        return
    rel = duckdb.from_arrow(table)
    rel.show(max_rows=limit, max_width=200)
    if table.num_rows > limit:
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
