"""A small run folder assembled directly with the schema module (no download, no detector):
two done parts, one failed part, URLs over a few domains, faces for downloaded rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from laionface.domains import domains
from laionface.runfolder import RunFolder, write_json, write_parquet
from laionface.schema import CANDIDATES, FACES, SAMPLES, empty_columns

HOSTS = ["https://www.Example.com", "http://example.com:8080", "https://user@cdn.example.org", "https://img.site.net",
         "http://WWW.site.net", "https://photos.example.com"]
STATUSES = ["kept", "kept", "no_face", "download_failed:http_404", "kept", "face_too_small", "download_failed:timeout",
            "nsfw", "kept", "duplicate_url", "opted_out"]


def _sample_rows(part: int, n: int, clip: bool) -> list[dict]:
    rows = []
    for i in range(n):
        sid = 1_000_000 + part * 1000 + i
        status = STATUSES[(i + part) % len(STATUSES)]
        downloaded = not status.startswith(("download_failed", "nsfw", "duplicate", "opted"))
        faces = 0 if status == "no_face" else (1 + i % 3 if downloaded else None)
        rows.append({
            "key": f"{part:05d}_{sid}", "part": part, "row": i, "SAMPLE_ID": sid,
            "URL": f"{HOSTS[(i * 7 + part) % len(HOSTS)]}/img/{sid}.jpg?x={i}", "TEXT": f"caption {i}",
            "HEIGHT": 300, "WIDTH": 400, "LICENSE": "?" if i % 4 else "creativecommons.org/licenses/by/4.0",
            "NSFW": "NSFW" if status == "nsfw" else ("UNSURE" if i % 5 == 0 else "UNLIKELY"), "similarity": 0.31 + i / 1000,
            "sha256": f"{sid:064d}" if downloaded else None, "width": 400 if downloaded else None,
            "height": 300 if downloaded else None, "face_count": faces, "kept_face_count": faces if status == "kept" else 0,
            "clip_score": (0.2 + (i % 10) / 50) if clip and downloaded else None,
            "shard": f"laion_face/part-{part:05d}/00000.tar" if status == "kept" else None,
            "status": status, "error": None if status == "kept" else f"detail of {status}",
            "pipeline_version": "0.1.0", "config_hash": "0123456789abcdef",
        })
    return rows


def make_run(root: Path, rows_per_part: int = 40, clip: bool = False, threshold: float | None = None) -> RunFolder:
    run = RunFolder(root)
    for part in (0, 1):
        rows = _sample_rows(part, rows_per_part, clip)
        samples = empty_columns(pa.Table.from_pylist(rows), SAMPLES)
        i = SAMPLES.get_field_index("domain")
        samples = samples.set_column(i, SAMPLES.field(i), domains(samples["URL"]))
        if part == 0:  # part 0 as the runner writes it; part 1 as a 1.0 manifest, without `domain`
            write_parquet(samples, run.samples(part), SAMPLES)
        else:
            run.samples(part).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(samples.drop_columns(["domain"]), run.samples(part))
        write_parquet(empty_columns(samples.select([c for c in CANDIDATES.names if c in samples.column_names]), CANDIDATES),
                      run.candidates(part), CANDIDATES)
        faces = []
        for r in rows:
            for j in range(r["face_count"] or 0):
                size = 20.0 + 15 * j + r["row"]
                faces.append({"face_key": f"{r['key']}_f{j}", "key": r["key"], "part": part, "SAMPLE_ID": r["SAMPLE_ID"],
                              "face_index": j, "box": [10.0, 10.0, 10.0 + size, 10.0 + size * 1.2],
                              "landmarks": [float(k) for k in range(10)], "score": 0.99 - 0.01 * j,
                              "kept": r["status"] == "kept", "reject_reason": None if r["status"] == "kept" else "face_too_small",
                              "pipeline_version": "0.1.0", "config_hash": "0123456789abcdef"})
        write_parquet(empty_columns(pa.Table.from_pylist(faces, schema=FACES) if faces else FACES.empty_table(), FACES),
                      run.faces(part), FACES)
        run.mark_done(part, {"part": part, "state": "done", "error": None, "rows": len(rows),
                             "kept": sum(r["status"] == "kept" for r in rows), "faces": len(faces), "host": "test",
                             "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:00:10+00:00",
                             "stage_seconds": {"download": 8.0 + part, "detect": 1.5, "write": 0.1},
                             "pipeline_version": "0.1.0", "config_hash": "0123456789abcdef"})
    # part 2: selected, then failed
    cand = empty_columns(pa.Table.from_pylist(_sample_rows(2, 5, False)).select(["key", "part", "row", "SAMPLE_ID", "URL", "status"]),
                         CANDIDATES)
    write_parquet(cand, run.candidates(2), CANDIDATES)
    run.mark_failed(2, {"part": 2, "state": "failed", "error": "RuntimeError: boom", "traceback": "..."})
    if threshold is not None:
        write_json({"config_hash": "0123456789abcdef", "pipeline": {"stages": {"score": {"threshold": threshold}}}}, run.config)
    return run


def domain(url: str | None) -> str | None:
    """The reference for the `domain` column: urllib's hostname without a leading www."""
    from urllib.parse import urlsplit

    if url is None:
        return None
    host = urlsplit(url).hostname
    return host[4:] if host and host.startswith("www.") else host


__all__ = ["make_run", "domain"]
