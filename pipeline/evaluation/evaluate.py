"""`portrait eval`: how right the curation filters are on a labelled set.

Labels (CSV, as ``portrait devset`` writes them): ``file`` (path relative to the built folder),
``expected`` (kept | rejected) and ``reasons`` ('|'-separated reasons any of which is a right
reason to reject; empty for kept files). A source counts as kept when any of its clips is kept;
the reasons it fired are its ``sources.reasons`` (the reasons of its judged clips).

Per filter (each verdict reason; ``no_face`` also covers sources where no face was found):
- precision: of the files the filter fired on, the share for which it is a right reason;
- recall: of the files for which it is a right reason, the share rejected for a right reason
  (down-and-upscaled content rejected for blur counts for resolution too: either is right).
And the clean keep-rate: the share of the clean files (kind ``clean``) that the build kept, and,
where variants are labelled ``kept`` too (a 2x upscale that still holds enough pixels), the share
of every file labelled ``kept``.
"""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

from manifests.errors import PortraitError
from manifests.schemas import CLIP_SCORES, KEPT
from manifests.verdicts import REASONS, native_detail_4x

FILTERS = REASONS  # no_face is a verdict reason too (a clip whose face is not human)


class LabelsError(PortraitError):
    """A labels file the evaluation cannot use (one line for the CLI)."""


@dataclass
class FileResult:
    file: str
    expected: str
    right: set[str]  # reasons that are right for rejecting this file
    kind: str
    status: str | None = None  # kept | rejected | error | None (not in the catalog)
    fired: set[str] = field(default_factory=set)
    scores: dict = field(default_factory=dict)  # the main clip's scores

    @property
    def correct(self) -> bool:
        if self.expected == KEPT:
            return self.status == KEPT
        return self.status != KEPT and bool(self.fired & self.right)


@dataclass
class EvalReport:
    files: list[FileResult]

    def filter_figures(self) -> dict[str, dict]:
        out = {}
        for f in FILTERS:
            fired = [r for r in self.files if f in r.fired]
            tp = sum(f in r.right for r in fired)
            pos = [r for r in self.files if f in r.right and r.expected != KEPT]
            hit = sum(r.status != KEPT and bool(r.fired & r.right) for r in pos)
            out[f] = {"fired": len(fired), "tp": tp, "positives": len(pos), "hits": hit,
                      "precision": tp / len(fired) if fired else None,
                      "recall": hit / len(pos) if pos else None}
        return out

    def keep_rate(self, kind: str | None = None) -> tuple[int, int]:
        clean = [r for r in self.files if r.expected == KEPT and (kind is None or r.kind == kind)]
        return sum(r.status == KEPT for r in clean), len(clean)

    def by_kind(self) -> dict[str, tuple[int, int]]:
        kinds: dict[str, list[FileResult]] = {}
        for r in self.files:
            kinds.setdefault(r.kind, []).append(r)
        return {k: (sum(r.correct for r in rs), len(rs)) for k, rs in sorted(kinds.items())}


