"""Run-level numbers: the funnel (rows per status) for the terminal and RUN/stats.json."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from .runfolder import RunFolder, write_json
from .status import KEPT


def funnel(run: RunFolder) -> Counter:
    """Rows per status over done parts' samples manifests, plus candidates of parts not done."""
    counts: Counter = Counter()
    for part in run.candidate_parts():
        path = run.samples(part) if run.is_done(part) else run.candidates(part)
        status = pq.read_table(path, columns=["status"])["status"].to_pylist()
        if not run.is_done(part):
            status = ["(not finished)" if s == KEPT else s for s in status]
        counts.update(status)
    return counts


def format_funnel(counts: Counter, title: str = "rows per status") -> str:
    total = sum(counts.values())
    width = max([len(s) for s in counts] + [len("total")])
    lines = [title, "-" * (width + 20)]
    order = sorted(counts, key=lambda s: (s != KEPT, -counts[s], s))
    for s in order:
        lines.append(f"{s:<{width}}  {counts[s]:>8,}  {100 * counts[s] / max(total, 1):6.1f}%")
    lines.append("-" * (width + 20))
    lines.append(f"{'total':<{width}}  {total:>8,}  100.0%")
    return "\n".join(lines)


def write_stats(run: RunFolder, extra: dict | None = None) -> dict:
    """Merge this run's numbers into RUN/stats.json (select's per-rule counts stay)."""
    stats = json.loads(run.stats.read_text()) if run.stats.exists() else {}
    stats.update(extra or {})
    stats["funnel"] = dict(funnel(run))
    parts = {}
    for marker in sorted((run.root / "_done").glob("part-*.json")):
        rec = json.loads(marker.read_text())
        parts[str(rec["part"])] = {k: rec.get(k) for k in ("rows", "kept", "faces", "stage_seconds", "host")}
    stats["parts"] = parts
    stats["faces"] = sum(p["faces"] or 0 for p in parts.values())
    write_json(stats, run.stats)
    return stats


def outputs_listing(root: Path) -> str:
    names = ["candidates", "raw", "laion_face", "laion_face_cropped", "manifests/samples", "manifests/faces", "_done", "stats.json"]
    return "\n".join(f"  {root / n}" for n in names if (root / n).exists())
