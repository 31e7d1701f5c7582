"""`laionface report RUN`: a self-contained RUN/report.html (plots as base64 PNG) and the same
numbers in RUN/stats.json under `report`.

Every number comes from SQL over the run's views (laionface.audit.query), so the report reads
runs of any size without loading manifests into memory; the funnel is summary.funnel's.
Plots use matplotlib's Figure/Agg classes directly (no pyplot, no global backend switch).
"""

from __future__ import annotations

import base64
import html
import io
import json
import tarfile
from datetime import datetime, timezone
from pathlib import Path

from ..runfolder import RunFolder, atomic_path
from ..schema import PIPELINE_VERSION
from ..status import KEPT
from ..summary import funnel, write_stats
from .query import connect, parts_table

TOP_DOMAINS = 20
GRID_IMAGES = 24
BINS = 30
SECTIONS = ("Funnel", "Download errors by kind", "Faces", "CLIP score", "Top domains",
            "LICENSE and NSFW", "Per-part throughput", "Sample crops")


# ---------------------------------------------------------------------------- numbers
def _hist(con, expr: str, table: str, where: str = "true", bins: int = BINS) -> dict:
    """Histogram of a numeric expression, binned in SQL: edges, counts, n and quantiles."""
    lo, hi, n = con.execute(f"SELECT min({expr}), max({expr}), count({expr}) FROM {table} WHERE {where}").fetchone()
    if not n:
        return {"n": 0, "edges": [], "counts": [], "quantiles": {}}
    lo, hi = float(lo), float(hi)
    width = (hi - lo) / bins if hi > lo else 1.0
    rows = con.execute(
        f"SELECT least(CAST(floor(({expr} - {lo!r}) / {width!r}) AS INTEGER), {bins - 1}) AS b, count(*) "
        f"FROM {table} WHERE {where} AND {expr} IS NOT NULL GROUP BY 1"
    ).fetchall()
    counts = [0] * bins
    for b, c in rows:
        counts[b] += c
    q = con.execute(f"SELECT quantile_cont({expr}, [0.1, 0.5, 0.9]) FROM {table} WHERE {where}").fetchone()[0]
    return {"n": int(n), "edges": [lo + i * width for i in range(bins + 1)], "counts": counts,
            "quantiles": {"p10": q[0], "p50": q[1], "p90": q[2]}, "min": lo, "max": hi}


def _counts(con, sql: str) -> dict:
    return {("(null)" if k is None else str(k)): int(v) for k, v in con.execute(sql).fetchall()}


