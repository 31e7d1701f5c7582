"""Select: LAION-400M metadata parts -> RUN/candidates/part-NNNNN.parquet.

Streams each part batch by batch (memory bounded by a batch, not the part), semi-joins
SAMPLE_ID against the ID list, normalises types, and applies the metadata rules. Rows in the
ID list that a rule drops stay in the candidates file with their status, so the funnel
and an auditor see them; rows not in the ID list are not part of the dataset and are only
counted.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import InputError, MissingInputError
from ..idlists import SUBSETS, IdList
from ..runfolder import atomic_path
from ..schema import CANDIDATES, LAION_COLUMNS, REQUIRED_LAION_COLUMNS
from ..status import KEPT

_PART_RE = re.compile(r"part-(\d+)")
# Dictionary encoding only pays off on low-cardinality columns; on URLs and captions it
# costs time and bytes.
_DICT_COLUMNS = ["part", "LICENSE", "NSFW", "status", "error"]

@dataclass(frozen=True)
class SelectConfig:
    min_width: int = 0
    min_height: int = 0
    allowed_nsfw: tuple[str, ...] = ()  # empty: every NSFW value allowed
    min_similarity: float = 0.0
    drop_duplicate_urls: bool = True  # first occurrence in (part, row) order wins
    require_caption: bool = True
    batch_size: int = 65536

@dataclass(frozen=True)
class MetaPart:
    """One unit of select work: a metadata file and the LAION part index it holds."""

    part: int
    path: Path

@dataclass
class SelectResult:
    part: int
    path: str
    input_rows: int = 0
    matched_rows: int = 0  # in the ID list (all rows when there is no list)
    status_counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None

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

def _normalise(batch: pa.Table, present: list[str]) -> pa.Table:
    """Cast to the schema's LAION types; float HEIGHT/WIDTH become integers."""
    n = batch.num_rows
    cols = {}
    for name, typ in LAION_COLUMNS.items():
        if name not in present:
            cols[name] = pa.nulls(n, typ)
            continue
        col = batch.column(name).combine_chunks() if isinstance(batch, pa.Table) else batch.column(name)
        if pa.types.is_floating(col.type) and pa.types.is_integer(typ):
            col = pc.if_else(pc.is_finite(col), pc.round(col), pa.scalar(None, col.type))  # NaN -> null
        cols[name] = col.cast(typ, safe=False)
    return pa.table(cols)

def _sorted_unique(values: np.ndarray) -> np.ndarray:
    # np.unique's hash path is slow on numpy 2.x for large int arrays; sort + adjacent compare is not
    if len(values) == 0:
        return values
    v = np.sort(values)
    return v[np.r_[True, v[1:] != v[:-1]]]


def _in_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Membership of `values` in a sorted unique array (a semi-join without a hash table)."""
    if len(sorted_set) == 0:
        return np.zeros(len(values), bool)
    pos = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[pos] == values


def _first_seen(values: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask of values repeated (earlier in `values` or in `seen`), and `seen` grown (sorted)."""
    dup = _in_sorted(values, seen)
    order = np.argsort(values, kind="stable")  # stable: the first occurrence sorts first
    ordered = values[order]
    later = np.zeros(len(values), bool)
    later[order[1:]] = ordered[1:] == ordered[:-1]
    dup |= later
    new = _sorted_unique(values[~dup])
    return dup, np.insert(seen, np.searchsorted(seen, new), new)


