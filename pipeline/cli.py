"""The `portrait` console script: build, query, report, preview, train, sample."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from manifests.errors import PortraitError, first_line

from .config import ConfigError


def _parse_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _key_values(items: list[str], flag: str) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = _parse_value(v)
    return out


# -- build ----------------------------------------------------------------------------------
def add_build_parser(sub) -> None:
    p = sub.add_parser("build", help="curate media into Parquet shards and a DuckDB catalog")
    p.add_argument(
        "--input", action="append", default=[], metavar="DIR", help="a plain folder of images and videos (repeatable)"
    )
    p.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME=ROOT",
        help="a dataset in its official layout (repeatable)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="OUT",
        help="output folder or URI, e.g. s3://bucket/prefix (catalog.duckdb, shards/)",
    )
    p.add_argument("--config", metavar="YAML", help="build config file")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. sampling.fps=10"
    )
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--retry-errors", action="store_true",
                   help="redo every source that ended in error (those lost to a worker or node are redone anyway)")
    p.set_defaults(func=cmd_build)


def _check_inputs(inputs: list[str]) -> None:
    """--input takes folders: a file would otherwise build nothing and exit 0 (a missing path is
    refused by discovery: "dataset root not found")."""
    for d in inputs:
        if "://" not in d and Path(d).is_file():  # a URI: its adapter says what is wrong with it
            raise ConfigError(f"--input expects a folder, {d} is a file: give the folder that holds it")


def cmd_build(args) -> int:
    from .build import build
    from .config import load_config
    from .quiet import local_ray_auth
    from .reporting.summary import print_summary
    from .sources import dataset_entries, discover
    from .weights import check_weights

    overrides = _key_values(args.set, "--set")
    if args.address:
        overrides["ray.address"] = args.address
    if args.num_cpus:
        overrides["ray.num_cpus"] = args.num_cpus
    _check_inputs(args.input)
    config = load_config(args.config, overrides)
    check_weights(config)  # before the (possibly long) dataset discovery
    local_ray_auth(config.ray.address)
    entries = dataset_entries(config, args.input, args.dataset)
    discovery = discover(entries, progress=not args.no_progress)
    print(
        f"found {len(discovery.specs)} sources in {len(entries)} dataset(s)"
        + (f", {len(discovery.metadata_errors)} metadata error(s)" if discovery.metadata_errors else ""),
        file=sys.stderr,
    )
    stats = build(config, args.out, discovery, progress=not args.no_progress, retry_errors=args.retry_errors)
    if stats.skipped:
        print(f"skipped {stats.skipped} source(s) finished by an earlier run", file=sys.stderr)
    if stats.retried:
        print(f"redid {stats.retried} source(s) that ended in error before", file=sys.stderr)
    if stats.lost:
        print(
            f"{stats.lost} source(s) lost with their worker: run the same command again to retry them", file=sys.stderr
        )
    print_summary(_out_dir(args.out))
    return 0


# -- query ----------------------------------------------------------------------------------
def add_query_parser(sub) -> None:
    from manifests.catalog import named_query_names

    p = sub.add_parser("query", help="run SQL (or a named query) against a build's catalog")
    p.add_argument("sql", nargs="?", help="SQL over sources, clips, frames, runs, shards, errors")
    p.add_argument("--catalog", required=True, help="OUT/catalog.duckdb (or OUT; a path or a URI such as s3://...)")
    p.add_argument("--named", metavar="NAME", help=f"a named query: {', '.join(named_query_names())}")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="parameter of a named query")
    p.add_argument("--csv", metavar="FILE", help="write the result as CSV")
    p.add_argument("--parquet", metavar="FILE", help="write the result as Parquet")
    p.add_argument("--limit", type=int, default=50, help="rows printed (default 50)")
    p.set_defaults(func=cmd_query)


def cmd_query(args) -> int:
    from manifests.catalog import Catalog

    from .reporting.summary import print_table

    if bool(args.sql) == bool(args.named):
        raise ConfigError("give either SQL or --named NAME")
    if args.csv and args.parquet:
        raise ConfigError("give one of --csv and --parquet, not both")
    params = _key_values(args.param, "--param")
    _check_params(args.named, params)
    with Catalog.open_file(args.catalog, read_only=True) as cat:
        if args.named:
            # A threshold added since the catalog's last build is not in its stored config:
            # today's default stands in for it (the build's own values win where recorded).
            from stages.curate import Thresholds

            recorded = cat.latest_thresholds()
            params = {**{k: v for k, v in Thresholds().model_dump().items() if k not in recorded}, **params}
        sql, values = cat.named_sql(args.named, params) if args.named else (args.sql, None)
        if not (args.csv or args.parquet):  # printed: only the rows shown are made
            table, more = cat.head(sql, values, args.limit)
            print_table(table, limit=args.limit, more=more)
            return 0
        table = cat.query(sql, values)
    if args.csv:
        import pyarrow.csv as pcsv

        pcsv.write_csv(_printable(table), args.csv)
        print(f"wrote {table.num_rows} rows to {args.csv}", file=sys.stderr)
    elif args.parquet:
        import pyarrow.parquet as pq

        pq.write_table(table, args.parquet)
        print(f"wrote {table.num_rows} rows to {args.parquet}", file=sys.stderr)
    return 0


def _check_params(named: str | None, params: dict) -> None:
    """A mistyped --param would silently leave the threshold at its default: refuse it."""
    if not params:
        return
    if not named:
        raise ConfigError("--param is for --named queries (write the value into the SQL)")
    from manifests.catalog import _parameters_in, named_query_sql

    known = _parameters_in(named_query_sql(named))
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"unknown --param {', '.join(unknown)} for --named {named} "
                          f"(its parameters: {', '.join(sorted(known)) or 'none'})")


def _printable(table):
    """CSV cannot hold nested types: lists, maps and structs become JSON text."""
    import json

    import pyarrow as pa

    cols = []
    for col in table.columns:
        if pa.types.is_nested(col.type) or pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            col = pa.array(
                [None if v is None else json.dumps(v, default=lambda b: f"<{len(b)} bytes>") for v in col.to_pylist()],
                pa.string(),
            )
        cols.append(col)
    return pa.table(cols, names=table.column_names)


# -- preview, report ------------------------------------------------------------------------
def add_preview_parser(sub) -> None:
    p = sub.add_parser("preview", help="PNG sheet of one clip: frames, landmarks, position map, pose, decoded latent")
    p.add_argument("--catalog", required=True, help="OUT/catalog.duckdb (or OUT)")
    p.add_argument("--clip", help="clip_id (default: the first kept clip)")
    p.add_argument("--png", required=True, help="output PNG")
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--vae", help="decode the latents back with this VAE (folder or .safetensors)")
    p.set_defaults(func=cmd_preview)


def cmd_preview(args) -> int:
    from .reporting.preview import preview_clip

    clip = preview_clip(_out_dir(args.catalog), args.clip, args.png, args.frames, args.vae)
    print(f"wrote {args.png} (clip {clip})")
    return 0


def add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="what a build holds: counts, discovery, storage per feature; --html for the full page"
    )
    p.add_argument("--catalog", required=True, help="OUT/catalog.duckdb (or OUT)")
    p.add_argument("--html", metavar="DIR", help="write DIR/index.html: counts, score histograms, contact sheets, "
                   "storage, runs and models (one self-contained file)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from .reporting.summary import print_report

    out = _out_dir(args.catalog)
    if args.html:
        from .reporting.report_html import write_report

        path = write_report(out, args.html)
        print(f"wrote {path}", file=sys.stderr)
        return 0
    print_report(out)
    return 0


# -- devset, eval ---------------------------------------------------------------------------
def add_eval_parsers(sub) -> None:
    p = sub.add_parser("devset", help="write a labelled development set: real media plus degraded variants")
    p.add_argument(
        "--base", required=True, metavar="CSV", help="path,label,reasons of real files (bench/devset_base.csv)"
    )
    p.add_argument("--media", required=True, metavar="ROOT", help="folder the base paths are relative to")
    p.add_argument("--out", required=True, metavar="DIR", help="writes DIR/media and DIR/labels.csv")
    p.add_argument("--kinds", help="comma-separated degradations (default: all)")
    p.add_argument("--limit", type=int, help="at most this many clean and this many other base files")
    p.add_argument("--clean-seconds", type=float, default=10.0, help="clean videos are trimmed to this")
    p.add_argument("--degraded-seconds", type=float, default=4.0, help="degraded videos are this long")
    p.set_defaults(func=cmd_devset)
    p = sub.add_parser("eval", help="precision/recall of every filter and the clean keep-rate against labels")
    p.add_argument("--labels", required=True, metavar="CSV", help="file,expected,reasons (as `portrait devset` writes)")
    p.add_argument(
        "--catalog",
        required=True,
        action="append",
        help="OUT/catalog.duckdb (or OUT) of a build of the labelled files (repeatable: a set built in parts)",
    )
    p.add_argument("--all", action="store_true", help="print every file's scores, not only the wrong ones")
    p.set_defaults(func=cmd_eval)


def cmd_devset(args) -> int:
    from .evaluation.devset import make_devset

    try:
        labels = make_devset(Path(args.base), Path(args.media), Path(args.out),
                             kinds=args.kinds.split(",") if args.kinds else None, limit=args.limit,
                             clean_seconds=args.clean_seconds, degraded_seconds=args.degraded_seconds)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    print(f"wrote {labels}; build {Path(args.out) / 'media'} and run `portrait eval --labels {labels}`")
    return 0


def cmd_eval(args) -> int:
    from .evaluation.evaluate import evaluate, print_report

    report = evaluate([_out_dir(c) for c in args.catalog], args.labels)  # LabelsError: one line in main()
    print_report(report, all_files=args.all)
    return 0


# -- verify ---------------------------------------------------------------------------------
def add_verify_parser(sub) -> None:
    p = sub.add_parser("verify", help="check every shard's size, rows and sha256 against the catalog")
    p.add_argument("out", metavar="OUT", help="output folder (or OUT/catalog.duckdb)")
    p.add_argument(
        "--repair", action="store_true", help="un-commit the sources of bad shards so the next build redoes them"
    )
    p.set_defaults(func=cmd_verify)


def cmd_verify(args) -> int:
    from .verify import print_verdict, verify

    out = _out_dir(args.out)
    verdict = verify(out, repair=args.repair)
    print_verdict(verdict, out)
    return 1 if verdict.bad and not verdict.repaired else 0


# -- eval-split -----------------------------------------------------------------------------
def add_eval_split_parser(sub) -> None:
    p = sub.add_parser(
        "eval-split",
        help="re-draw the leakage-free eval split of a catalog (--check: only list what it shares with training)")
    p.add_argument("out", metavar="OUT", help="output folder (or OUT/catalog.duckdb)")
    p.add_argument("--check", action="store_true",
                   help="change nothing: print every training clip that shares a video, duplicate group or "
                        "person with an eval clip (exit 1 if any)")
    p.add_argument("--n", type=int, help="eval clips to draw (default: the last build's eval_split.n)")
    p.add_argument("--seed", type=int, help="seed of the draw (default: the last build's)")
    p.set_defaults(func=cmd_eval_split)


def cmd_eval_split(args) -> int:
    import json

    from manifests.catalog import Catalog

    from .config import EvalSplitConfig
    from .finalize import eval_leaks, eval_split

    with Catalog(_out_dir(args.out), read_only=args.check) as catalog:
        run = catalog.latest_run() or {}
        settings = json.loads(run.get("config_json") or "{}").get("eval_split", {})
        e = EvalSplitConfig.model_validate(settings)
        if not args.check:
            drawn = eval_split(catalog, args.n if args.n is not None else e.n,
                               args.seed if args.seed is not None else e.seed, e.datasets, e.identity_threshold)
            catalog.publish(final=True)
            print(f"{drawn} eval clip(s) drawn from {', '.join(e.datasets)}")
        found = eval_leaks(catalog, e.identity_threshold)
    for leak in found:
        key = f" {leak['key']}" if leak["key"] else ""
        print(f"leak: eval {leak['eval']} and training {leak['train']} share {leak['by']}{key}")
    print(f"{len(found)} leak(s)" if found else "no leaks: no training clip shares a video, duplicate group, "
          "identity or face with an eval clip")
    return 1 if found else 0


def _out_dir(catalog: str) -> Path | str:
    """OUT from OUT or OUT/catalog.duckdb: a Path, or the URI as text (s3://...)."""
    from manifests.storage import is_uri

    if is_uri(catalog):
        text = catalog.rstrip("/")
        return text.rsplit("/", 1)[0] if text.endswith(".duckdb") else text
    p = Path(catalog)
    return p.parent if p.suffix == ".duckdb" else p


def main(argv: list[str] | None = None) -> int:
    from .quiet import quiet, silence_native_stderr

    # Before the subcommands' imports (mediapipe and Ray read their log settings once).
    verbose = any(a in ("-v", "--verbose") for a in (sys.argv[1:] if argv is None else argv))
    quiet(verbose)
    if argv is None and not verbose:  # the console script: a process of its own
        silence_native_stderr()
    parser = argparse.ArgumentParser(prog="portrait", description="Portrait animation data platform")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library warnings and log lines")
    sub = parser.add_subparsers(dest="command", required=True)
    add_build_parser(sub)
    add_query_parser(sub)
    for extra in _extra_parsers():
        extra(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except (PortraitError, FileNotFoundError) as e:  # the user's to fix: one line; anything else is a bug
        print(f"portrait: error: {first_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("portrait: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _extra_parsers():
    """Preview/report, and the trainer's subcommands (portrait_model owns them)."""
    from portrait_model.cli import add_sample_parser, add_train_parser

    from .motion import motion_fn_factory

    return [add_preview_parser, add_report_parser, add_verify_parser, add_eval_parsers, add_eval_split_parser,
            add_train_parser,
            lambda sub: add_sample_parser(sub, motion_fn_factory=motion_fn_factory)]


if __name__ == "__main__":
    sys.exit(main())
