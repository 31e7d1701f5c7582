"""Run-level numbers: the funnel (rows per status) for the terminal and RUN/stats.json."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


from .runfolder import RunFolder, write_json
from .status import KEPT


def funnel(run: RunFolder) -> Counter:
    """Rows per status over done parts' samples manifests, plus candidates of parts not done."""
    counts: Counter = Counter()
    for part in run.candidate_parts():
        path = run.samples(part) if run.is_done(part) else run.candidates(part)
        for status, n in _value_counts(path, "status").items():
            counts["(not finished)" if status == KEPT and not run.is_done(part) else status] += n
    return counts


def _value_counts(path: Path, column: str) -> Counter:
    """Rows per value of a string column, counted on its dictionary indices: value_counts would
    import pyarrow.compute (~0.1 s of a `laionface select`)."""
    with pq.ParquetFile(path, read_dictionary=[column]) as f:
        values = f.read(columns=[column])[column]
    counts: Counter = Counter()
    for chunk in values.chunks:
        if chunk.null_count:
            counts.update(chunk.to_pylist())
            continue
        indices = chunk.indices  # read from its buffer: Array.to_numpy imports pandas (~0.35 s)
        codes = np.frombuffer(indices.buffers()[1], indices.type.to_pandas_dtype(), indices.offset + len(indices))[indices.offset:]
        per_index = np.bincount(codes, minlength=len(chunk.dictionary))
        counts.update({value: int(n) for value, n in zip(chunk.dictionary.to_pylist(), per_index) if n})
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


def format_stages(outcomes: list) -> str:
    """The end-of-run table: rows, seconds and images/s per stage over the parts run now, and
    what they made. Seconds are summed over parts (and over Ray workers), so img/s is the
    rate of one worker; the run's wall time is printed by the command."""
    ran = [o for o in outcomes if o.state == "done"]
    seconds, rows = Counter(), Counter()
    for o in ran:
        seconds.update(o.stage_seconds)
        rows.update(o.stage_rows)
    states = Counter(o.state for o in outcomes)
    lines = [f"{'stage':<10} {'rows':>10} {'seconds':>10} {'img/s':>9}", "-" * 42]
    for stage in ("download", "detect", "crop", "score", "write"):
        if stage in seconds:
            n = rows.get(stage, 0)
            lines.append(f"{stage:<10} {n:>10,} {seconds[stage]:>10.1f} {n / max(seconds[stage], 1e-9):>9.1f}")
    lines.append("-" * 42)
    lines.append(f"parts: {states['done']} done, {states['skipped']} skipped, {states['failed']} failed; "
                 f"faces {sum(o.faces for o in ran):,}, crops {sum(o.crops for o in ran):,}, "
                 f"shards {sum(o.shards for o in ran):,}")
    return "\n".join(lines)


def write_stats(run: RunFolder, extra: dict | None = None) -> dict:
    """Merge this run's numbers into RUN/stats.json (select's per-rule counts stay)."""
    stats = json.loads(run.stats.read_text()) if run.stats.exists() else {}
    stats.update(extra or {})
    stats["funnel"] = dict(funnel(run))
    parts = {}
    for marker in sorted((run.root / "_done").glob("part-*.json")):
        rec = json.loads(marker.read_text())
        parts[str(rec["part"])] = {k: rec.get(k) for k in ("rows", "kept", "faces", "crops", "shards", "stage_seconds", "stage_rows", "host")}
    stats["parts"] = parts
    stats["faces"] = sum(p["faces"] or 0 for p in parts.values())
    write_json(stats, run.stats)
    return stats


def outputs_listing(root: Path) -> str:
    names = ["candidates", "raw", "laion_face", "laion_face_cropped", "manifests/samples", "manifests/faces", "_done", "stats.json"]
    return "\n".join(f"  {root / n}" for n in names if (root / n).exists())
