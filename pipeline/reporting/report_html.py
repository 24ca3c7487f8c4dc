"""`portrait report --html DIR`: one self-contained HTML page about a build (no server).

What a researcher checks before training on a build: how much was kept and rejected per dataset
and reason (sources, clips, hours); every stored score's distribution with its threshold and
the kept/rejected split; what each filter threw away (the thumbnails rejected clips keep) next to
what was kept; storage by feature; the runs and the models behind them (backends, weights
sha256, random weights flagged); what discovery found per dataset. Plots are SVG and contact
sheets PNG, both embedded as data URIs, so the page is one file that opens anywhere.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import cv2
import numpy as np

from manifests.catalog import Catalog
from manifests.schemas import CLIP_SCORES
from stages.jpeg import decode_jpeg

from .contact_sheet import duplicates_sheet, kept_sheet
from .preview import storage_report

# Score -> the thresholds that judge it: (parameter, 'min' | 'max'). Mirrors manifests/verdicts.py.
SCORE_THRESHOLDS: dict[str, list[tuple[str, str]]] = {
    "crop_source_px": [("min_crop_source_px", "min")],
    "face_px": [("min_face_px", "min")],
    "face_frac": [("min_face_frac", "min")],
    "pad_frac": [("max_pad_frac", "max")],
    "face_cut": [("max_face_cut", "max")],
    "n_faces": [("max_faces", "max")],
    "face_conf": [("min_face_conf", "min")],
    "face_human": [("min_face_human", "min")],
    "face_person": [("min_face_person", "min")],
    "occlusion": [("max_frame_occlusion", "max")],
    "occluded_share": [("max_occluded_share", "max")],
    "lighting_mean": [("min_lighting_mean", "min"), ("max_lighting_mean", "max")],
    "lighting_std": [("min_lighting_std", "min")],
    "lighting_clipped": [("max_lighting_clipped", "max")],
    "bg_motion": [("max_bg_motion", "max")],
    "sharpness": [("min_sharpness", "min")],
    # detail_4x and mirror_4x: judged together (detail_4x * (1 - mirror_4x) >= min_detail_4x), so
    # neither histogram has a line of its own.
    "detail_train": [("min_detail_train", "min")],
}
_KEPT, _REJECTED = "#3a9d5d", "#d9534f"
SHEET_CLIPS = 8  # clips per contact sheet: enough to see a filter's pattern, small page
THUMB = 96


def _data_uri(kind: str, payload: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(payload).decode()}"


def _png(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return _data_uri("image/png", buf.tobytes())


def _img(uri: str, alt: str, cls: str = "") -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}" class="{cls}">'


def _table(rows: list[dict], empty: str = "none") -> str:
    if not rows:
        return f"<p class=muted>{html.escape(empty)}</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r[c])}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(v) -> str:
    if v is None:
        return "<span class=muted>-</span>"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, str) and v.startswith("<"):
        return v  # our own markup (flags)
    return html.escape(str(v))


# ---- plots --------------------------------------------------------------------------------
def histogram_svg(name: str, kept: np.ndarray, rejected: np.ndarray, thresholds: list[tuple[str, str, float]],
                  bins: int = 30, width: int = 360, height: int = 170) -> str:
    """Stacked histogram (kept below, rejected above) with each threshold as a dashed line."""
    both = np.concatenate([kept, rejected])
    lo, hi = float(both.min()), float(both.max())
    for _, _, t in thresholds:
        lo, hi = min(lo, t), max(hi, t)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    hk, _ = np.histogram(kept, edges)
    hr, _ = np.histogram(rejected, edges)
    top = max(1, int((hk + hr).max()))
    ml, mr, mt, mb = 34, 8, 22, 30
    pw, ph = width - ml - mr, height - mt - mb
    x = lambda v: ml + (v - lo) / (hi - lo) * pw  # noqa: E731
    y = lambda n: mt + ph - n / top * ph  # noqa: E731
    bw = pw / bins
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="10">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{ml}" y="13" font-size="12" font-weight="bold">{html.escape(name)}</text>',
        f'<text x="{width - mr}" y="13" text-anchor="end" fill="#555">'
        f"kept {len(kept)} / rejected {len(rejected)}</text>",
    ]
    for i in range(bins):
        x0 = ml + i * bw
        if hk[i]:
            parts.append(f'<rect x="{x0:.1f}" y="{y(hk[i]):.1f}" width="{max(bw - 1, 1):.1f}" '
                         f'height="{ph - (y(hk[i]) - mt):.1f}" fill="{_KEPT}"/>')
        if hr[i]:
            parts.append(f'<rect x="{x0:.1f}" y="{y(hk[i] + hr[i]):.1f}" width="{max(bw - 1, 1):.1f}" '
                         f'height="{y(hk[i]) - y(hk[i] + hr[i]):.1f}" fill="{_REJECTED}"/>')
    parts.append(f'<line x1="{ml}" y1="{mt + ph}" x2="{ml + pw}" y2="{mt + ph}" stroke="#333"/>')
    parts.append(f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{mt + ph}" stroke="#333"/>')
    parts.append(f'<text x="{ml - 3}" y="{mt + 8}" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{ml - 3}" y="{mt + ph}" text-anchor="end">0</text>')
    parts.append(f'<text x="{ml}" y="{height - 16}">{lo:.3g}</text>')
    parts.append(f'<text x="{ml + pw}" y="{height - 16}" text-anchor="end">{hi:.3g}</text>')
    for _param, side, t in thresholds:
        xt = x(t)
        parts.append(f'<line x1="{xt:.1f}" y1="{mt}" x2="{xt:.1f}" y2="{mt + ph}" stroke="#1f4e99" '
                     'stroke-width="1.5" stroke-dasharray="4 3"/>')
        # Labels stay inside the plot: a threshold at an edge is anchored on that edge.
        anchor = "end" if xt > ml + 0.8 * pw else "start" if xt < ml + 0.2 * pw else "middle"
        parts.append(f'<text x="{xt:.1f}" y="{height - 4}" text-anchor="{anchor}" fill="#1f4e99">'
                     f'{html.escape(side)} {t:.3g}</text>')
    parts.append("</svg>")
    return _data_uri("image/svg+xml", "".join(parts).encode())


def _label(tile: np.ndarray, lines: list[str]) -> np.ndarray:
    band = np.zeros((14 * len(lines) + 4, tile.shape[1], 3), np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(band, text, (3, 13 + 14 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([band, tile], axis=0)


def rejected_sheet(clips: list[dict]) -> np.ndarray | None:
    """One row per rejected clip: its thumbnail strip under its id, reasons and key scores."""
    rows = []
    for c in clips:
        thumbs = [
            cv2.resize(decode_jpeg(b), (THUMB, THUMB), interpolation=cv2.INTER_AREA) for b in (c["thumbnails"] or [])
        ]
        if not thumbs:
            continue
        strip = np.concatenate(thumbs + [np.zeros((THUMB, THUMB, 3), np.uint8)] * (4 - len(thumbs)), axis=1)
        scores = " ".join(f"{k}={c[k]:.3g}" for k in ("sharpness", "lighting_mean", "occluded_share", "face_px")
                          if c.get(k) is not None)
        rows.append(_label(strip, [f"{c['clip_id'][:40]}  {', '.join(c['reasons'])}", scores[:60]]))
    if not rows:
        return None
    return np.concatenate(rows, axis=0)


# ---- data ---------------------------------------------------------------------------------
def _rows(cat: Catalog, sql: str, params=None) -> list[dict]:
    return cat.query(sql, params).to_pylist()


def collect(out_dir: Path) -> dict:
    with Catalog(out_dir, read_only=True) as cat:
        d = {
            "summary": cat.named("summary").to_pylist(),
            "by_verdict": _rows(
                cat,
                """
                SELECT dataset, verdict, count(*) AS clips, count(DISTINCT source_id) AS sources,
                       round(sum(CASE WHEN media_type = 'video' THEN end_s - start_s ELSE 0 END) / 3600.0, 4) AS hours,
                       count(*) FILTER (WHERE media_type = 'image') AS images
                FROM clips GROUP BY ALL ORDER BY dataset, verdict""",
            ),
            "by_reason": _rows(
                cat,
                """
                SELECT dataset, 'clip' AS level, reason, count(*) AS n,
                       round(sum(CASE WHEN media_type = 'video' THEN end_s - start_s ELSE 0 END) / 3600.0, 4) AS hours
                FROM clips, unnest(reasons) AS u(reason) WHERE verdict = 'rejected' GROUP BY ALL
                UNION ALL
                SELECT dataset, 'source' AS level, reason, count(*) AS n,
                       round(sum(coalesce(duration_s, 0)) / 3600.0, 4)
                FROM sources, unnest(reasons) AS u(reason) WHERE status <> 'kept' GROUP BY ALL
                ORDER BY dataset, level, n DESC, reason""",
            ),
            "errors": _rows(
                cat,
                "SELECT dataset, stage, kind, count(*) AS n, any_value(message) AS example "
                "FROM errors GROUP BY ALL ORDER BY n DESC",
            ),
            "scores": cat.query(
                "SELECT verdict, media_type, end_s - start_s AS duration_s, "
                + ", ".join(n for n, _ in CLIP_SCORES)
                + " FROM clips"
            ).to_pydict(),
            "thresholds": cat.latest_thresholds(),
            "rejected": _rows(
                cat,
                "SELECT clip_id, reasons, thumbnails, sharpness, lighting_mean, occluded_share, face_px "
                "FROM clips WHERE verdict = 'rejected' ORDER BY clip_id",
            ),
            "runs": _rows(
                cat,
                "SELECT run_id, started_at, finished_at, status, n_sources, schema_version, models_json, "
                "notes_json FROM runs ORDER BY started_at",
            ),
        }
        d["kept_sheet"] = kept_sheet(cat, frames_per_clip=4, max_clips=2 * SHEET_CLIPS, flow=8)
        d["dup_sheet"], d["dup_groups"] = duplicates_sheet(cat, max_groups=SHEET_CLIPS)
        d["dup_datasets"] = _rows(
            cat,
            "SELECT dataset, count(*) AS kept_clips, count(*) FILTER (WHERE g.n > 1) AS with_duplicate, "
            "count(DISTINCT c.dup_group) FILTER (WHERE g.n > 1) AS groups FROM clips c "
            "LEFT JOIN (SELECT dup_group, count(*) AS n FROM clips WHERE verdict = 'kept' GROUP BY ALL) g "
            "USING (dup_group) WHERE c.verdict = 'kept' GROUP BY ALL ORDER BY dataset",
        )
    d["storage"] = storage_report(out_dir)
    return d


def model_rows(models_json: str | None) -> list[dict]:
    """One row per model stage of a run: backend, weights, sha256, random weights flagged."""
    models = json.loads(models_json) if models_json else {}
    shas = models.pop("weights_sha256", {}) or {}
    out = []
    for stage, m in models.items():
        if not isinstance(m, dict):
            continue
        sha = m.get("sha256")
        if isinstance(sha, dict):
            sha = ", ".join(f"{Path(k).name}: {v[:16]}" for k, v in sha.items())
        rnd = m.get("random_weights")
        out.append({"stage": stage, "backend": m.get("backend"), "weights": m.get("weights") or m.get("reason"),
                    "sha256": sha, "random_weights": '<b class=bad>RANDOM</b>' if rnd else "no"})
    for setting, files in shas.items():  # {setting: {file: sha256}} of every configured weights path
        files = files if isinstance(files, dict) else {setting: files}
        out.append({"stage": "weights", "backend": setting, "weights": ", ".join(files),
                    "sha256": ", ".join(str(v)[:16] for v in files.values()), "random_weights": None})
    return out


def discovery_rows(notes_json: str | None) -> list[dict]:
    notes = json.loads(notes_json) if notes_json else {}
    rows = []
    for name, c in (notes.get("discovery") or {}).items():
        rows.append({"dataset": name, **{k: v for k, v in c.items() if not isinstance(v, (list, dict))},
                     "skipped": ", ".join(f"{k}: {v}" for k, v in (c.get("skipped") or {}).items()) or None})
    return rows


# ---- page ---------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{margin-bottom:0} h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:13px} td,th{border:1px solid #ddd;padding:3px 7px;text-align:left}
th{background:#f3f3f3} .muted{color:#888} .bad{color:#c00} .grid{display:flex;flex-wrap:wrap;gap:10px}
.sheet{max-width:100%;border:1px solid #ccc} .plot{border:1px solid #eee}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
"""