def read_labels(path: Path) -> list[FileResult]:
    if not Path(path).is_file():
        raise LabelsError(f"labels file not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"file", "expected"} - set(reader.fieldnames or [])
        if missing:
            raise LabelsError(f"labels file {path} lacks column(s) {sorted(missing)}")
        rows = []
        for n, row in enumerate(reader, start=2):
            exp = (row["expected"] or "").strip()
            if exp not in ("kept", "rejected"):
                raise LabelsError(f"{path}:{n}: expected must be 'kept' or 'rejected', got {exp!r}")
            right = {r for r in (row.get("reasons") or "").split("|") if r}
            unknown = right - set(FILTERS)
            if unknown:
                raise LabelsError(f"{path}:{n}: unknown reason(s) {sorted(unknown)}")
            rows.append(FileResult(row["file"].strip(), exp, right, (row.get("kind") or exp).strip()))
    return rows


def evaluate(catalogs, labels: str | Path) -> EvalReport:
    """Compare the builds in ``catalogs`` (one OUT or several, e.g. a set built in parts) with
    the labels."""
    from manifests.catalog import Catalog

    files = read_labels(Path(labels))
    score_cols = ", ".join(f"c.{name}" for name, _ in CLIP_SCORES)
    sources: dict[str, dict] = {}
    clips: dict[str, dict] = {}
    for catalog in [catalogs] if isinstance(catalogs, (str, Path)) else catalogs:
        with Catalog(Path(catalog), read_only=True) as cat:
            sources.update({r["rel_path"]: r for r in cat.query(
                "SELECT source_id, rel_path, status, reasons FROM sources").to_pylist()})
            # The main clip of each source: the longest (most frames), first on ties.
            clips.update({r["source_id"]: r for r in cat.query(
                f"SELECT c.source_id, c.verdict, c.reasons AS clip_reasons, c.n_frames, {score_cols} FROM clips c "
                "QUALIFY row_number() OVER (PARTITION BY c.source_id ORDER BY c.n_frames DESC, c.clip_index) = 1"
            ).to_pylist()})
    for r in files:
        src = sources.get(r.file)
        if src is None:
            continue
        r.status = src["status"]
        r.fired = set() if r.status == KEPT else set(src["reasons"] or [])
        r.scores = clips.get(src["source_id"], {})
    return EvalReport(files)


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def print_report(report: EvalReport, out=None, all_files: bool = False) -> None:
    out = out or sys.stdout
    absent = [r.file for r in report.files if r.status is None]
    if absent:
        print(f"warning: {len(absent)} labelled file(s) not in the catalog, e.g. {absent[0]}", file=out)
    print(f"{'filter':<18} {'precision':>9} {'recall':>7}  fired  right  positives", file=out)
    for f, v in report.filter_figures().items():
        print(f"{f:<18} {_fmt(v['precision']):>9} {_fmt(v['recall']):>7}  {v['fired']:>5}  {v['tp']:>5}  "
              f"{v['hits']}/{v['positives']}", file=out)
    k, n = report.keep_rate("clean") if any(r.kind == "clean" for r in report.files) else report.keep_rate()
    print(f"clean keep-rate: {k}/{n} = {k / n:.3f}" if n else "clean keep-rate: no clean files", file=out)
    ka, na = report.keep_rate()
    if na != n:  # variants a curator keeps too (e.g. a 2x upscale still holding enough pixels)
        print(f"keep-rate of every file labelled kept: {ka}/{na} = {ka / na:.3f}", file=out)
    print("correct by kind: " + ", ".join(f"{kind} {c}/{n}" for kind, (c, n) in report.by_kind().items()), file=out)
    for f in FILTERS:
        wrong = [r.file for r in report.files if f in r.fired and f not in r.right]
        if wrong:
            print(
                f"{f} also fired on: {', '.join(wrong[:8])}"
                + (f" and {len(wrong) - 8} more" if len(wrong) > 8 else ""),
                file=out,
            )
    rows = [r for r in report.files if all_files or not r.correct]
    if rows:
        print(
            "\n" + ("every file" if all_files else "wrong files") + ": file, expected, got, fired, main clip scores",
            file=out,
        )
        for r in rows:
            s = r.scores
            sc = " ".join(f"{name}={_fmt(s.get(name))}" for name, _ in CLIP_SCORES if s.get(name) is not None)
            print(f"  {r.file}  {r.expected}/{'|'.join(sorted(r.right)) or '-'}  {r.status}  "
                  f"{'|'.join(sorted(r.fired)) or '-'}  {sc}", file=out)


# The scores the verdict thresholds act on, for ``print_ranges``.
RANGE_SCORES = ["face_px", "crop_source_px", "detail_4x", "mirror_4x", "native_detail_4x", "sharpness", "detail_train",
                "face_human", "face_conf", "face_person", "lighting_mean", "lighting_clipped", "occluded_share",
                "bg_motion"]
_DERIVED = {"native_detail_4x": native_detail_4x}  # what the resolution rule reads (manifests/verdicts.py)


def score_ranges(report: EvalReport, scores: list[str] | None = None) -> dict[str, dict[str, tuple]]:
    """Per score, per group of files (``kind:expected``), (n, min, median, max, file at min, file
    at max) of the main clip's score: the distributions the thresholds are set from."""
    out: dict[str, dict[str, tuple]] = {}
    for name in scores or RANGE_SCORES:
        groups: dict[str, list[tuple[float, str]]] = {}
        for r in report.files:
            v = _DERIVED[name](r.scores) if name in _DERIVED and r.scores else r.scores.get(name)
            if v is None or v != v:  # absent, null or NaN
                continue
            groups.setdefault(f"{r.kind}:{r.expected}", []).append((float(v), r.file))
        out[name] = {g: (len(v), v[0][0], v[len(v) // 2][0], v[-1][0], v[0][1], v[-1][1])
                     for g, v in ((g, sorted(v)) for g, v in sorted(groups.items()))}
    return out


def print_ranges(report: EvalReport, out=None, scores: list[str] | None = None) -> None:
    out = out or sys.stdout
    for name, groups in score_ranges(report, scores).items():
        print(f"\n{name} (main clip; n, min, median, max):", file=out)
        for g, (n, lo, med, hi, f_lo, f_hi) in groups.items():
            print(f"  {g:<24} {n:>4}  {_fmt(lo):>8} {_fmt(med):>8} {_fmt(hi):>8}   min {f_lo}  max {f_hi}", file=out)
