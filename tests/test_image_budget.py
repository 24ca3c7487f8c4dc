"""Memory bounded by design: images are judged from their headers against the pixel budget,
Pillow's own limit stays on, and a header bomb costs nothing whatever the worker read before."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from pipeline.config import load_config
from stages.base import StageError
from stages.probe import DEFAULT_PIXEL_BUDGET, probe

REPO = Path(__file__).resolve().parents[1]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zero_png(path: Path, width: int, height: int, rows_written: int | None = None) -> Path:
    """A valid RGBA PNG of zeros (a few hundred KB for 12000x12000), or, with ``rows_written``,
    one whose header claims more rows than its data holds."""
    row = b"\x00" * (1 + 4 * width)  # filter byte + pixels
    rows = height if rows_written is None else rows_written
    block_rows = min(rows, 500)
    # A full flush resets the compressor, so one compressed block of rows can be repeated
    # (raw deflate inside a zlib wrapper, checksum computed over the rows).
    comp = zlib.compressobj(1, zlib.DEFLATED, -15)
    block = comp.compress(row * block_rows) + comp.flush(zlib.Z_FULL_FLUSH)
    body, adler, done = [], 1, 0
    while done < rows:
        n = min(block_rows, rows - done)
        if n == block_rows:
            body.append(block)
        else:
            tail = zlib.compressobj(1, zlib.DEFLATED, -15)
            body.append(tail.compress(row * n) + tail.flush(zlib.Z_FULL_FLUSH))
        adler = zlib.adler32(row * n, adler)
        done += n
    end = zlib.compressobj(1, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)  # an empty final block
    stream = b"\x78\x01" + b"".join(body) + end + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b""))
    return path


def test_the_budget_is_the_config_default_and_refuses_from_the_header(tmp_path):
    assert load_config(None, {}).sampling.max_image_pixels == DEFAULT_PIXEL_BUDGET
    png = zero_png(tmp_path / "wide.png", 3000, 2000)
    assert probe(str(png), "image").width == 3000
    with pytest.raises(StageError, match="image too large: 3000x2000"):
        probe(str(png), "image", max_pixels=5_000_000)


def test_header_bombs_after_other_images_stay_under_1_gb(media_dir, tmp_path):
    others = [media_dir / "images" / "s1.jpg", zero_png(tmp_path / "ok.png", 2000, 2000)]
    bombs = [
        # Pixels that really decode (zeros compress 1000:1): between Pillow's warning and its hard
        # limit, so only the budget stands between it and ~2 GB of decoded copies.
        zero_png(tmp_path / "inflating.png", 12000, 12000),
        # A header claiming 10^10 pixels over a few rows of data: Pillow's own limit refuses it.
        zero_png(tmp_path / "claims.png", 100000, 100000, rows_written=2),
    ]
    script = textwrap.dedent(f"""
        import json
        from PIL import Image
        from stages.base import StageError
        from stages.decode import read_image
        from stages.probe import probe

        limit = Image.MAX_IMAGE_PIXELS
        for p in {[str(p) for p in others]!r}:
            probe(p, "image")
            read_image(p, 4096)
        messages = []
        for p in {[str(p) for p in bombs]!r}:
            for step in (lambda: probe(p, "image"), lambda: read_image(p, 4096)):
                try:
                    step()
                    messages.append(None)
                except StageError as e:
                    messages.append(e.message)
        # VmHWM: this process's peak RSS (ru_maxrss would include the forking parent's).
        hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        print(json.dumps({{"peak_mb": int(hwm.split()[1]) / 1024,
                          "messages": messages, "limit_kept": Image.MAX_IMAGE_PIXELS == limit}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"peak memory after two images and two header bombs: {result['peak_mb']:.0f} MB")
    assert result["limit_kept"]
    assert all(m and m.startswith("image too large") for m in result["messages"]), result["messages"]
    assert result["peak_mb"] < 1024
