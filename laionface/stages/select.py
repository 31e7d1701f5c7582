"""Select: LAION-400M metadata parts -> RUN/candidates/part-NNNNN.parquet.

The ID list's rows of a part come first, from one scan of its SAMPLE_ID column
(`IdList.rows_in`, started for the next part while this one is read). Then the part is read in
windows of whole row groups, `threads` windows at a time (a polars prefiltered scan keeps about
one core busy), only the listed rows decoded; types are normalised and the metadata rules
applied to those rows only; memory is bounded by the windows in flight, not the part. Rows in
the ID list that a rule drops stay in the candidates file with their status, so the funnel and
an auditor see them; rows not in the ID list are not part of the dataset and are only counted.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._polars import pl
from ..errors import ConfigError
from ..idlists import IdList
from ..metaparts import MetaPart
from ..runfolder import atomic_path
from ..schema import CANDIDATES, LAION_COLUMNS, REQUIRED_LAION_COLUMNS
from ..status import KEPT

# Dictionary encoding only pays off on low-cardinality columns; on URLs and captions it
# costs time and bytes.
_DICT_COLUMNS = ["part", "LICENSE", "NSFW", "status", "error"]
_CODECS = ("none", "snappy", "zstd", "lz4", "gzip", "brotli")
# Min/max of keys, URLs and captions in input order span nearly everything, so no reader can skip
# a row group by them; computing them was ~10% of the write.
_STATS_COLUMNS = [name for name in CANDIDATES.names if name not in ("key", "URL", "TEXT")]

@dataclass(frozen=True)
class SelectConfig:
    min_width: int = 0
    min_height: int = 0
    allowed_nsfw: tuple[str, ...] = ()  # empty: every NSFW value allowed
    min_similarity: float = 0.0
    drop_duplicate_urls: bool = True  # first occurrence in (part, row) order wins
    require_caption: bool = True
    # input rows read at a time, in whole row groups: memory is bounded by it. Small enough that
    # the first window reaches the writer early: the write is serial, and it ends the part
    batch_size: int = 131072
    threads: int = 2  # windows decoded at once, each keeping about a core busy; 1 halves the read memory
    # candidates' parquet codec. Uncompressed by default: select is CPU-bound, and snappy was 6-8%
    # of its CPU on 2 cores; candidates are ~12% of the metadata, read once by download. snappy
    # halves them on word-like captions (35 -> 17 MB per 240k rows), zstd to a third.
    compression: str = "none"

@dataclass
class SelectResult:
    part: int
    path: str
    input_rows: int = 0
    matched_rows: int = 0  # in the ID list (all rows when there is no list)
    status_counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None

class _ArrowArray:
    """An Arrow array handed to polars through the Arrow C data interface: `pl.from_arrow`
    imports pyarrow.compute (~80 ms, a twentieth of a `laionface select`) for a check on
    chunked dictionaries we never pass."""

    def __init__(self, array: pa.Array) -> None:
        self.array = array

    def __arrow_c_array__(self, requested_schema=None):
        return self.array.__arrow_c_array__(requested_schema)


def _series(values: np.ndarray) -> pl.Series:
    """numpy -> polars through Arrow buffers, zero-copy: `pl.Series(ndarray)` imports numpy.ma
    (~55 ms) and `pa.array(ndarray)` imports pandas."""
    if values.dtype == np.bool_:
        return _series(values.view(np.uint8)).cast(pl.Boolean)
    values = np.ascontiguousarray(values)
    return pl.Series(_ArrowArray(pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])))


def _scan(path: Path, source: pa.Schema, present: list[str], listed: pl.Series | None, window: tuple[int, int]) -> pl.LazyFrame:
    """Rows [start, start + count) of the part as a polars scan: row numbers, the listed IDs'
    rows only, LAION types.

    The filter on SAMPLE_ID comes first, so polars decodes the other columns only for matching
    rows (parquet prefiltering): with ~12% of a part in LAION-Face most URL/TEXT bytes are never
    materialised, and the normalising below runs on matched rows only. `listed` holds only the
    window's listed IDs: polars builds a hash set of it per query. The reader numbers the rows
    (`row_index_name`): `with_row_index` on the scan would stop the prefiltering. Float
    HEIGHT/WIDTH become integers (NaN -> null); a value that does not fit its type becomes null."""
    types = {name: pl.Series(_ArrowArray(pa.nulls(0, typ))).dtype for name, typ in LAION_COLUMNS.items()}
    start, count = window
    scan = pl.scan_parquet(path, row_index_name="row").slice(start, count)
    if listed is not None:
        scan = scan.filter(pl.col("SAMPLE_ID").cast(pl.Int64, strict=False).is_in(listed.implode()))
    scan = scan.select(["row", *present])
    cols = [pl.col("row").cast(pl.Int64)]
    for name, typ in types.items():
        if name not in present:
            cols.append(pl.lit(None, typ).alias(name))
            continue
        col = pl.col(name)
        if pa.types.is_floating(source.field(name).type) and typ.is_integer():
            col = pl.when(col.is_finite()).then(col.round())
        cols.append(col.cast(typ, strict=False).alias(name))
    return scan.select(cols)


class _SeenSet:
    """The values the duplicate rules have seen (64-bit: URL hashes, SAMPLE_IDs) as sorted runs,
    each more than twice the next (a log-structured merge): a batch is looked up in every run with
    its values sorted (neighbouring searches share their upper steps in cache), its new values
    become a run, and runs of like size merge. O(n log n) over a run, where one sorted array copied on every insert was
    quadratic (12M URL hashes: 5.7 vs 14.8 s, benchmarks/seen_set_bench.py); 8 bytes a value."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> np.ndarray:
        """Add distinct `values`; returns which of them were in the set already."""
        order = np.argsort(values)
        ordered = values[order]
        found = np.zeros(len(values), bool)
        for run in self.runs:
            found |= _in_sorted(ordered, run)
        self.runs.append(ordered[~found])
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            newer, older = self.runs.pop(), self.runs.pop()
            self.runs.append(np.sort(np.concatenate([older, newer]), kind="stable"))  # timsort: one linear merge
        seen = np.empty(len(values), bool)
        seen[order] = found
        return seen


