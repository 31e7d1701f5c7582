"""Takedown: remove samples by URL, domain or SAMPLE_ID from every file of a run.

Matching rows keep their key, part, row and SAMPLE_ID with status `taken_down` (so the funnel
still adds up and an auditor can show the removal); their URL, caption and every other field
are cleared in candidates and samples, their faces rows are deleted, and they are removed
from the LAION-FACE, LAION-FACE-cropped and raw img2dataset shards and from the embeddings.
Only the shards that held them are rewritten (atomically); every other file keeps its bytes.
`RUN/takedowns.parquet` records who, when, what kind, the request file's hash and the counts,
never the URLs themselves. Running the same request again changes nothing.
"""

from __future__ import annotations

import getpass
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..domains import domain, domains
from ..errors import ConfigError, MissingInputError
from ..runfolder import RunFolder, atomic_path, read_parquet, write_parquet
from ..schema import CANDIDATES, FACES, SAMPLES
from ..status import drop
from .rewrite import remove_embedding_rows, remove_members

KINDS = ("urls", "domains", "ids")
# Columns that identify the row and stay; everything else of a removed row is cleared.
_KEEP = {"key", "part", "row", "SAMPLE_ID", "status", "error", "pipeline_version", "config_hash"}
TAKEDOWNS = pa.schema([
    pa.field("request_id", pa.string()), pa.field("requested_at", pa.string()), pa.field("by", pa.string()),
    pa.field("kind", pa.string()), pa.field("request_file", pa.string()), pa.field("request_sha256", pa.string()),
    pa.field("entries", pa.int64()), pa.field("samples_removed", pa.int64()), pa.field("faces_removed", pa.int64()),
    pa.field("shards_rewritten", pa.list_(pa.string())), pa.field("parts", pa.list_(pa.int32())),
])


@dataclass(frozen=True)
class Request:
    kind: str  # urls | domains | ids
    entries: frozenset
    path: Path
    sha256: str

    @classmethod
    def read(cls, kind: str, path: str | Path) -> "Request":
        if kind not in KINDS:
            raise ConfigError(f"takedown kind {kind!r}; use one of {', '.join(KINDS)}")
        path = Path(path)
        if not path.exists():
            raise MissingInputError(f"takedown list {path} does not exist; give a text file with one entry per line")
        data = path.read_bytes()
        lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("#")]
        if kind == "ids":
            try:
                entries = frozenset(int(x) for x in lines)
            except ValueError as exc:
                raise ConfigError(f"{path}: --ids takes one integer SAMPLE_ID per line ({exc})") from None
        elif kind == "domains":
            entries = frozenset(domain(d if "://" in d else f"http://{d}") for d in lines)
        else:
            entries = frozenset(lines)
        return cls(kind, entries, path, hashlib.sha256(data).hexdigest())

    def matches(self, urls: list[str | None], ids: list[int | None]) -> np.ndarray:
        if self.kind == "urls":
            return np.array([u in self.entries for u in urls], bool)
        if self.kind == "ids":
            return np.array([i in self.entries for i in ids], bool)
        hosts = domains(pa.array(urls, pa.string())).to_pylist()
        return np.array([_in_domains(h, self.entries) for h in hosts], bool)


def _in_domains(host: str | None, wanted: frozenset) -> bool:
    """example.com matches example.com and any subdomain of it."""
    while host:
        if host in wanted:
            return True
        host = host.partition(".")[2]
    return False


@dataclass
class PartPlan:
    part: int
    keys: list[str] = field(default_factory=list)
    shards: set[str] = field(default_factory=set)  # RUN-relative tars to rewrite
    faces: int = 0


def plan(run: RunFolder, request: Request) -> list[PartPlan]:
    """What a takedown would change: matched keys per part and the shards that hold them."""
    plans = []
    for part in run.candidate_parts():
        source = run.samples(part) if run.samples(part).exists() else run.candidates(part)
        t = read_parquet(source)
        live = pc.not_equal(t["status"], "taken_down").to_numpy(zero_copy_only=False)
        hit = request.matches(t["URL"].to_pylist(), t["SAMPLE_ID"].to_pylist()) & live
        if not hit.any():
            continue
        rows = t.filter(pa.array(hit))
        p = PartPlan(part, rows["key"].to_pylist())
        for col in ("shard", "raw_shard"):
            if col in rows.column_names:
                p.shards.update(s for s in rows[col].to_pylist() if s)
        if run.faces(part).exists():
            faces = read_parquet(run.faces(part))
            mine = faces.filter(pc.is_in(faces["key"], pa.array(p.keys)))
            p.faces = mine.num_rows
            p.shards.update(s for s in mine["crop_shard"].to_pylist() if s)
        plans.append(p)
    return plans


