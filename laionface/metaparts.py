"""LAION-400M metadata parts: which files a --meta path, folder or glob names, and their part numbers."""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, MissingInputError

_PART_RE = re.compile(r"part-(\d+)")

# LAION-Face 20M = these LAION-400M parts; 50M = all 32 (DESIGN.md).
SUBSETS: dict[str, tuple[int, ...]] = {
    "20M": (0, 2, 5, 8, 13, 15, 17, 18, 21, 22, 24, 25, 28),
    "50M": tuple(range(32)),
}


@dataclass(frozen=True)
class MetaPart:
    """One unit of select work: a metadata file and the LAION part index it holds."""

    part: int
    path: Path


def plan_parts(meta: str, parts: tuple[int, ...] = (), subset: str | None = None) -> list[MetaPart]:
    """Expand a path, folder or glob into metadata parts, numbered by `part-000NN` in the name."""
    p = Path(meta)
    if p.is_dir():
        paths = sorted(p.glob("*.parquet"))
    elif any(c in meta for c in "*?["):
        paths = sorted(Path(x) for x in glob.glob(meta))
    elif p.exists():
        paths = [p]
    else:
        raise MissingInputError(f"metadata {meta} does not exist; pass --meta a parquet file, a folder or a glob")
    if not paths:
        raise MissingInputError(f"no .parquet files match {meta}")
    planned = []
    for i, path in enumerate(paths):
        m = _PART_RE.search(path.name)
        planned.append(MetaPart(int(m.group(1)) if m else i, path))
    if len({mp.part for mp in planned}) != len(planned):
        raise InputError(f"two metadata files map to the same part number under {meta}; name them part-000NN")
    wanted = set(parts)
    if subset:
        if subset not in SUBSETS:
            raise InputError(f"unknown subset {subset!r}; use one of {', '.join(SUBSETS)}")
        wanted = wanted & set(SUBSETS[subset]) if wanted else set(SUBSETS[subset])
    return [mp for mp in planned if not wanted or mp.part in wanted]