def _in_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Membership of `values` in a sorted unique array (a semi-join without a hash table)."""
    if len(sorted_set) == 0:
        return np.zeros(len(values), bool)
    pos = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[pos] == values


class _Rules:
    """The metadata rules over a batch of normalised rows, and the run's cross-batch state.

    Rule masks are polars expressions computed inside the streaming scan (annotate), repeats within
    a window too; the duplicate rules look across windows and parts, so they keep sets of what
    was seen."""

    def __init__(self, config: SelectConfig) -> None:
        self.config = config
        self.seen_urls = _SeenSet()  # URL hashes, across parts: first in part order wins
        self.checks = self._checks()
        self.names = [KEPT] + [name for name, _, _ in self.checks]  # status of code i
        self._status = pl.Series(self.names, dtype=pl.String)
        self._error = pl.Series([None] + [msg for _, _, msg in self.checks], dtype=pl.String)

    def _checks(self) -> list[tuple[str, pl.Expr | None, str]]:
        """(status, mask, error) in priority order: the first match wins. None: a duplicate rule."""
        c = self.config
        url = pl.col("URL")
        checks: list[tuple[str, pl.Expr | None, str]] = [
            ("null_sample_id", pl.col("SAMPLE_ID").is_null(), "SAMPLE_ID is null"),
            ("null_url", url.is_null(), "URL is null"),
            ("bad_url", ~url.str.contains(r"^[Hh][Tt][Tt][Pp][Ss]?://[^/\s]+").fill_null(True), "URL scheme is not http or https"),
            ("duplicate_sample_id", None, "SAMPLE_ID appeared earlier in this part"),
        ]
        if c.drop_duplicate_urls:
            checks.append(("duplicate_url", None, "URL appeared earlier in the run"))
        if c.require_caption:
            empty = (pl.col("TEXT").str.strip_chars().str.len_bytes() == 0).fill_null(True)
            checks.append(("empty_caption", empty, "TEXT is empty"))
        if c.min_width or c.min_height:
            small = (pl.col("WIDTH") < c.min_width) | (pl.col("HEIGHT") < c.min_height)
            checks.append(("small_meta_size", small.fill_null(False), f"WIDTHxHEIGHT below {c.min_width}x{c.min_height}"))
        if c.allowed_nsfw:
            bad = ~pl.col("NSFW").is_in(pl.Series(list(c.allowed_nsfw), dtype=pl.String).implode())
            checks.append(("nsfw", bad.fill_null(True), f"NSFW not in {list(c.allowed_nsfw)}"))
        if c.min_similarity:
            low = (pl.col("similarity") < c.min_similarity).fill_null(True)
            checks.append(("low_laion_similarity", low, f"similarity below {c.min_similarity}"))
        return checks

    def annotate(self, part: int, scan: pl.LazyFrame, listed: bool) -> pl.LazyFrame:
        """The row-wise rule masks, URL hashes, keys and each value's first row in the window as
        `__`-prefixed columns of the scan, computed on the reader threads. `listed`: the rows come
        from an ID list, whose scan already found each ID's first row in the part."""
        exprs = {name: mask for name, mask, _ in self.checks if mask is not None}
        exprs["key"] = pl.format("{}_{}", pl.lit(f"{part:05d}"), pl.col("SAMPLE_ID").cast(pl.String).fill_null("x"))
        if not listed:
            exprs["sid_first"] = pl.col("SAMPLE_ID").is_first_distinct()
        if self.config.drop_duplicate_urls:
            url_hash = pl.col("URL").fill_null("").hash(seed=0)
            exprs["url_hash"], exprs["url_first"] = url_hash, url_hash.is_first_distinct()
        return scan.with_columns(**{f"__{name}": expr for name, expr in exprs.items()})

    def apply(self, part: int, df: pl.DataFrame, seen_ids: _SeenSet) -> tuple[pl.DataFrame, np.ndarray]:
        """`df` (annotated) with key, part, status and error added, and its rows per status code;
        `seen_ids` (this part's SAMPLE_IDs) and the run's URLs grow."""
        masks = {name: df[f"__{name}"].to_numpy() for name, mask, _ in self.checks if mask is not None}
        n = df.height
        null_sid = masks["null_sample_id"]
        if "__first_id" in df.columns:  # listed rows: IdList.rows_in found each ID's first row in the part
            dup_sid = ~df["__first_id"].to_numpy()
        else:
            dup_sid = _repeated(df["SAMPLE_ID"].fill_null(0).to_numpy(), df["__sid_first"].to_numpy() & ~null_sid, seen_ids)
        masks["duplicate_sample_id"] = dup_sid & ~null_sid
        if self.config.drop_duplicate_urls:
            dup_url = _repeated(df["__url_hash"].to_numpy(), df["__url_first"].to_numpy(), self.seen_urls)
            masks["duplicate_url"] = dup_url & ~masks["null_url"]
        code = np.zeros(n, np.uint32)  # 0 = kept, i+1 = checks[i]
        for i in reversed(range(len(self.checks))):
            code[masks[self.checks[i][0]]] = i + 1
        codes = _series(code)
        base = pl.col("__key")
        unique = _series(~(masks["duplicate_sample_id"] | null_sid))  # else the key gets _r{row}
        out = df.with_columns(
            key=pl.when(unique).then(base).otherwise(pl.format("{}_r{}", base, pl.col("row"))),
            part=pl.lit(part, pl.Int32),
            status=self._status.gather(codes),
            error=self._error.gather(codes),
        )
        return out, np.bincount(code, minlength=len(self.names))


