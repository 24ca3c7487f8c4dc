"""Gather the build's sources from its datasets (adapters), with caps, in a stable order, and
account for every file and metadata row: one line per dataset at the end (also stored in
``runs.notes_json`` under ``discovery``)."""
from __future__ import annotations

import os
import random
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from manifests.adapters import MetadataError, SourceSpec, make_adapter
from manifests.adapters.base import MISSING_FILE, NO_METADATA, OUTSIDE_ROOT, UNPARSEABLE
from manifests.storage import is_uri

from .config import BuildConfig, ConfigError, DatasetEntry

_EXAMPLES = 20  # file:line (or file) examples kept per count


@dataclass
class DatasetCounts:
    """What discovery made of one dataset: every media file and metadata row is in one count."""

    files_found: int = 0  # media files on disk in the folders the layout uses
    sources: int = 0  # sources made (before caps)
    no_metadata: int = 0  # media files no metadata row (or path rule) covers
    rows_without_file: int = 0  # metadata rows whose media file is not on disk
    unparseable: int = 0  # metadata rows (or files) that cannot be read
    rows_out_of_root: int = 0  # metadata rows naming a path outside the dataset root
    skipped: dict[str, int] = field(default_factory=dict)  # files not listed, by reason
    unparseable_at: list[str] = field(default_factory=list)  # file:line of the first ones
    no_metadata_examples: list[str] = field(default_factory=list)

    def line(self, dataset: str) -> str:
        text = (f"{dataset}: {self.files_found} files found, {self.sources} sources, {self.no_metadata} files without "
                f"metadata, {self.rows_without_file} metadata rows without a file, {self.unparseable} unparseable rows")
        if self.unparseable_at:
            more = f", +{self.unparseable - 3} more" if self.unparseable > 3 else ""
            text += " (" + ", ".join(self.unparseable_at[:3]) + more + ")"
        if self.rows_out_of_root:
            text += f", {self.rows_out_of_root} rows leaving the root"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return text

    def add(self, other: DatasetCounts) -> None:
        """Fold in another root of the same dataset (``--dataset hdtf=A --dataset hdtf=B``)."""
        for name in ("files_found", "sources", "no_metadata", "rows_without_file", "unparseable", "rows_out_of_root"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped = dict(Counter(self.skipped) + Counter(other.skipped))
        self.unparseable_at = (self.unparseable_at + other.unparseable_at)[:_EXAMPLES]
        self.no_metadata_examples = (self.no_metadata_examples + other.no_metadata_examples)[:_EXAMPLES]


def stored_discovery_lines(notes_json: str | None) -> list[str]:
    """The per-dataset lines of a build, from its ``runs.notes_json`` (for ``portrait report``)."""
    import json

    stored = (json.loads(notes_json) if notes_json else {}).get("discovery") or {}
    return [DatasetCounts(**counts).line(name) for name, counts in stored.items()]


def count_dataset(adapter, specs: list[SourceSpec], errors: list[MetadataError]) -> DatasetCounts:
    """Counts of one adapter's run (its file index, the sources and errors it yielded)."""
    files = getattr(adapter, "files", None)
    c = DatasetCounts(sources=len(specs))
    if files is not None:
        c.files_found = files.media_count()
        unclaimed = files.unclaimed()
        c.no_metadata = len(unclaimed)
        c.no_metadata_examples = unclaimed[:_EXAMPLES]
        c.skipped = dict(sorted(files.skipped.items()))
    problems = {id(e) for e in getattr(files, "problems", [])}
    for e in errors:
        if id(e) in problems or e.kind == NO_METADATA:
            continue  # counted in skipped / no_metadata already
        if e.kind == MISSING_FILE:
            c.rows_without_file += 1
        elif e.kind == OUTSIDE_ROOT:
            c.rows_out_of_root += 1
        elif e.kind == UNPARSEABLE:
            c.unparseable += 1
            if len(c.unparseable_at) < _EXAMPLES:
                c.unparseable_at.append(f"{e.file}:{e.line}" if e.line is not None else e.file)
    return c


@dataclass
class Discovery:
    specs: list[SourceSpec] = field(default_factory=list)
    metadata_errors: list[MetadataError] = field(default_factory=list)
    found: Counter = field(default_factory=Counter)  # per dataset, before caps
    duplicates: int = 0
    counts: dict[str, DatasetCounts] = field(default_factory=dict)  # per dataset

    def counts_json(self) -> dict:
        """The per-dataset counts as stored in ``runs.notes_json['discovery']``."""
        return {name: asdict(c) for name, c in self.counts.items()}


def dataset_entries(config: BuildConfig, inputs: list[str], datasets: list[str]) -> list[DatasetEntry]:
    """The config's datasets plus ``--input DIR`` (folder adapter) and ``--dataset NAME=ROOT``."""
    entries = list(config.datasets)
    for d in inputs:
        entries.append(DatasetEntry(name="folder", root=d))
    for item in datasets:
        if "=" not in item:
            raise ConfigError(f"--dataset expects NAME=ROOT, got {item!r}")
        name, root = item.split("=", 1)
        entries.append(DatasetEntry(name=name.strip().lower(), root=root))
    if not entries:
        raise ConfigError("nothing to build: give --input DIR, --dataset NAME=ROOT, or datasets in the config")
    for e in entries:
        if is_uri(e.root):
            _check_remote_root(e)
        elif not Path(e.root).exists():
            raise ConfigError(f"dataset root not found: {e.root}")
    # Folder datasets are named after their folder: two different folders of the same name would
    # give the same source ids, and the second would be silently skipped as a duplicate.
    named: dict[str, str] = {}
    for e in entries:
        if e.name == "folder":
            # realpath, not Path.resolve: it never raises on a link loop (Python 3.11 does).
            root = e.root.rstrip("/") if is_uri(e.root) else os.path.realpath(e.root)
            name = e.options.get("dataset") or os.path.basename(root)
            if named.setdefault(name, root) != root:
                raise ConfigError(f"two input folders are both named {name!r}: give one another name "
                                  f"(config datasets: options: {{dataset: NAME}})")
    return entries


def _check_remote_root(entry: DatasetEntry) -> None:
    """A dataset on an object store (any adapter: they list, read metadata and probe headers
    through ``manifests.storage``): the server must answer and the root hold objects, checked
    now so that a wrong bucket or prefix is one line before anything starts."""
    from manifests.storage import StorageUnavailable, resolve

    try:
        loc = resolve(entry.root)
        loc.check()
        found = loc.is_dir()
    except StorageUnavailable as e:
        raise ConfigError(str(e)) from None
    except OSError as e:
        raise ConfigError(f"cannot list {entry.root}: {str(e).splitlines()[0]}") from None
    if not found:
        raise ConfigError(f"dataset root not found: {entry.root}")


def _read(entry: DatasetEntry, counted=lambda n: None):
    from manifests.storage import StorageUnavailable

    try:
        try:
            adapter = make_adapter(entry.name, entry.root, **entry.options)
        except (ValueError, TypeError, StorageUnavailable) as e:
            raise ConfigError(f"dataset {entry.name}: {e}") from None
        items = []
        for item in adapter.iter_sources():
            items.append(item)
            if isinstance(item, SourceSpec):
                counted(1)
    except OSError as e:
        # A store that stops answering midway: files that cannot be read or listed are error
        # rows, so only an adapter's test for its metadata files or folders gets here. One
        # line, not a traceback or a half-read dataset.
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"dataset {entry.name}: cannot read {entry.root}: {reason}") from None
    return adapter, items


