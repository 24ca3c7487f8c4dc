"""Nothing lost, nothing silent: missing and tampered shards, cleanup of only what the build
wrote, retries of sources lost to the infrastructure, full disks, dead runs.

Builds run inline (`ray.executor=inline`) on one fixture video, two photographs and a broken
file; each test works on a copy of one reference build.
"""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from manifests.catalog import Catalog
from manifests.shards import SHARD_DIR
from pipeline import ray_runner
from pipeline.build import build
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.sources import dataset_entries, discover

INLINE = {"ray.executor": "inline", "storage.shard_target_mb": 0.001}  # one shard per kept source


def run_build(inputs: Path, out: Path, retry_errors: bool = False, **overrides):
    config = load_config(None, {**INLINE, **overrides})
    return build(config, out, discover(dataset_entries(config, [str(inputs)], [])), progress=False,
                 retry_errors=retry_errors)


def content(out, source_columns_left_out: tuple[str, ...] = ("run_id",)) -> dict:
    """Everything a user reads, without run ids, times or shard grouping (and without the
    sources' columns named, e.g. where the media were)."""
    with Catalog(out, read_only=True) as cat:
        return {
            "sources": cat.query(f"SELECT * EXCLUDE ({', '.join(source_columns_left_out)}) FROM sources "
                                 "ORDER BY source_id").to_pylist(),
            "clips": cat.query("SELECT * EXCLUDE (run_id) FROM clips ORDER BY clip_id").to_pylist(),
            "frames": cat.query("SELECT clip_id, frame_index, view, md5(jpeg::BLOB) AS h, landmarks AS lm "
                                "FROM frames ORDER BY ALL").to_pylist(),
            "errors": cat.query("SELECT source_id, stage, message, kind FROM errors ORDER BY ALL").to_pylist(),
        }