def _repeated(values: np.ndarray, first_in_window: np.ndarray, seen: _SeenSet) -> np.ndarray:
    """Rows whose value came earlier: in this window, or (for a window's first rows) in `seen`."""
    repeated = ~first_in_window
    repeated[first_in_window] = seen.add(values[first_in_window])
    return repeated


def _windows(pf: pq.ParquetFile, min_rows: int) -> list[tuple[int, int]]:
    """(first row, row count) of runs of whole row groups, each at least `min_rows` rows: the
    units a part is read in. Memory is bounded by a window, not the part; whole row groups so no
    row group is decoded twice."""
    windows, start, count = [], 0, 0
    for i in range(pf.metadata.num_row_groups):
        count += pf.metadata.row_group(i).num_rows
        if count >= min_rows:
            windows.append((start, count))
            start, count = start + count, 0
    if count:
        windows.append((start, count))
    return windows


def _collect(rules: _Rules, mp: MetaPart, source: pa.Schema, present: list[str], listed: pl.DataFrame | None,
             window: tuple[int, int]) -> pl.DataFrame:
    """One window of a part: its listed rows (every row without an ID list), normalised and
    annotated with the row-wise rules and, when listed, `__first_id`."""
    if listed is None:
        return rules.annotate(mp.part, _scan(mp.path, source, present, None, window), listed=False).collect()
    start, count = window
    lo, hi = (int(listed["row"].search_sorted(bound)) for bound in (start, start + count))
    if lo == hi:
        return pl.DataFrame()  # nothing listed here: nothing to read
    mine = listed.slice(lo, hi - lo)
    df = rules.annotate(mp.part, _scan(mp.path, source, present, mine["SAMPLE_ID"], window), listed=True).collect()
    if not df["row"].equals(mine["row"].cast(pl.Int64), check_names=False):  # two scans of one file disagree
        raise RuntimeError(f"rows {start}-{start + count}: the listed rows changed between reads")
    return df.with_columns(__first_id=mine["first"])