class _Rules:
    """Per-run state for the rules that look across rows (duplicates)."""

    def __init__(self, config: SelectConfig) -> None:
        self.config = config
        self.seen_urls = np.empty(0, np.uint64)

    def statuses(self, t: pa.Table, seen_ids: np.ndarray) -> tuple[pa.Array, pa.Array, np.ndarray, np.ndarray, dict[str, int]]:
        c = self.config
        n = t.num_rows
        sid = t["SAMPLE_ID"]
        url = t["URL"]
        checks: list[tuple[str, np.ndarray, str]] = []  # in priority order: first match wins

        null_sid = sid.is_null().to_numpy(zero_copy_only=False)
        null_url = url.is_null().to_numpy(zero_copy_only=False)
        checks.append(("null_sample_id", null_sid, "SAMPLE_ID is null"))
        checks.append(("null_url", null_url, "URL is null"))
        is_http = pc.match_substring_regex(url, r"^[Hh][Tt][Tt][Pp][Ss]?://[^/\s]+").fill_null(True)
        checks.append(("bad_url", ~is_http.to_numpy(zero_copy_only=False), "URL scheme is not http or https"))

        sid_np = sid.fill_null(-1).to_numpy()
        dup_sid, seen_ids = _first_seen(np.where(null_sid, np.arange(-n, 0), sid_np), seen_ids)
        checks.append(("duplicate_sample_id", dup_sid & ~null_sid, "SAMPLE_ID appeared earlier in this part"))
        if c.drop_duplicate_urls:
            hashes = pl.from_arrow(url.fill_null("")).hash(seed=0).to_numpy()
            dup_url, self.seen_urls = _first_seen(hashes, self.seen_urls)
            checks.append(("duplicate_url", dup_url & ~null_url, "URL appeared earlier in the run"))
        if c.require_caption:
            empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(t["TEXT"])), 0).fill_null(True)
            checks.append(("empty_caption", empty.to_numpy(zero_copy_only=False), "TEXT is empty"))
        if c.min_width or c.min_height:
            small = pc.or_(pc.less(t["WIDTH"], c.min_width), pc.less(t["HEIGHT"], c.min_height)).fill_null(False)
            checks.append(("small_meta_size", small.to_numpy(zero_copy_only=False), f"WIDTHxHEIGHT below {c.min_width}x{c.min_height}"))
        if c.allowed_nsfw:
            bad = pc.invert(pc.is_in(t["NSFW"], pa.array(list(c.allowed_nsfw)))).fill_null(True)
            checks.append(("nsfw", bad.to_numpy(zero_copy_only=False), f"NSFW not in {list(c.allowed_nsfw)}"))
        if c.min_similarity:
            low = pc.less(t["similarity"], c.min_similarity).fill_null(True)
            checks.append(("low_laion_similarity", low.to_numpy(zero_copy_only=False), f"similarity below {c.min_similarity}"))

        code = np.zeros(n, np.int8)  # 0 = kept, i+1 = checks[i]
        for i, (_, mask, _) in reversed(list(enumerate(checks))):
            code[mask] = i + 1
        names = np.array([KEPT] + [name for name, _, _ in checks], dtype=object)
        errors = np.array([None] + [msg for _, _, msg in checks], dtype=object)
        tally = np.bincount(code, minlength=len(names))  # counting the int codes, not the strings
        counts = {str(names[i]): int(c) for i, c in enumerate(tally) if c}
        return pa.array(names[code], pa.string()), pa.array(errors[code], pa.string()), seen_ids, dup_sid, counts

def _keys(part: int, sid: pa.ChunkedArray | pa.Array, rows: np.ndarray, unique: np.ndarray) -> pa.Array:
    """`{part:05d}_{SAMPLE_ID}`; rows with a null or repeated SAMPLE_ID also get `_r{row}`."""
    base = pc.binary_join_element_wise(f"{part:05d}", pc.cast(sid, pa.string()).fill_null("x"), "_")
    with_row = pc.binary_join_element_wise(base, pc.cast(pa.array(rows), pa.string()), "_r")
    return pc.if_else(pa.array(unique), base, with_row)

def _batches(pf: pq.ParquetFile, columns: list[str], batch_size: int) -> Iterator[tuple[np.ndarray, pa.Table]]:
    """Every row, one row group at a time, with its input row numbers.

    Iterating the whole file at once keeps decoded batches alive in pyarrow (memory then grows
    with the part); per row group it stays bounded by one group."""
    row0 = 0
    for i in range(pf.num_row_groups):
        for batch in pf.iter_batches(batch_size=batch_size, row_groups=[i], columns=columns):
            yield np.arange(row0, row0 + batch.num_rows, dtype=np.int64), pa.Table.from_batches([batch])
            row0 += batch.num_rows