@pytest.fixture(scope="module")
def inputs(media_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("integrity") / "media"
    folder.mkdir()
    for name in ["videos/d0.mp4", "images/s1.jpg", "images/s12.jpg"]:
        shutil.copy(media_dir / name, folder / Path(name).name)
    (folder / "broken.mp4").write_bytes(b"not a video")
    return folder


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("reference") / "out"
    run_build(inputs, out)
    return out, content(out)


@pytest.fixture
def copy(reference, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    return out


def shard_of(out: Path, name: str) -> Path:
    with Catalog(out, read_only=True) as cat:
        rows = cat.query("SELECT sh.path FROM shards sh JOIN sources s ON list_contains(sh.source_ids, s.source_id) "
                         "WHERE s.rel_path = ?", [name]).to_pylist()
    assert len(rows) == 1
    return out / rows[0]["path"]


def test_a_missing_shard_is_named_and_verify_repair_then_build_restores_the_reference(
        inputs, reference, copy, capsys, caplog):
    lost = shard_of(copy, "d0.mp4")
    lost.unlink()
    # A query that does not read frames opens no shard, so it has nothing to say about them.
    assert main(["query", "--catalog", str(copy), "SELECT count(*) AS n FROM clips"]) == 0
    assert not [r for r in caplog.records if "missing" in r.getMessage()]
    assert main(["query", "--catalog", str(copy), "SELECT DISTINCT source_id FROM frames"]) == 0
    warning = [r.getMessage() for r in caplog.records if "missing" in r.getMessage()]
    assert len(warning) == 1 and lost.name in warning[0] and "d0.mp4" in warning[0]
    assert main(["report", "--catalog", str(copy)]) == 0
    capsys.readouterr()

    assert main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert f"BAD {SHARD_DIR}/{lost.name}: missing" in out and "d0.mp4" in out
    assert main(["verify", str(copy), "--repair"]) == 0
    with Catalog(copy, read_only=True) as cat:
        assert len(cat.done_source_ids()) == 3  # d0.mp4 is to be redone, nothing else

    stats = run_build(inputs, copy)
    assert stats.skipped == 3 and sum(stats.sources.values()) == 1
    assert content(copy) == reference[1]
    capsys.readouterr()
    assert main(["verify", str(copy)]) == 0


@pytest.mark.parametrize("damage", ["deleted", "footer byte flipped"])
def test_a_resume_redoes_the_sources_of_a_missing_or_damaged_shard(inputs, reference, copy, damage, capsys, caplog):
    shard = shard_of(copy, "d0.mp4")
    if damage == "deleted":
        shard.unlink()
    else:
        data = bytearray(shard.read_bytes())
        data[-40] ^= 0x01  # inside the footer (the FileMetaData), same size
        shard.write_bytes(bytes(data))
        # No command reads it silently: frames leaves it out (with its rows), with one line.
        with Catalog(copy, read_only=True) as cat:
            n = cat.query("SELECT count(*) AS n FROM frames").to_pylist()[0]["n"]
            expected = cat.query("SELECT sum(rows) AS n FROM shards WHERE path != ?",
                                 [f"{SHARD_DIR}/{shard.name}"]).to_pylist()[0]["n"]
            assert n == expected and list(cat.unavailable) == [f"{SHARD_DIR}/{shard.name}"]
    argv = ["build", "--input", str(inputs), "--out", str(copy), "--no-progress",
            *[a for k, v in INLINE.items() for a in ("--set", f"{k}={v}")]]
    assert main(argv) == 0
    warned = [r.getMessage() for r in caplog.records if "this build redoes" in r.getMessage()]
    assert len(warned) == 1 and shard.name in warned[0] and "1 source(s)" in warned[0]
    assert "Traceback" not in capsys.readouterr().err
    assert content(copy) == reference[1]
    with Catalog(copy, read_only=True) as cat:
        assert [r["status"] for r in cat.query("SELECT status FROM runs").to_pylist()] == ["finished", "finished"]
        redone = cat.query("SELECT s.rel_path FROM sources s WHERE s.run_id = "
                           "(SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1)").to_pylist()
    assert redone == [{"rel_path": "d0.mp4"}]
    assert main(["verify", str(copy)]) == 0


def test_a_flipped_byte_is_reported_by_verify(copy, capsys):
    shard = shard_of(copy, "d0.mp4")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside a page: size and footer are as recorded
    shard.write_bytes(bytes(data))
    assert main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert f"BAD {SHARD_DIR}/{shard.name}: sha256" in out and "d0.mp4" in out
    assert out.count("BAD ") == 1


def test_a_broken_footer_leaves_the_catalog_usable(copy, capsys, caplog):
    shard = shard_of(copy, "s1.jpg")
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x7F  # the footer's length (4 bytes before the closing "PAR1"), same size
    shard.write_bytes(bytes(data))
    assert main(["report", "--catalog", str(copy)]) == 0
    assert any(shard.name in r.getMessage() and "s1.jpg" in r.getMessage() for r in caplog.records)
    with Catalog(copy, read_only=True) as cat:
        assert cat.query("SELECT count(DISTINCT source_id) AS n FROM frames").to_pylist()[0]["n"] == 2
        assert cat.unavailable and "footer" in cat.unavailable[f"{SHARD_DIR}/{shard.name}"]


def test_cleanup_removes_only_what_an_interrupted_build_announced(inputs, reference, copy, caplog):
    folder = copy / SHARD_DIR
    (folder / "NOTES.txt").write_text("my notes\n")
    foreign = folder / "from-elsewhere.parquet"
    shutil.copy(shard_of(copy, "s1.jpg"), foreign)
    # What a build killed while writing a shard leaves: its pending marker and a partial file.
    stale = "20260101T000000-abcdef-00003"
    (folder / f"{stale}.pending.json").write_text('{"format": "portrait-pending-shard/1", "shard_id": "')
    (folder / f"{stale}.parquet.partial").write_bytes(b"PAR1 half")
    run_build(inputs, copy)
    assert (folder / "NOTES.txt").read_text() == "my notes\n" and foreign.is_file()
    assert not list(folder.glob(f"{stale}*")) and not list(folder.glob("*.pending.json"))
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "NOTES.txt" in warned and "from-elsewhere.parquet" in warned
    assert content(copy) == reference[1]


def test_a_lost_catalog_with_shards_is_refused_in_one_line(inputs, copy, capsys):
    (copy / "catalog.duckdb").unlink()
    shards = sorted(p.name for p in (copy / SHARD_DIR).iterdir())
    rc = main(["build", "--input", str(inputs), "--out", str(copy), "--no-progress", "--set", "ray.executor=inline"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("portrait:")]
    assert rc == 2 and len(err) == 1 and "catalog.duckdb is missing" in err[0]
    assert sorted(p.name for p in (copy / SHARD_DIR).iterdir()) == shards
    assert not (copy / "catalog.duckdb").exists()


def test_sources_lost_with_their_worker_are_retried_by_the_next_build(inputs, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = ray_runner.run_inline

    def losing_d0(specs, plans):  # the worker running d0.mp4 dies: its row never comes back
        yield from real([s for s in specs if "d0.mp4" not in s], plans)

    monkeypatch.setattr(ray_runner, "run_inline", losing_d0)
    stats = run_build(inputs, out)
    assert stats.lost == 1
    with Catalog(out, read_only=True) as cat:
        lost = cat.query("SELECT s.rel_path, s.status, e.stage, e.kind FROM sources s JOIN errors e USING (source_id) "
                         "WHERE e.kind = 'infra'").to_pylist()
    assert lost == [{"rel_path": "d0.mp4", "status": "error", "stage": "worker", "kind": "infra"}]
    monkeypatch.setattr(ray_runner, "run_inline", real)
    stats = run_build(inputs, out)
    assert stats.retried == 1 and stats.skipped == 3
    assert content(out) == reference[1]


def test_retry_errors_redoes_data_errors_only_when_asked(inputs, reference, copy):
    assert run_build(inputs, copy).skipped == 4
    stats = run_build(inputs, copy, retry_errors=True)
    assert stats.retried == 1 and stats.sources == {"error": 1}
    with Catalog(copy, read_only=True) as cat:
        rows = cat.query(
            "SELECT e.kind, e.run_id = (SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1) AS redone "
            "FROM errors e "
            "JOIN sources s USING (source_id) WHERE s.rel_path = 'broken.mp4'"
        ).to_pylist()
    assert rows == [{"kind": "data", "redone": True}]
    assert content(copy) == reference[1]


def test_a_run_that_died_is_marked_interrupted_by_the_next_start(inputs, copy):
    with Catalog(copy) as cat:  # as a `kill -9` leaves it
        cat.con.execute("UPDATE runs SET status = 'running', finished_at = NULL")
    run_build(inputs, copy)
    with Catalog(copy, read_only=True) as cat:
        runs = cat.query("SELECT status FROM runs ORDER BY started_at").to_pylist()
    assert [r["status"] for r in runs] == ["interrupted", "finished"]


def test_a_full_disk_is_one_line_and_a_resume_matches_the_reference(inputs, reference, tmp_path, monkeypatch, capsys):
    from pipeline import writer as writer_mod

    out = tmp_path / "out"
    real = writer_mod.write_shard
    calls = {"n": 0}

    def second_fails(table, out_dir, shard_id, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            # As pyarrow fails when the disk fills: after the marker, with a partial file written.
            (Path(out_dir) / SHARD_DIR / f"{shard_id}.pending.json").write_text("{}")
            (Path(out_dir) / SHARD_DIR / f"{shard_id}.parquet.partial").write_bytes(b"PAR1")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(table, out_dir, shard_id, *args, **kwargs)

    monkeypatch.setattr(writer_mod, "write_shard", second_fails)
    argv = ["build", "--input", str(inputs), "--out", str(out), "--no-progress", "--set", "ray.executor=inline",
            "--set", "storage.shard_target_mb=0.001"]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("portrait:")]
    assert len(err) == 1 and "No space left on device" in err[0]
    with Catalog(out, read_only=True) as cat:
        assert cat.latest_run()["status"] == "failed"
        assert cat.unavailable == {}  # nothing committed that is not on disk
        assert cat.query("SELECT count(*) AS n FROM shards").to_pylist()[0]["n"] == 1
    monkeypatch.setattr(writer_mod, "write_shard", real)
    assert main(argv) == 0
    assert content(out) == reference[1]
    assert not list((out / SHARD_DIR).glob("*.partial")) and not list((out / SHARD_DIR).glob("*.pending.json"))


def test_a_failed_final_checkpoint_is_never_reported_as_success(inputs, copy, monkeypatch, capsys):
    from manifests.catalog import StorageError

    def failing(self):
        raise StorageError(f"cannot write the catalog {self.path}: IO Error: No space left on device")

    monkeypatch.setattr(Catalog, "checkpoint", failing)
    rc = main(["build", "--input", str(inputs), "--out", str(copy), "--no-progress", "--set", "ray.executor=inline"])
    captured = capsys.readouterr()
    assert rc == 2 and "No space left on device" in captured.err and "Per dataset" not in captured.out


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs (needs the right to mount: root, or CAP_SYS_ADMIN)."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if run.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({(run.stderr or 'mount failed').strip().splitlines()[0]})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("free_mb", [1.0, 3.0])
def test_a_real_full_disk_is_one_line_and_a_resume_matches_the_reference(inputs, reference, small_disk, capsys,
                                                                          free_mb):
    import os

    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # leave free_mb: the catalog or a shard runs out of space
        f.write(b"\0" * (os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize - int(free_mb * 2**20)))
    out = small_disk / "out"
    argv = ["build", "--input", str(inputs), "--out", str(out), "--no-progress", "--set", "ray.executor=inline",
            "--set", "storage.shard_target_mb=0.001"]
    assert main(argv) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("portrait:")]
    assert len(err) == 1 and "No space left on device" in err[0], err
    print(f"{free_mb} MB free: {err[0]}")
    filler.unlink()
    if (out / "catalog.duckdb").exists():
        assert main(["verify", str(out)]) == 0  # whatever was committed is on disk, whole
    assert main(argv) == 0
    assert content(out) == reference[1]


def test_repair_removes_only_files_a_build_names(tmp_path):
    """A damaged shard is removed only when its name is one a build gives; a user's file the
    catalog happens to name (a hand-edited catalog) is left where it is."""
    from manifests.shards import remove_build_shard

    (tmp_path / SHARD_DIR).mkdir()
    ours = tmp_path / SHARD_DIR / "20261207T124811-cfcf44-00002-b364de.parquet"
    theirs = tmp_path / SHARD_DIR / "my-notes.parquet"
    outside = tmp_path / "20261207T124811-cfcf44-00003-aaaaaa.parquet"
    for f in (ours, theirs, outside):
        f.write_bytes(b"PAR1 damaged")
    assert remove_build_shard(tmp_path, f"{SHARD_DIR}/{ours.name}") and not ours.exists()
    assert not remove_build_shard(tmp_path, f"{SHARD_DIR}/{theirs.name}") and theirs.exists()
    assert not remove_build_shard(tmp_path, outside.name) and outside.exists()