def _clip_threshold(run: RunFolder) -> float | None:
    try:
        stages = json.loads(run.config.read_text())["pipeline"]["stages"]
        return float(stages["score"]["threshold"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _throughput(parts) -> dict:
    out = {}
    for rec in parts.to_pylist():
        if rec["state"] != "done":
            continue
        seconds = json.loads(rec["stage_seconds"] or "{}")
        total = sum(seconds.values())
        out[str(rec["part"])] = {"rows": rec["rows"], "faces": rec["faces"], "stage_seconds": seconds,
                                 "seconds": round(total, 3), "rows_per_s": round(rec["rows"] / total, 2) if total else None,
                                 "host": rec["host"]}
    return out


def collect(run: RunFolder) -> dict:
    """Every number the report shows (the `report` section of stats.json)."""
    counts = funnel(run)
    con = connect(run.root)
    try:
        parts = parts_table(run)
        hashes = sorted({h for (h,) in con.execute("SELECT DISTINCT config_hash FROM samples").fetchall()})
        versions = sorted({v for (v,) in con.execute("SELECT DISTINCT pipeline_version FROM samples").fetchall()})
        clip_scored = con.execute("SELECT count(clip_score) FROM samples").fetchone()[0] > 0
        threshold = _clip_threshold(run)
        report = {
            "funnel": dict(sorted(counts.items(), key=lambda kv: (kv[0] != KEPT, -kv[1], kv[0]))),
            "total_rows": sum(counts.values()),
            "download_errors": _counts(con, "SELECT detail(status), count(*) FROM samples "
                                            "WHERE reason(status) = 'download_failed' GROUP BY 1 ORDER BY 2 DESC, 1"),
            "faces_per_image": _counts(con, "SELECT CASE WHEN face_count >= 10 THEN '10+' ELSE CAST(face_count AS VARCHAR) END, "
                                            "count(*) FROM samples WHERE face_count IS NOT NULL GROUP BY 1 "
                                            "ORDER BY min(face_count)"),
            "face_size": _hist(con, "face_size(box)", "faces"),
            "face_score": _hist(con, "score", "faces"),
            "faces_kept": _counts(con, "SELECT coalesce(reject_reason, CASE WHEN kept THEN 'kept' END), count(*) "
                                       "FROM faces GROUP BY 1 ORDER BY 2 DESC"),
            "clip_score": ({**_hist(con, "clip_score", "samples"), "threshold": threshold, "scored": True,
                            "below_threshold": (con.execute(f"SELECT count(*) FROM samples WHERE clip_score < {threshold!r}")
                                                .fetchone()[0] if threshold is not None else None)}
                           if clip_scored else {"scored": False, "note": "not scored (no clip_score values)"}),
            "top_domains": [{"domain": d, "rows": int(n), "kept": int(k)} for d, n, k in con.execute(
                f"SELECT domain, count(*), count(*) FILTER (status = 'kept') FROM samples "
                f"GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {TOP_DOMAINS}").fetchall()],
            "domains": con.execute("SELECT count(DISTINCT domain) FROM samples").fetchone()[0],
            "license": _counts(con, "SELECT LICENSE, count(*) FROM samples GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 15"),
            "nsfw": _counts(con, "SELECT NSFW, count(*) FROM samples GROUP BY 1 ORDER BY 2 DESC, 1"),
            "throughput": _throughput(parts),
            "parts": {"done": int(sum(1 for s in parts["state"].to_pylist() if s == "done")),
                      "failed": int(sum(1 for s in parts["state"].to_pylist() if s == "failed")),
                      "candidates": len(run.candidate_parts())},
            "config_hash": hashes, "pipeline_version": versions,
        }
    finally:
        con.close()
    return report


# ---------------------------------------------------------------------------- plots
def _figure(width: float = 6.4, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _bars(counts: dict, title: str, xlabel: str = "rows", color: str = "#4C72B0", highlight: str | None = None) -> str:
    labels = list(counts)[::-1]
    fig, ax = _figure(6.4, max(2.2, 0.28 * len(labels) + 1.0))
    if labels:
        colors = ["#55A868" if lab == highlight else color for lab in labels]
        ax.barh(range(len(labels)), [counts[k] for k in labels], color=colors)
        ax.set_yticks(range(len(labels)), [lab if len(lab) <= 40 else lab[:39] + "…" for lab in labels], fontsize=8)
    else:
        ax.text(0.5, 0.5, "no rows", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def _hist_plot(h: dict, title: str, xlabel: str, threshold: float | None = None) -> str:
    fig, ax = _figure()
    if h.get("n"):
        ax.stairs(h["counts"], h["edges"], fill=True, color="#4C72B0", alpha=0.8)
        if threshold is not None:
            ax.axvline(threshold, color="#C44E52", linestyle="--", label=f"threshold {threshold:g}")
            ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def _throughput_plot(tp: dict) -> str:
    fig, ax = _figure()
    if tp:
        parts = list(tp)
        stages = sorted({s for p in tp.values() for s in p["stage_seconds"]})
        bottom = [0.0] * len(parts)
        for stage in stages:
            values = [tp[p]["stage_seconds"].get(stage, 0.0) for p in parts]
            ax.bar(parts, values, bottom=bottom, label=stage)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_xlabel("part")
        ax.set_ylabel("seconds")
        ax.legend(fontsize=8)
        if len(parts) > 20:
            ax.set_xticks(parts[:: max(1, len(parts) // 20)])
    else:
        ax.text(0.5, 0.5, "no done parts", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("seconds per stage, per part", fontsize=10)
    return _png(fig)


# ---------------------------------------------------------------------------- sample grid
def _tar_images(tars: list[Path], limit: int):
    """(key, jpg bytes, json meta or None) from the first `limit` samples of the tars, in order."""
    for path in tars:
        with tarfile.open(path) as tf:
            members: dict[str, dict] = {}
            for m in tf:
                key, _, ext = m.name.partition(".")
                if ext in ("jpg", "json"):
                    members.setdefault(key, {})[ext] = tf.extractfile(m).read()
            for key, files in members.items():
                if "jpg" in files:
                    yield key, files["jpg"], json.loads(files["json"]) if "json" in files else None
                    limit -= 1
                    if limit <= 0:
                        return


def sample_grid(run: RunFolder, n: int = GRID_IMAGES, cell: int = 150, columns: int = 6) -> tuple[str | None, str | None, int]:
    """A PNG grid (base64) of face crops, or of full images with their boxes drawn; its source."""
    from PIL import Image, ImageDraw

    cropped = sorted((run.root / "laion_face_cropped").glob("part-*/*.tar"))
    full = sorted((run.root / "laion_face").glob("part-*/*.tar"))
    source, tars = ("laion_face_cropped", cropped) if cropped else ("laion_face", full)
    thumbs = []
    for key, data, meta in _tar_images(tars, n):
        try:
            img = Image.open(io.BytesIO(data)).convert("RGB")
        except Exception:  # a broken image in a shard is the shard's problem, not the report's
            continue
        if source == "laion_face" and meta:
            draw = ImageDraw.Draw(img)
            scale = img.width / (meta.get("original_width") or img.width)
            for f in meta.get("faces", []):
                x0, y0, x1, y1 = (v * scale for v in f["box"])
                draw.rectangle([x0, y0, x1, y1], outline=(0, 220, 0) if f.get("kept") else (220, 0, 0),
                               width=max(2, img.width // 150))
        img.thumbnail((cell, cell))
        thumbs.append(img)
    if not thumbs:
        return None, None, 0
    rows = (len(thumbs) + columns - 1) // columns
    grid = Image.new("RGB", (columns * (cell + 4), rows * (cell + 4)), "white")
    for i, t in enumerate(thumbs):
        x, y = (i % columns) * (cell + 4) + 2, (i // columns) * (cell + 4) + 2
        grid.paste(t, (x + (cell - t.width) // 2, y + (cell - t.height) // 2))
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii"), source, len(thumbs)


# ---------------------------------------------------------------------------- html
def _table(rows: list[tuple], header: tuple) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:,.3f}".rstrip("0").rstrip(".") if v == v else "NaN"
        if isinstance(v, int):
            return f"{v:,}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(b64: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{b64}" alt="{html.escape(alt)}">'


def _pct_rows(counts: dict) -> list[tuple]:
    total = sum(counts.values()) or 1
    return [(k, v, f"{100 * v / total:.1f}%") for k, v in counts.items()]


def _hist_rows(h: dict) -> list[tuple]:
    if not h.get("n"):
        return [("values", 0)]
    q = h["quantiles"]
    return [("values", h["n"]), ("min", h["min"]), ("p10", q["p10"]), ("median", q["p50"]), ("p90", q["p90"]), ("max", h["max"])]


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{margin-bottom:4px} .meta{color:#555;font-size:14px;margin-bottom:20px} .meta code{background:#f3f3f3;padding:1px 4px}
section{border-top:1px solid #ddd;padding-top:8px;margin-top:18px}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start;margin-bottom:12px}
.row img{max-width:640px;border:1px solid #eee}
table{border-collapse:collapse;font-size:13px} th,td{border-bottom:1px solid #e5e5e5;padding:3px 8px;text-align:left}
td:nth-child(n+2){text-align:right;font-variant-numeric:tabular-nums} th{background:#fafafa}
.note{color:#666;font-size:13px}
"""


def render(run: RunFolder, r: dict, grid: tuple) -> str:
    def section(title: str, *blocks: str) -> str:
        anchor = title.lower().replace(" ", "-")
        return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{"".join(blocks)}</section>'

    def row(img: str, table: str) -> str:
        return f'<div class="row">{img}{table}</div>'

    clip = r["clip_score"]
    if clip["scored"]:
        clip_block = row(_img(_hist_plot(clip, "CLIP image-text score", "clip_score", clip["threshold"]), "CLIP score histogram"),
                         _table(_hist_rows(clip) + [("threshold", clip["threshold"]), ("below threshold", clip["below_threshold"])],
                                ("", "value")))
    else:
        clip_block = '<p class="note">not scored: no sample has a clip_score (the pipeline ran without the score stage).</p>'
    tp = r["throughput"]
    grid_b64, grid_source, grid_n = grid
    if grid_b64:
        what = ("face crops from LAION-FACE-cropped shards" if grid_source == "laion_face_cropped"
                else "full images from LAION-FACE shards, kept faces boxed in green, rejected faces in red")
        grid_block = f'<p class="note">first {grid_n} {what}</p><div class="row">{_img(grid_b64, "sample grid")}</div>'
    else:
        grid_block = '<p class="note">no LAION-FACE or LAION-FACE-cropped shards in this run yet.</p>'
    generated = r["generated_at"]
    meta = (f'<div class="meta">run <code>{html.escape(str(run.root.resolve()))}</code> · config hash '
            f'<code>{html.escape(", ".join(r["config_hash"]) or "-")}</code> · pipeline version '
            f'<code>{html.escape(", ".join(r["pipeline_version"]) or "-")}</code> · parts done {r["parts"]["done"]} of '
            f'{r["parts"]["candidates"]} ({r["parts"]["failed"]} failed)<br>generated {html.escape(generated)} by laionface '
            f'{html.escape(PIPELINE_VERSION)} with <code>laionface report</code>; the same numbers are in '
            f'<code>stats.json</code> under <code>report</code>.</div>')
    body = [
        section("Funnel", row(_img(_bars(r["funnel"], f"rows per status ({r['total_rows']:,} rows)", highlight=KEPT), "funnel"),
                              _table(_pct_rows(r["funnel"]) + [("total", r["total_rows"], "100.0%")], ("status", "rows", "share")))),
        section("Download errors by kind", row(_img(_bars(r["download_errors"], "download_failed by kind", color="#C44E52"), "download errors"),
                                               _table(_pct_rows(r["download_errors"]), ("kind", "rows", "share")))),
        section("Faces",
                row(_img(_bars(r["faces_per_image"], "faces per downloaded image",
                               "images"), "faces per image"),
                    _table(list(r["faces_per_image"].items()), ("faces", "images"))),
                row(_img(_hist_plot(r["face_size"], "face size (shorter box side)", "pixels in the original image"), "face size"),
                    _table(_hist_rows(r["face_size"]), ("face size", "px"))),
                row(_img(_hist_plot(r["face_score"], "detector score", "RetinaFace score"), "face score"),
                    _table(_hist_rows(r["face_score"]) + list(r["faces_kept"].items()), ("face score", "value")))),
        section("CLIP score", clip_block),
        section("Top domains", row(_img(_bars({d["domain"] or "(no host)": d["rows"] for d in r["top_domains"]},
                                              f"top {TOP_DOMAINS} domains of {r['domains']:,}"), "top domains"),
                                   _table([(d["domain"], d["rows"], d["kept"]) for d in r["top_domains"]], ("domain", "rows", "kept")))),
        section("LICENSE and NSFW",
                row(_img(_bars(r["license"], "LICENSE"), "license"), _table(_pct_rows(r["license"]), ("LICENSE", "rows", "share"))),
                row(_img(_bars(r["nsfw"], "NSFW tag"), "nsfw"), _table(_pct_rows(r["nsfw"]), ("NSFW", "rows", "share")))),
        section("Per-part throughput", row(_img(_throughput_plot(tp), "throughput"),
                                           _table([(p, v["rows"], v["faces"], v["seconds"], v["rows_per_s"]) for p, v in tp.items()],
                                                  ("part", "rows", "faces", "seconds", "rows/s")))),
        section("Sample crops", grid_block),
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>laionface report — '
            f'{html.escape(run.root.name)}</title><style>{_CSS}</style></head><body>'
            f'<h1>laionface run report</h1>{meta}{"".join(body)}</body></html>\n')


def build_report(run_root: Path | str) -> tuple[Path, Path]:
    """Write RUN/report.html and merge the numbers into RUN/stats.json; return both paths."""
    run = RunFolder(Path(run_root))
    numbers = collect(run)
    numbers["generated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    grid = sample_grid(run)
    numbers["sample_grid"] = {"source": grid[1], "images": grid[2]}
    page = render(run, numbers, grid)
    with atomic_path(run.report) as tmp:
        tmp.write_text(page, encoding="utf-8")
    write_stats(run, {"report": numbers})
    return run.report, run.stats
