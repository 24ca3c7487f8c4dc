"""`portrait query` and `portrait report` work on OUT while a build of it is running.

The build (inline, in a thread of this process) is held on its second source until the
queries, run as separate processes as a user would, have answered: they must see the running
run and the first source, committed and published; after the build they see both.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline import build as build_mod
from pipeline.config import load_config
from pipeline.sources import dataset_entries, discover
from stages.curate import CurateStage

REPO = Path(__file__).resolve().parents[1]
HELD, RELEASE = threading.Event(), threading.Event()


class HeldOnSecond(CurateStage):
    """Curates as usual, but waits on its second source until the test releases it."""

    calls = 0

    def process(self, work):
        HeldOnSecond.calls += 1
        if HeldOnSecond.calls == 2:
            HELD.set()
            RELEASE.wait(timeout=300)  # never hang the suite
        return super().process(work)


def portrait(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.timeout(600)
def test_queries_answer_while_a_build_runs(media_dir, tmp_path, monkeypatch):
    media = tmp_path / "media"
    media.mkdir()
    for name in ("s1.jpg", "s12.jpg"):
        shutil.copy(media_dir / "images" / name, media / name)
    out = tmp_path / "out"
    real_plans = build_mod.stage_plans

    def held_plans(*args, **kwargs):
        plans = real_plans(*args, **kwargs)
        name, _, curate_kwargs = plans[0].steps[0]
        plans[0].steps[0] = (name, HeldOnSecond, curate_kwargs)
        return plans

    monkeypatch.setattr(build_mod, "stage_plans", held_plans)
    HeldOnSecond.calls = 0
    HELD.clear(), RELEASE.clear()
    # A tiny shard target: each image is a unit of its own, so the first is committed while the
    # second is held (units of several sources commit together).
    config = load_config(None, {"ray.executor": "inline", "features.enabled": False, "storage.publish_every_s": 0,
                                 "storage.commit_every_s": 0, "storage.shard_target_mb": 0.001})
    discovery = discover(dataset_entries(config, [str(media)], []))
    failure: list[BaseException] = []

    def run():
        try:
            build_mod.build(config, out, discovery, progress=False)
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            failure.append(e)
            HELD.set()

    builder = threading.Thread(target=run)
    builder.start()
    try:
        assert HELD.wait(timeout=300) and not failure, failure
        during = portrait("query", "--catalog", str(out / "catalog.duckdb"), "--csv", str(tmp_path / "during.csv"),
                          "SELECT (SELECT list(status) FROM runs) AS runs, count(*) AS sources FROM sources")
        assert during.returncode == 0, during.stderr[-2000:]
        assert (tmp_path / "during.csv").read_text().splitlines()[1:] == ['"[""running""]",1']
        report = portrait("report", "--catalog", str(out))
        assert report.returncode == 0, report.stderr[-2000:]
        assert builder.is_alive()  # both answered while the build was still running
    finally:
        RELEASE.set()
        builder.join(timeout=300)
    assert not failure, failure
    after = portrait("query", "--catalog", str(out), "--csv", str(tmp_path / "after.csv"),
                     "SELECT (SELECT list(status) FROM runs) AS runs, count(*) AS sources FROM sources")
    assert after.returncode == 0, after.stderr[-2000:]
    assert (tmp_path / "after.csv").read_text().splitlines()[1:] == ['"[""finished""]",2']