def _read_ahead(reads: Iterator[Callable[[], pl.DataFrame]], threads: int) -> Iterator[pl.DataFrame]:
    """The reads run `threads` at a time on threads, yielded in order while the caller works on
    the one before. A polars prefiltered collect keeps about one core busy, so two at once halve
    the part's decode on two cores. One more read waits queued, so a thread that finishes while
    the caller is still busy starts the next at once instead of idling (1.040 -> 1.015 s per 2M
    rows, median of 16). Bounded: at most threads + 2 windows read ahead of the caller; polars' own
    collect_batches and sink_batches run the whole part ahead of a slow consumer and buffer it,
    so memory grew with the part."""
    with ThreadPoolExecutor(threads) as reader:
        pending: list = []
        for read in reads:
            pending.append(reader.submit(read))
            if len(pending) > threads + 1:
                yield pending.pop(0).result()
        for done in pending:
            yield done.result()


def _narrow_strings(chunk: pa.Array) -> pa.Array:
    """A large_string array as string: its offsets narrowed to int32, validity and bytes shared."""
    offsets = np.frombuffer(chunk.buffers()[1], np.int64, count=chunk.offset + len(chunk) + 1)
    if offsets[-1] >= 2**31:  # over 2 GiB of text in one chunk: let Arrow say so
        return chunk.cast(pa.string())
    narrowed = pa.py_buffer(offsets.astype(np.int32))
    return pa.Array.from_buffers(pa.string(), len(chunk), [chunk.buffers()[0], narrowed, chunk.buffers()[2]], offset=chunk.offset)