def _scrub(table: pa.Table, keys: set[str], schema: pa.Schema, request_id: str) -> pa.Table:
    rows = table.to_pylist()
    for r in rows:
        if r["key"] in keys:
            for name in r:
                if name not in _KEEP:
                    r[name] = None
            r["status"] = drop("taken_down")
            r["error"] = f"removed on request {request_id} (see takedowns.parquet)"
    return pa.Table.from_pylist(rows, schema=schema)


def _rewrite_raw_index(parquet: Path, drop_raw_keys: set[str]) -> None:
    """img2dataset's per-shard parquet holds URL and caption: drop the removed rows."""
    t = read_parquet(parquet)
    keep = pc.invert(pc.is_in(t["key"], pa.array(sorted(drop_raw_keys), pa.string())))
    with atomic_path(parquet) as tmp:
        pq.write_table(t.filter(keep), tmp)


def apply(run: RunFolder, request: Request, plans: list[PartPlan], by: str | None = None) -> dict:
    """Carry out `plans` (from `plan`) and append the record to RUN/takedowns.parquet."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    request_id = hashlib.sha256(f"{request.sha256}{now}".encode()).hexdigest()[:12]
    rewritten: list[str] = []
    for p in plans:
        keys = set(p.keys)
        samples = read_parquet(run.samples(p.part)) if run.samples(p.part).exists() else None
        stems: dict[str, set[str]] = defaultdict(set)  # tar -> member stems to drop
        if samples is not None:
            mine = samples.filter(pc.is_in(samples["key"], pa.array(sorted(keys))))
            for r in mine.select(["key", "shard", "raw_shard", "raw_key"]).to_pylist():
                if r["shard"]:
                    stems[r["shard"]].add(r["key"])
                if r["raw_shard"]:
                    stems[r["raw_shard"]].add(r["raw_key"])
        faces = read_parquet(run.faces(p.part)) if run.faces(p.part).exists() else None
        if faces is not None:
            is_mine = pc.is_in(faces["key"], pa.array(sorted(keys)))
            for r in faces.filter(is_mine).select(["face_key", "crop_shard"]).to_pylist():
                if r["crop_shard"]:
                    stems[r["crop_shard"]].add(r["face_key"])
        # Manifests are rewritten only after the tars: an interrupted takedown, run again, still
        # finds in them every tar that holds a removed sample or crop.
        for tar, drop_stems in sorted(stems.items()):
            remove_members(run.root / tar, drop_stems)
            index = (run.root / tar).with_suffix(".parquet")
            if tar.startswith("raw/") and index.exists():
                _rewrite_raw_index(index, drop_stems)
            rewritten.append(tar)
        remove_embedding_rows(run, p.part, keys)
        if faces is not None:
            write_parquet(faces.filter(pc.invert(is_mine)), run.faces(p.part), FACES)
        write_parquet(_scrub(run.read_candidates(p.part), keys, CANDIDATES, request_id), run.candidates(p.part), CANDIDATES)
        if samples is not None:
            write_parquet(_scrub(samples, keys, SAMPLES, request_id), run.samples(p.part), SAMPLES)
    record = {
        "request_id": request_id, "requested_at": now, "by": by or getpass.getuser(), "kind": request.kind,
        "request_file": request.path.name, "request_sha256": request.sha256, "entries": len(request.entries),
        "samples_removed": sum(len(p.keys) for p in plans), "faces_removed": sum(p.faces for p in plans),
        "shards_rewritten": rewritten, "parts": [p.part for p in plans],
    }
    log = run.root / "takedowns.parquet"
    old = read_parquet(log) if log.exists() else TAKEDOWNS.empty_table()
    with atomic_path(log) as tmp:
        pq.write_table(pa.concat_tables([old, pa.Table.from_pylist([record], schema=TAKEDOWNS)]), tmp)
    return record
