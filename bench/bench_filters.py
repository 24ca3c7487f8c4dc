"""Curation accuracy on the labelled development set (prints figures; asserts nothing).

Makes the development set from the fixtures (bench/devset_base.csv + pipeline/evaluation/devset.py's
degradations) once into bench/out/devset, builds it with the default config (features off:
only curation is measured) and prints `portrait eval`'s per-filter precision and recall, the
clean keep-rate and the files it got wrong.

With ``--ranges``, also the distributions behind the thresholds: per score, per kind of file
(clean, each degradation, labelled kept or rejected), the main clip's min, median and max
(docs/filters.md's tables).

Usage: python bench/bench_filters.py [--fixtures DIR] [--rebuild] [--remake] [--all] [--ranges]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=os.environ.get("PORTRAIT_FIXTURES", str(REPO.parent / "shared" / "fixtures")))
    ap.add_argument("--out", default=str(REPO / "bench" / "out"))
    ap.add_argument("--remake", action="store_true", help="make the development set again")
    ap.add_argument("--rebuild", action="store_true", help="build again (e.g. after changing a scorer)")
    ap.add_argument("--all", action="store_true", help="print every file's scores")
    ap.add_argument("--ranges", action="store_true", help="print each score's range per kind of file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="build config override")
    args = ap.parse_args()
    from pipeline.cli import main as portrait

    out = Path(args.out)
    devset = out / "devset"
    if args.remake or not (devset / "labels.csv").is_file():
        shutil.rmtree(devset, ignore_errors=True)
        code = portrait(["devset", "--base", str(REPO / "bench" / "devset_base.csv"), "--media", args.fixtures,
                         "--out", str(devset)])
        if code:
            return code
    build = out / "devset_build"
    if args.rebuild or args.remake:
        shutil.rmtree(build, ignore_errors=True)
    sets = ["--set", "features.enabled=false"] + [x for s in args.set for x in ("--set", s)]
    code = portrait(["build", "--input", str(devset / "media"), "--out", str(build), "--no-progress", *sets])
    if code:
        return code
    code = portrait(
        ["eval", "--labels", str(devset / "labels.csv"), "--catalog", str(build)] + (["--all"] if args.all else [])
    )
    if args.ranges and not code:
        from pipeline.evaluation.evaluate import evaluate, print_ranges

        print_ranges(evaluate(build, devset / "labels.csv"))
    return code


if __name__ == "__main__":
    sys.exit(main())