_STDERR = object()  # stderr as it is at call time (a default argument would bind it at import)


def discover(entries: list[DatasetEntry], seed: int = 0, out: TextIO | None = _STDERR,
             progress: bool = False) -> Discovery:
    """Sources of every dataset. Datasets are read in parallel threads (listing folders and
    reading headers wait on the disk; each adapter reads its headers in a thread pool too), then
    gathered in the entries' order, so the result does not depend on timing. ``progress``: a
    running count of the sources found on stderr (a large dataset takes minutes to list).
    Ends with one line per dataset on ``out`` (None: quiet)."""
    from tqdm import tqdm

    result = Discovery()
    seen: set[str] = set()
    workers = max(1, min(4, len(entries)))
    # Shown only once listing takes a while (delay): a quick discovery, or one that fails at
    # once, prints only its lines.
    with tqdm(desc="discover", unit=" sources", disable=not progress, leave=False, delay=1.0, dynamic_ncols=True,
              file=sys.stderr) as bar, ThreadPoolExecutor(max_workers=workers) as pool:
        read = list(pool.map(lambda e: _read(e, bar.update), entries))
    for entry, (adapter, items) in zip(entries, read):
        specs = [i for i in items if isinstance(i, SourceSpec)]
        errors = [i for i in items if isinstance(i, MetadataError)]
        result.metadata_errors.extend(errors)
        name = adapter_dataset(specs, entry, adapter)
        result.found[name] += len(specs)
        counts = count_dataset(adapter, specs, errors)
        if name in result.counts:
            result.counts[name].add(counts)
        else:
            result.counts[name] = counts
        if entry.cap is not None and len(specs) > entry.cap:
            # A seeded sample, so a capped build is reproducible and unbiased by file order.
            specs = sorted(random.Random(seed).sample(specs, entry.cap), key=lambda s: s.rel_path)
        for s in specs:
            sid = s.source_id
            if sid in seen:
                result.duplicates += 1
                continue
            seen.add(sid)
            result.specs.append(s)
    if out is _STDERR:
        out = sys.stderr
    if out is not None:
        for name, c in result.counts.items():
            print(c.line(name), file=out)
    return result


def adapter_dataset(specs: list[SourceSpec], entry: DatasetEntry, adapter=None) -> str:
    if specs:
        return specs[0].dataset
    return getattr(adapter, "dataset", None) or entry.name
