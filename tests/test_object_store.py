"""Builds from and to an object store over the real S3 wire protocol (a local moto server).

A video and two photographs are uploaded to a bucket and built s3:// -> s3://: the first build
is SIGKILLed after one unit was committed and while the next unit's shard sat written but not
committed; the resumed build (on Ray, in a process of its own: its workers write the shards)
must end with exactly the sources, clips and frame bytes of a local build of the same files,
nothing uncommitted left on the store, and the remote catalog must answer `portrait query` and
`portrait verify`.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from manifests import storage
from manifests.catalog import Catalog
from pipeline.cli import main
from tests.local_cluster import free_ports
from tests.test_integrity import content as catalog_content

REPO = Path(__file__).resolve().parents[1]
BUCKET = "portrait"
FILES = ["videos/d0.mp4", "images/s1.jpg", "images/s12.jpg"]
SETTINGS = ["features.enabled=false", "storage.shard_target_mb=0.001", "storage.publish_every_s=0",
            "storage.commit_every_s=0"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 (its own port), the AWS_* environment pointing at it,
    and one bucket; stopped, and the environment restored, at the end."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    port = free_ports(1)[0]
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115 - the server's, for its lifetime
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    env_patch = pytest.MonkeyPatch()
    for k, v in env.items():
        env_patch.setenv(k, v)
    storage.s3_filesystem.cache_clear()
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("moto_server exited at start")
                time.sleep(0.1)
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield env
    finally:
        proc.kill()
        proc.wait()
        log.close()
        env_patch.undo()
        storage.s3_filesystem.cache_clear()


@pytest.fixture(scope="module")
def media(media_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("s3media") / "media"
    folder.mkdir()
    for name in FILES:
        shutil.copy(media_dir / name, folder / Path(name).name)
    return folder


def upload(folder: Path, uri: str) -> None:
    loc = storage.resolve(uri)
    for f in sorted(folder.iterdir()):
        loc.upload(f, f.name)


def content(out) -> dict:
    """What a user reads, without run ids, times, shard grouping or where the media were."""
    return catalog_content(out, ("run_id", "path"))


# Run in a subprocess: the build is SIGKILLed on its second commit, before it is made (that
# unit's shard is on the store, announced by its marker, named by no catalog).
_KILLED_BUILD = textwrap.dedent("""
    import os, signal, sys
    from pipeline import build
    real, calls = build.Committer.add, []
    def add(self, row):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, row)
    build.Committer.add = add
    from pipeline.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def portrait(*args: str, timeout: int = 420) -> subprocess.CompletedProcess:
    """The CLI in a process of its own (a Ray instance started inside pytest carries the state
    of earlier tests); it gets this environment, the S3 endpoint included."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, RAY_ADDRESS=""))


@pytest.mark.timeout(900)
def test_a_killed_s3_build_resumes_to_the_local_build(s3, media, tmp_path, capsys):
    local = tmp_path / "local"
    sets = [x for s in SETTINGS for x in ("--set", s)]
    assert main(["build", "--input", str(media), "--out", str(local), "--no-progress",
                 "--set", "ray.executor=inline", *sets]) == 0
    upload(media, f"s3://{BUCKET}/media")
    src, out = f"s3://{BUCKET}/media", f"s3://{BUCKET}/out"
    argv = ["build", "--input", src, "--out", out, "--no-progress", *sets]

    killed = subprocess.run([sys.executable, "-c", _KILLED_BUILD, *argv, "--set", "ray.executor=inline"],
                            cwd=REPO, capture_output=True, text=True, timeout=420)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    remote = storage.resolve(out)
    with Catalog(out, read_only=True) as cat:
        committed = {r["path"] for r in cat.shards()}
        assert cat.latest_run()["status"] == "running" and len(cat.done_source_ids()) == 1
    left = remote.files("shards")
    assert any(p.endswith(".pending.json") for p in left)  # the second unit's, never committed
    assert {p for p in left if p.endswith(".parquet")} - committed  # its shard, on the store

    # The resume runs on a local Ray of its own: its workers write the shards to the store.
    resumed = portrait(*argv, "--set", "ray.executor=ray", "--set", "ray.num_cpus=2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert content(out) == content(local)
    with Catalog(out, read_only=True) as cat:
        assert [r["status"] for r in cat.query("SELECT status FROM runs ORDER BY started_at").to_pylist()] == \
            ["interrupted", "finished"]
        committed = {r["path"] for r in cat.shards()}
        assert (
            cat.query("SELECT count(DISTINCT path) AS n FROM sources WHERE path LIKE 's3://%'").to_pylist()[0]["n"] == 3
        )
    assert set(remote.files("shards")) == committed  # no marker, no uncommitted shard left
    assert not Path("s3:").exists() and not (REPO / "s3:").exists()

    capsys.readouterr()
    assert main(["query", "--catalog", f"{out}/catalog.duckdb", "SELECT count(*) AS n FROM frames"]) == 0
    n_remote = capsys.readouterr().out
    assert main(["query", "--catalog", str(local / "catalog.duckdb"), "SELECT count(*) AS n FROM frames"]) == 0
    assert capsys.readouterr().out == n_remote
    assert main(["verify", out]) == 0
    assert "ok:" in capsys.readouterr().out


def test_an_unreachable_store_is_one_line_and_creates_nothing(media, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_ports(1)[0]}")  # nobody listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    storage.s3_filesystem.cache_clear()
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    lines = []
    try:
        for out in ("s3://nowhere/out", "ftp://example.invalid/out"):
            rc = main(["build", "--input", str(media), "--out", out, "--no-progress", "--set", "ray.executor=inline"])
            err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("portrait:")]
            assert rc == 2 and len(err) == 1, err
            lines += err
        assert list(work.iterdir()) == []
        print("\n".join(lines))
    finally:
        storage.s3_filesystem.cache_clear()
