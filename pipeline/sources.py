"""Gather the build's sources from its datasets (adapters), with caps, in a stable order."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from manifests.adapters import MetadataError, SourceSpec, make_adapter

from .config import BuildConfig, ConfigError, DatasetEntry


@dataclass
class Discovery:
    specs: list[SourceSpec] = field(default_factory=list)
    metadata_errors: list[MetadataError] = field(default_factory=list)
    found: Counter = field(default_factory=Counter)  # per dataset, before caps
    duplicates: int = 0


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
        if not Path(e.root).exists():
            raise ConfigError(f"dataset root not found: {e.root}")
    # Folder datasets are named after their folder: two different folders of the same name would
    # give the same source ids, and the second would be silently skipped as a duplicate.
    named: dict[str, str] = {}
    for e in entries:
        if e.name == "folder":
            name = e.options.get("dataset") or Path(e.root).resolve().name
            root = str(Path(e.root).resolve())
            if named.setdefault(name, root) != root:
                raise ConfigError(f"two input folders are both named {name!r}: give one another name "
                                  f"(config datasets: options: {{dataset: NAME}})")
    return entries


def discover(entries: list[DatasetEntry], seed: int = 0) -> Discovery:
    out = Discovery()
    seen: set[str] = set()
    for entry in entries:
        try:
            adapter = make_adapter(entry.name, entry.root, **entry.options)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"dataset {entry.name}: {e}") from None
        specs = []
        for item in adapter.iter_sources():
            if isinstance(item, MetadataError):
                out.metadata_errors.append(item)
            else:
                specs.append(item)
        out.found[adapter_dataset(specs, entry)] += len(specs)
        if entry.cap is not None and len(specs) > entry.cap:
            # A seeded sample, so a capped build is reproducible and unbiased by file order.
            specs = sorted(random.Random(seed).sample(specs, entry.cap), key=lambda s: s.rel_path)
        for s in specs:
            if s.source_id in seen:
                out.duplicates += 1
                continue
            seen.add(s.source_id)
            out.specs.append(s)
    return out


def adapter_dataset(specs: list[SourceSpec], entry: DatasetEntry) -> str:
    return specs[0].dataset if specs else entry.name