def _matched(path: Path, pf: pq.ParquetFile, columns: list[str], wanted: np.ndarray) -> Iterator[tuple[np.ndarray, pa.Table]]:
    """Rows whose SAMPLE_ID is in `wanted`, one row group at a time, with their input row numbers.

    polars decodes SAMPLE_ID first and the other columns only for matching rows (parquet
    prefiltering): with ~12% of a part in LAION-Face, most URL/TEXT bytes are never decoded."""
    id_set = pl.Series(wanted).implode()
    start = 0
    for i in range(pf.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        frame = (
            pl.scan_parquet(path).slice(start, n).with_row_index("__row", offset=start).select(["__row", *columns])
            .filter(pl.col("SAMPLE_ID").cast(pl.Int64, strict=False).is_in(id_set)).collect()
        )
        start += n
        if frame.height:
            table = frame.to_arrow()
            yield table["__row"].combine_chunks().to_numpy().astype(np.int64), table.drop_columns(["__row"])


def select_part(mp: MetaPart, ids: IdList | None, rules: _Rules, out: Path) -> SelectResult:
    """Stream one metadata part into `out`; never raises for bad input (the result says why)."""
    result = SelectResult(mp.part, str(mp.path))
    try:
        pf = pq.ParquetFile(mp.path)
    except Exception as exc:  # corrupt or unreadable: name the file, let other parts finish
        result.error = f"{mp.path}: unreadable parquet ({type(exc).__name__}: {exc})"
        return result
    present = [n for n in LAION_COLUMNS if n in pf.schema_arrow.names]
    missing = [n for n in REQUIRED_LAION_COLUMNS if n not in present]
    if missing:
        result.error = f"{mp.path}: missing column {missing[0]} (has {', '.join(pf.schema_arrow.names)})"
        return result
    wanted = ids.for_part(mp.part) if ids is not None else None  # sorted, unique
    seen_ids = np.empty(0, np.int64)
    counts: dict[str, int] = {}
    try:
        with atomic_path(out) as tmp, pq.ParquetWriter(tmp, CANDIDATES, compression="zstd", use_dictionary=_DICT_COLUMNS) as writer:
            source = _batches(pf, present, rules.config.batch_size) if wanted is None else _matched(mp.path, pf, present, wanted)
            for rows, batch in source:
                t = _normalise(batch, present)
                if t.num_rows == 0:
                    continue
                status, error, seen_ids, dup_sid, batch_counts = rules.statuses(t, seen_ids)
                unique = ~(dup_sid | t["SAMPLE_ID"].is_null().to_numpy(zero_copy_only=False))
                for name, c in batch_counts.items():
                    counts[name] = counts.get(name, 0) + c
                out_t = pa.table(
                    {"key": _keys(mp.part, t["SAMPLE_ID"], rows, unique), "part": pa.array(np.full(t.num_rows, mp.part, np.int32)),
                     "row": pa.array(rows), **{n: t[n] for n in LAION_COLUMNS}, "status": status, "error": error},
                    schema=CANDIDATES,
                )
                writer.write_table(out_t)
    except Exception as exc:  # a corrupt row group mid-file: the part fails, named
        result.error = f"{mp.path}: failed while reading ({type(exc).__name__}: {exc})"
        return result
    result.input_rows = pf.metadata.num_rows
    result.matched_rows = sum(counts.values())
    result.status_counts = dict(sorted(counts.items()))
    return result

def select(meta_parts: list[MetaPart], ids: IdList | None, config: SelectConfig, out_for_part, progress=None) -> list[SelectResult]:
    """Run select over parts in part order (duplicate URLs: first in that order wins)."""
    rules = _Rules(config)
    results = []
    for mp in meta_parts:
        results.append(select_part(mp, ids, rules, out_for_part(mp.part)))
        if progress is not None:
            progress.update(1)
    return results
