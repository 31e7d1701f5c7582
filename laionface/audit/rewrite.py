"""Removing samples from files already written: shards and embeddings (takedown, dedup).

Each rewrite is atomic and keeps the order and headers of what stays, so a file that loses
nothing is never touched and one that does differs only by the removed samples.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..runfolder import RunFolder, atomic_path, read_parquet


def remove_members(path: Path, drop_stems: set[str]) -> None:
    """Copy a tar without the members of `drop_stems`, keeping order and headers; atomic."""
    with atomic_path(path) as tmp, tarfile.open(path) as src, tarfile.open(tmp, "w", format=src.format) as dst:
        for member in src:
            if member.name.split(".", 1)[0] in drop_stems:
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)


def remove_embedding_rows(run: RunFolder, part: int, keys: set[str]) -> bool:
    """Drop the rows of `keys` from a part's img_emb, text_emb and metadata files (kept aligned)."""
    root = run.embeddings
    meta_path = root / "metadata" / f"metadata_{part}.parquet"
    if not meta_path.exists():
        return False
    meta = read_parquet(meta_path)
    keep = ~np.isin(np.array(meta["key"].to_pylist(), dtype=object), list(keys))
    if keep.all():
        return False
    for name in ("img_emb", "text_emb"):
        path = root / name / f"{name}_{part}.npy"
        if path.exists():
            arr = np.load(path)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, arr[keep])
    with atomic_path(meta_path) as tmp:
        pq.write_table(meta.filter(pa.array(keep)), tmp)
    return True