def render(d: dict, title: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts.append("<h2 id=counts>Kept and rejected</h2><h3>Per dataset</h3>" + _table(d["summary"]))
    parts.append("<h3>Clips and hours by verdict</h3>" + _table(d["by_verdict"]))
    parts.append("<h3>By reason</h3>" + _table(d["by_reason"], "nothing rejected"))
    if d["errors"]:
        parts.append("<h3>Errors</h3>" + _table(d["errors"]))

    parts.append('<h2 id=scores>Scores</h2><p class=legend>every clip-level score; <span style="background:'
                 f'{_KEPT}"></span>kept <span style="background:{_REJECTED}"></span>rejected '
                 '<span style="border-top:2px dashed #1f4e99;height:0"></span>threshold</p><div class=grid>')
    s, thresholds = d["scores"], d["thresholds"]
    verdict = np.array(s["verdict"], dtype=object)
    names = [n for n, _ in CLIP_SCORES] + ["duration_s"]
    for name in names:
        vals = np.array([np.nan if v is None else float(v) for v in s[name]], dtype=np.float64)
        if name == "duration_s":
            vals[np.array(s["media_type"], dtype=object) != "video"] = np.nan
            lines = [("min_clip_s", "min")]
        else:
            lines = SCORE_THRESHOLDS.get(name, [])
        ok = ~np.isnan(vals)
        if not ok.any():
            continue
        marks = [(p, side, float(thresholds[p])) for p, side in lines if p in thresholds]
        uri = histogram_svg(name, vals[ok & (verdict == "kept")], vals[ok & (verdict != "kept")], marks)
        parts.append(_img(uri, f"histogram of {name}", "plot"))
    parts.append("</div>")

    parts.append("<h2 id=rejected>Rejected clips, per reason</h2>")
    by_reason: dict[str, list[dict]] = {}
    for c in d["rejected"]:
        for r in c["reasons"] or ["(none)"]:
            by_reason.setdefault(r, []).append(c)
    if not by_reason:
        parts.append("<p class=muted>no rejected clips</p>")
    for reason in sorted(by_reason):
        clips = by_reason[reason]
        sheet = rejected_sheet(clips[:SHEET_CLIPS])
        first = f", first {SHEET_CLIPS}" if len(clips) > SHEET_CLIPS else ""
        parts.append(f"<h3>{html.escape(reason)} ({len(clips)} clip(s){first})</h3>")
        parts.append(_img(_png(sheet), f"rejected: {reason}", "sheet") if sheet is not None
                     else "<p class=muted>no thumbnails stored</p>")

    parts.append("<h2 id=kept>Kept clips</h2>")
    sheet = d["kept_sheet"]
    parts.append(_img(_png(sheet), "kept clips", "sheet") if sheet is not None else "<p class=muted>no kept clips</p>")

    parts.append("<h2 id=duplicates>Duplicates across datasets</h2><p class=legend>kept clips grouped by the "
                 "perceptual signature of their stored frames (clips.dup_group; named query "
                 "<code>duplicates</code>); one row per group, largest first</p>")
    parts.append(_table(d["dup_datasets"], "no kept clips"))
    sheet = d["dup_sheet"]
    shown = f" (first {SHEET_CLIPS})" if d["dup_groups"] > SHEET_CLIPS else ""
    parts.append(f"<h3>{d['dup_groups']} group(s){shown}</h3>" + (
        _img(_png(sheet), "duplicate groups", "sheet") if sheet is not None else "<p class=muted>no duplicates</p>"))

    parts.append("<h2 id=storage>Storage by feature</h2>")
    storage = [dict(r, kb_per_frame=round(r["bytes_per_frame"] / 1024, 2)) for r in d["storage"]]
    parts.append(_table(storage))

    parts.append("<h2 id=runs>Runs and models</h2>")
    parts.append(
        _table(
            [
                {k: r[k] for k in ("run_id", "started_at", "finished_at", "status", "n_sources", "schema_version")}
                for r in d["runs"]
            ]
        )
    )
    for r in d["runs"]:
        parts.append(f"<h3>models of run {html.escape(r['run_id'])}</h3>" + _table(model_rows(r["models_json"])))
    parts.append("<h2 id=discovery>Discovery</h2>")
    for r in d["runs"][-1:]:
        parts.append(f"<p>what discovery found in the latest run ({html.escape(r['run_id'])})</p>"
                     + _table(discovery_rows(r["notes_json"]), "no discovery counts recorded"))
    parts.append("</body></html>")
    return "".join(parts)


def write_report(out_dir: str | Path, html_dir: str | Path) -> Path:
    """Write ``html_dir/index.html`` for the build at ``out_dir``; returns its path."""
    out_dir, html_dir = Path(out_dir), Path(html_dir)
    page = render(collect(out_dir), f"Build report: {out_dir.resolve()}")
    html_dir.mkdir(parents=True, exist_ok=True)
    path = html_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