def _as_candidates(df: pl.DataFrame) -> pa.Table:
    """A batch in the CANDIDATES schema. polars hands out large_string; not Table.cast, whose
    first use imports pyarrow.compute (~0.1 s of a ~1.5 s `laionface select`)."""
    table = df.select(CANDIDATES.names).to_arrow()
    columns = [pa.chunked_array([_narrow_strings(c) for c in col.chunks], pa.string()) if col.type == pa.large_string() else col
               for col in table.columns]
    return pa.Table.from_arrays(columns, schema=CANDIDATES)


def select_part(mp: MetaPart, ids: IdList | None, rules: _Rules, out: Path,
                progress: Callable[[int], object] | None = None) -> SelectResult:
    """Stream one metadata part into `out`; never raises for bad input (the result says why).
    `progress(rows)` after each window's input rows are handled."""
    result = SelectResult(mp.part, str(mp.path))
    try:
        pf = pq.ParquetFile(mp.path)
    except Exception as exc:  # corrupt or unreadable: name the file, let other parts finish
        result.error = f"{mp.path}: unreadable parquet ({type(exc).__name__}: {exc})"
        return result
    source = pf.schema_arrow
    present = [n for n in LAION_COLUMNS if n in source.names]
    missing = [n for n in REQUIRED_LAION_COLUMNS if n not in present]
    if missing:
        result.error = f"{mp.path}: missing column {missing[0]} (has {', '.join(source.names)})"
        return result
    seen_ids = _SeenSet()
    tally = np.zeros(len(rules.names), np.int64)
    try:
        with atomic_path(out) as tmp, pq.ParquetWriter(tmp, CANDIDATES, compression=rules.config.compression, use_dictionary=_DICT_COLUMNS,
                                                     write_statistics=_STATS_COLUMNS) as writer, \
                ThreadPoolExecutor(1) as write_thread:
            windows = _windows(pf, rules.config.batch_size)
            listed_rows = ids.rows_in(mp.path, mp.part) if ids is not None else None
            reads = (partial(_collect, rules, mp, source, present, listed_rows, w) for w in windows)
            written = None  # the previous window's write, in flight while this window's rules run
            for (_, rows), df in zip(windows, _read_ahead(reads, rules.config.threads)):
                if progress is not None:
                    progress(rows)
                if df.height == 0:
                    continue
                df, counts = rules.apply(mp.part, df, seen_ids)
                tally += counts
                table = _as_candidates(df)
                if written is not None:
                    written.result()  # in order, and at most one batch waiting: memory stays bounded
                written = write_thread.submit(writer.write_table, table)
            if written is not None:
                written.result()
    except Exception as exc:  # a corrupt row group mid-file: the part fails, named
        result.error = f"{mp.path}: failed while reading ({type(exc).__name__}: {exc})"
        return result
    result.input_rows = pf.metadata.num_rows
    result.matched_rows = int(tally.sum())
    result.status_counts = dict(sorted((name, int(c)) for name, c in zip(rules.names, tally) if c))
    return result

def select(meta_parts: list[MetaPart], ids: IdList | None, config: SelectConfig, out_for_part,
           progress: Callable[[int], object] | None = None) -> list[SelectResult]:
    """Run select over parts in part order (duplicate URLs: first in that order wins).
    `progress(rows)` as each window of input rows is handled, so a bar can follow rows."""
    if config.threads < 1 or config.batch_size < 1:
        raise ConfigError(f"select: threads >= 1 and batch_size >= 1 (got {config.threads}, {config.batch_size})")
    if config.compression not in _CODECS:
        raise ConfigError(f"select: compression {config.compression!r} is not one of {', '.join(_CODECS)}")
    rules = _Rules(config)
    results: list[SelectResult] = []
    try:
        for i, mp in enumerate(meta_parts):
            if ids is not None and i + 1 < len(meta_parts):  # the next part's listed rows, found while this one is read
                ids.prefetch(meta_parts[i + 1].path, meta_parts[i + 1].part)
            results.append(select_part(mp, ids, rules, out_for_part(mp.part), progress))
    finally:
        if ids is not None:
            ids.forget_prefetched()
    return results
