"""Dataset adapters reading their root from an object store (a local moto S3 server).

The nine dataset replicas are uploaded to a bucket; discovery from ``s3://`` must give exactly
what it gives from the same files in a local folder (source ids, specs, per-dataset counts,
error rows), with each source's path its full URI. One build of VFHQ and FFHQ from the bucket
must end with the catalog of the same build from local folders. A missing bucket or root is
one line; a metadata file that cannot be read is one error row and the rest is read.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from manifests import storage
from manifests.adapters.files import FileIndex
from pipeline.cli import main
from pipeline.config import DatasetEntry
from pipeline.sources import discover
from tests.dataset_replicas import BUILDERS, build_all_replicas
from tests.test_integrity import content
from tests.test_object_store import BUCKET, s3  # noqa: F401  (the moto server fixture, reused)

REMOTE = f"s3://{BUCKET}/datasets"


def _drop_links(root: Path) -> None:
    """Object stores have no links: the local copy compared with the bucket has none either
    (the link rules themselves are tested on local roots)."""
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            if path.is_symlink():
                path.unlink()


def upload_tree(root: Path, uri: str) -> None:
    loc = storage.resolve(uri)
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            path = Path(folder, name)
            loc.upload(path, path.relative_to(root).as_posix())


@pytest.fixture(scope="module")
def replicas(s3, fixtures_dir, tmp_path_factory) -> dict[str, Path]:  # noqa: F811
    roots = build_all_replicas(tmp_path_factory.mktemp("replicas"), fixtures_dir)
    for name, root in roots.items():
        _drop_links(root)
        upload_tree(root, f"{REMOTE}/{name}")
    return roots


def _spec(spec, root: str) -> dict:
    """A spec as a dict, its path relative to its root (checked to lie under it)."""
    d = dataclasses.asdict(spec)
    assert d["path"].startswith(root + "/"), (d["path"], root)
    d["path"] = d["path"][len(root) + 1:]
    return d


def _rooted(text: str, root: str) -> str:
    return text.replace(root, "ROOT")


def _discovered(name: str, root: str):
    found = discover([DatasetEntry(name=name, root=root)], out=None)
    real_root = root if root.startswith("s3://") else os.path.realpath(root)
    specs = [_spec(s, real_root) for s in found.specs]
    errors = [(_rooted(e.file, root), e.line, _rooted(e.message, root), e.kind) for e in found.metadata_errors]
    counts = {n: dataclasses.asdict(c) for n, c in found.counts.items()}
    for c in counts.values():
        c["unparseable_at"] = [_rooted(x, root) for x in c["unparseable_at"]]
    return specs, errors, counts, found


# (adapter, replica): every dataset adapter on its replica, and the plain folder adapter on one.
CASES = [(name, name) for name in sorted(BUILDERS)] + [("folder", "mead")]


@pytest.mark.parametrize("adapter,replica", CASES)
def test_discovery_from_the_bucket_is_discovery_from_a_folder(replicas, adapter, replica):
    local_specs, local_errors, local_counts, _ = _discovered(adapter, str(replicas[replica]))
    remote_specs, remote_errors, remote_counts, found = _discovered(adapter, f"{REMOTE}/{replica}")
    assert local_specs, adapter  # the replica yields sources at all
    assert remote_specs == local_specs  # ids, rel paths, identities, splits, labels, clips; same order
    assert remote_errors == local_errors
    assert remote_counts == local_counts
    for spec in found.specs:  # the build fetches sources by their full URI
        assert spec.path == f"{REMOTE}/{replica}/{spec.rel_path}"


def _catalog(out: Path, roots: dict) -> dict:
    """The catalog as a user reads it, the dataset roots named alike in error messages."""
    got = content(out, ("run_id", "path"))
    for row in got["errors"]:
        for name, r in roots.items():
            row["message"] = row["message"].replace(str(r), f"ROOT/{name}")
    return got


def test_a_build_from_the_bucket_is_the_build_from_folders(replicas, tmp_path, capsys):
    sets = [x for s in ("ray.executor=inline", "sampling.fps=2", "features.enabled=false", "eval_split.n=0")
            for x in ("--set", s)]
    local, remote = tmp_path / "local", tmp_path / "remote"
    names = ("vfhq", "ffhq")
    assert main(["build", *[x for n in names for x in ("--dataset", f"{n}={replicas[n]}")],
                 "--out", str(local), "--no-progress", *sets]) == 0
    assert main(["build", *[x for n in names for x in ("--dataset", f"{n}={REMOTE}/{n}")],
                 "--out", str(remote), "--no-progress", *sets]) == 0
    want = _catalog(local, {n: replicas[n] for n in names})
    got = _catalog(remote, {n: f"{REMOTE}/{n}" for n in names})
    assert got == want
    assert {r["status"] for r in got["sources"]} & {"kept", "rejected"}  # media were decoded
    from manifests.catalog import Catalog

    with Catalog(remote, read_only=True) as cat:
        paths = [r["path"] for r in cat.query("SELECT path FROM sources").to_pylist()]
    assert paths and all(p.startswith(f"{REMOTE}/") for p in paths)


def test_a_missing_bucket_or_root_is_one_line(s3, tmp_path, capsys):  # noqa: F811
    for root, says in (("s3://no-such-bucket/VFHQ", "bucket 'no-such-bucket' does not exist"),
                       (f"{REMOTE}/nothing-here", f"dataset root not found: {REMOTE}/nothing-here")):
        rc = main(["build", "--dataset", f"vfhq={root}", "--out", str(tmp_path / "out"), "--no-progress",
                   "--set", "ray.executor=inline"])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert rc == 2 and len(err) == 1 and err[0].startswith("portrait: error:") and says in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_metadata_file_that_cannot_be_read_is_one_error_row(replicas, monkeypatch):
    # A clip txt removed after the listing (or refused by the store) and a JSON that is not text.
    vfhq, ffhq = f"{REMOTE}/vfhq-gone", f"{REMOTE}/ffhq-garbled"
    upload_tree(replicas["vfhq"], vfhq)
    upload_tree(replicas["ffhq"], ffhq)
    storage.resolve(ffhq).write_bytes("ffhq-dataset-v2.json", b"\xff\xfe{not text")
    gone = "meta_info/train/Clip+K_-9xq2ZmQw+P0+C0+F30-89.txt"  # one of two clips of a raw video
    real_scan = FileIndex.scan.__func__

    def scan(cls, root, dataset, *args, **kwargs):
        index = real_scan(cls, root, dataset, *args, **kwargs)
        if str(root) == vfhq:
            storage.resolve(vfhq).delete(gone)
        return index

    monkeypatch.setattr(FileIndex, "scan", classmethod(scan))
    found = discover([DatasetEntry(name="vfhq", root=vfhq), DatasetEntry(name="ffhq", root=ffhq)], out=None)
    unreadable = {e.file: e for e in found.metadata_errors if "cannot read" in e.message}
    assert set(unreadable) == {f"{vfhq}/{gone}", f"{ffhq}/ffhq-dataset-v2.json"}
    for e in unreadable.values():
        assert "\n" not in e.describe() and e.kind == "unparseable", e.describe()
    # The other clips are read (the raw video keeps its other clip); the unread file is counted.
    raw = next(s for s in found.specs if s.rel_path == "videos/K_-9xq2ZmQw.mkv")
    assert [c.key for c in raw.clips] == ["Clip+K_-9xq2ZmQw+P1+C1+F120-209"]
    assert found.counts["vfhq"].sources == 3 and found.counts["vfhq"].unparseable == 2
    assert found.counts["ffhq"].sources == 0 and found.counts["ffhq"].unparseable == 1
