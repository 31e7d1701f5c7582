"""The run folder (DESIGN.md): where each file of a run lives, and atomic writes.

A part is done when `_done/part-NNNNN.json` exists; it is written last, so resume is a glob.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .schema import validate


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp path beside `final`; rename it over `final` only if the block succeeds.

    The temp name is fixed, not random: a run killed mid-write leaves at most one stale temp
    per file, which the re-run overwrites (each file has one writer: its part's task)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp"
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_parquet(table: pa.Table, path: Path, schema: pa.Schema | None = None) -> None:
    """Validate against `schema` (when given) and write atomically.

    No timestamps or uuids go into the file, so the same table gives the same bytes.
    """
    if schema is not None:
        validate(table, schema, where=str(path))
        table = table.cast(schema)  # the schema's nullability flags and metadata, exactly
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)


def read_parquet(path: Path | str, columns: list[str] | None = None) -> pa.Table:
    """One parquet file as a table. Not pq.read_table: it goes through pyarrow.dataset, whose
    import pulls in pandas (~0.35 s, a sixth of a `laionface select`)."""
    with pq.ParquetFile(path) as f:
        return f.read(columns=columns)


def write_json(obj: object, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def part_name(part: int) -> str:
    return f"part-{part:05d}"


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -- per-part files -------------------------------------------------------------
    def candidates(self, part: int) -> Path:
        return self.root / "candidates" / f"{part_name(part)}.parquet"

    def raw(self, part: int) -> Path:
        return self.root / "raw" / part_name(part)

    def samples(self, part: int) -> Path:
        return self.root / "manifests" / "samples" / f"{part_name(part)}.parquet"

    def faces(self, part: int) -> Path:
        return self.root / "manifests" / "faces" / f"{part_name(part)}.parquet"

    def laion_face(self, part: int) -> Path:
        return self.root / "laion_face" / part_name(part)

    def laion_face_cropped(self, part: int) -> Path:
        return self.root / "laion_face_cropped" / part_name(part)

    def imported_detections(self, part: int) -> Path:
        """LAION-Face's published detections for the part (laionface import-detections)."""
        return self.root / "imported_detections" / f"sample2detect_{part}.pth"

    def done_marker(self, part: int) -> Path:
        return self.root / "_done" / f"{part_name(part)}.json"

    def failed_marker(self, part: int) -> Path:
        return self.root / "_failed" / f"{part_name(part)}.json"

    # -- run-level files --------------------------------------------------------------
    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    # -- discovery ------------------------------------------------------------------------
    def _parts_in(self, folder: str, pattern: str) -> list[int]:
        return sorted(int(p.name[5:10]) for p in (self.root / folder).glob(pattern))

    def candidate_parts(self) -> list[int]:
        return self._parts_in("candidates", "part-*.parquet")

    def done_parts(self) -> list[int]:
        return self._parts_in("_done", "part-*.json")

    def is_done(self, part: int) -> bool:
        return self.done_marker(part).exists()

    def mark_done(self, part: int, record: dict) -> None:
        """Written last: the part's manifests and shards are already in place."""
        self.failed_marker(part).unlink(missing_ok=True)
        write_json(record, self.done_marker(part))

    def mark_failed(self, part: int, record: dict) -> None:
        write_json(record, self.failed_marker(part))

    def read_candidates(self, part: int) -> pa.Table:
        return read_parquet(self.candidates(part))
