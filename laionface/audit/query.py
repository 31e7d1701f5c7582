"""SQL over a run's manifests (DuckDB): views `samples`, `faces`, `parts` (+ `candidates`).

Parquet manifests are scanned lazily (projection and filter pushdown: a lookup by `key` reads
only the row groups whose key statistics can hold it). A run without a table's files gets an
empty view with the schema from laionface.schema, so queries never fail on a young run.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import re
import sys
from pathlib import Path
from typing import IO, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..domains import HOST_PATTERN
from ..errors import ConfigError, InputError
from ..runfolder import RunFolder
from ..schema import CANDIDATES, FACES, PARTS, SAMPLES


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


FORMATS = ("table", "csv", "json", "parquet")
TABLES = ("samples", "faces", "parts", "candidates")

# `domain` as laionface.domains defines it (same regex), for manifests older than 1.1, which do
# not store it.
MACROS = {
    "domain_of(url)": f"nullif(regexp_replace(lower(regexp_extract(url, {_sql_str(HOST_PATTERN)}, 1)), '^www\\.', ''), '')",
    "reason(status)": "split_part(status, ':', 1)",  # `download_failed:timeout` -> `download_failed`
    "detail(status)": "nullif(split_part(status, ':', 2), '')",  # -> `timeout`
    "face_width(box)": "box[3] - box[1]",
    "face_height(box)": "box[4] - box[2]",
    "face_size(box)": "least(box[3] - box[1], box[4] - box[2])",  # the side detect's min_face_size reads
}
# DuckDB identifiers are case-insensitive: samples' `width`/`height` (the downloaded image) collide
# with LAION's `WIDTH`/`HEIGHT` and DuckDB would call them width_1/height_1. The views name them:
RENAMES = {"width_1": "image_width", "height_1": "image_height"}


def _files(run: RunFolder, table: str) -> list[Path]:
    folder = run.root / ("candidates" if table == "candidates" else f"manifests/{table}")
    return sorted(folder.glob("part-*.parquet"))


def parts_table(run: RunFolder) -> pa.Table:
    """The `parts` table: one row per `_done` record, plus `_failed` records of parts not done."""
    rows = []
    done = set()
    for state, folder in (("done", "_done"), ("failed", "_failed")):
        for marker in sorted((run.root / folder).glob("part-*.json")):
            try:
                rec = json.loads(marker.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise InputError(f"{marker}: unreadable parts record ({exc})") from None
            part = int(rec.get("part", marker.name[5:10]))
            if state == "failed" and part in done:
                continue
            done.add(part)
            row = {name: rec.get(name) for name in PARTS.names}
            row.update(part=part, state=rec.get("state") or state)
            for name in ("stage_seconds", "stage_rows"):
                if not isinstance(row[name], (str, type(None))):
                    row[name] = json.dumps(row[name], sort_keys=True)
            row["pipeline_version"] = row["pipeline_version"] or ""
            row["config_hash"] = row["config_hash"] or ""
            rows.append(row)
    rows.sort(key=lambda r: r["part"])
    return pa.Table.from_pylist(rows, schema=PARTS)


_SCHEMAS: dict[tuple, pa.Schema] = {}  # (path, inode, mtime, size) -> schema: a footer is read once per process


def _footer_schema(path: Path) -> pa.Schema:
    st = path.stat()
    ident = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)  # a rewritten file (takedown) is a new inode
    if ident not in _SCHEMAS:
        if len(_SCHEMAS) > 100_000:
            _SCHEMAS.clear()
        _SCHEMAS[ident] = pq.read_schema(path)
    return _SCHEMAS[ident]


@functools.cache
def _shared_database():
    import duckdb

    return duckdb.connect(":memory:")


def _database():
    """One in-memory DuckDB database per process; each query gets its own connection to it
    (`cursor()`, with TEMP views and macros, so queries and runs never see each other's): a new
    database costs ~35 ms, a sixth of a key lookup."""
    return _shared_database().cursor()


def _view_source(con, name: str, schema: pa.Schema, files: list[Path]) -> tuple[str, list[str], bool]:
    """(the FROM source of a view, its column names as they are stored, whether every file has a
    `domain` column). Footers are read once here: files of one schema are scanned as they are;
    mixed versions (say 1.0 and 1.1 manifests) by name."""
    if not files:
        con.register(f"_empty_{name}", schema.empty_table())
        return f"_empty_{name}", schema.names, "domain" in schema.names
    schemas = [_footer_schema(f) for f in files]
    same = all(s.equals(schemas[0]) for s in schemas)
    listed = ", ".join(_sql_str(str(f)) for f in files)
    source = f"read_parquet([{listed}])" if same else f"read_parquet([{listed}], union_by_name=true)"
    names = list(dict.fromkeys(n for s in schemas for n in s.names))
    return source, names, all("domain" in s.names for s in schemas)


def _view_select(name: str, names: list[str], stored: bool) -> str:
    """The view's select list over its source's columns: DuckDB names the second of two names that
    differ only in case `<name>_1` (samples' `width` after LAION's `WIDTH`); RENAMES names those.
    Samples' `domain` is computed for manifests older than 1.1. Built from the footers (no DESCRIBE)."""
    lower = [n.lower() for n in names]
    renamed = [f"{old} AS {new}" for old, new in RENAMES.items() if lower.count(old.removesuffix("_1")) > 1]
    select = "*" + (f" RENAME ({', '.join(renamed)})" if renamed else "")
    if name != "samples":
        return select
    if "domain" not in lower:
        return select + ", domain_of(URL) AS domain"  # every manifest predates 1.1
    if not stored:
        # some do: compute theirs (DuckDB evaluates coalesce's second argument for every row, so
        # only when needed: 1 s -> 9 s on 10M rows)
        return select.replace("*", '* REPLACE (coalesce("domain", domain_of(URL)) AS domain)', 1)
    return select


def connect(run_root: Path | str, sql: str | None = None):
    """A DuckDB connection with the run's views and macros; the caller closes it. With `sql`,
    only the views it names are made (a key lookup need not open the faces manifests)."""
    run = RunFolder(Path(run_root))
    wanted = set(TABLES) if sql is None else set(re.findall(r"\b(" + "|".join(TABLES) + r")\b", sql.lower()))
    con = _database()
    try:
        con.execute(";".join(f"CREATE TEMP MACRO {sig} AS {body}" for sig, body in MACROS.items()))
        for name, schema in (("samples", SAMPLES), ("faces", FACES), ("candidates", CANDIDATES)):
            if name not in wanted:
                continue
            source, names, stored = _view_source(con, name, schema, _files(run, name))
            select = _view_select(name, names, stored)
            con.execute(f"CREATE TEMP VIEW {name} AS SELECT {select} FROM {source}")
        if "parts" in wanted:
            con.register("_parts", parts_table(run))
            con.execute("CREATE TEMP VIEW parts AS SELECT * FROM _parts")
    except BaseException:
        con.close()
        raise
    return con


def _error(exc: Exception) -> Exception:
    """DuckDB's message, one line, as our error (exit 2 on the command line)."""
    import duckdb

    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    if isinstance(exc, duckdb.IOException):
        return InputError(f"reading the manifests failed: {first}")
    return ConfigError(f"{first} (tables: {', '.join(TABLES)}; see README 'Querying the manifests')")


@contextlib.contextmanager
def execute(run_root: Path | str, sql: str) -> Iterator[pa.RecordBatchReader]:
    """Run `sql` over the run's views; yield the result as a stream of record batches."""
    import duckdb

    con = connect(run_root, sql)
    try:
        try:
            rel = con.sql(sql)  # runs every statement; the last one's rows are the result
            reader = rel.to_arrow_reader(65536) if rel is not None else pa.table({"ok": [True]}).to_reader()
        except duckdb.Error as exc:
            raise _error(exc) from None
        yield _guarded(reader)
    finally:
        con.close()


def _guarded(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """Errors raised while streaming (a bad cast in row 1,000,000) become our one-line errors."""

    def batches():
        try:
            yield from reader
        except Exception as exc:  # duckdb surfaces them as pyarrow/duckdb errors
            raise _error(exc) from None

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def query(run_root: Path | str, sql: str) -> pa.Table:
    """Run `sql` over the run's views and return the whole result (the `laionface query` path)."""
    with execute(run_root, sql) as reader:
        return reader.read_all()


# ---------------------------------------------------------------------------- output
def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value).replace("\n", " ")


def format_table(table: pa.Table, max_rows: int = 50, max_width: int = 60, more: bool = False) -> str:
    """An aligned text table: numbers right-aligned, long cells cut with '…'; a note when rows are cut."""
    shown = table.slice(0, max_rows)
    cols = shown.column_names
    cells = [[_cell(v) for v in shown[c].to_pylist()] for c in cols]
    cells = [[v if len(v) <= max_width else v[: max_width - 1] + "…" for v in col] for col in cells]
    numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) for t in shown.schema.types]
    widths = [max([len(c)] + [len(v) for v in col]) for c, col in zip(cols, cells)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(cols), "  ".join("-" * w for w in widths)]
    out += [line([col[i] for col in cells]) for i in range(shown.num_rows)]
    if table.num_rows > max_rows or more:
        out.append(f"(first {max_rows:,} rows shown; add LIMIT, --max-rows N, or --format csv --out FILE for all)")
    else:
        out.append(f"({table.num_rows:,} row{'s' if table.num_rows != 1 else ''})")
    return "\n".join(out)


def _json_default(value):
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def write_result(reader: pa.RecordBatchReader, fmt: str, out: Path | None = None,
                 stream: IO[str] | None = None, max_rows: int = 50) -> int:
    """Write a query result as `fmt` to `out` (or `stream`, stdout by default); return rows written."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format takes one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "parquet" and out is None:
        raise ConfigError("--format parquet needs --out FILE.parquet")
    stream = stream or sys.stdout
    if fmt == "table":
        batches, n = [], 0
        for batch in reader:  # stop reading once the table is full: a huge result is not materialised
            batches.append(batch)
            n += batch.num_rows
            if n > max_rows:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
        text = format_table(table, max_rows, more=n > max_rows) + "\n"
        if out:
            Path(out).write_text(text)
        else:
            stream.write(text)
        return min(n, max_rows)
    if fmt == "parquet":
        n = 0
        with pq.ParquetWriter(out, reader.schema, compression="zstd") as writer:
            for batch in reader:
                writer.write_batch(batch)
                n += batch.num_rows
        return n
    with (open(out, "w", newline="") if out else contextlib.nullcontext(stream)) as fh:
        n = 0
        if fmt == "csv":
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(reader.schema.names)
            for batch in reader:
                for row in zip(*(col.to_pylist() for col in batch.columns)):
                    w.writerow(["" if v is None else _csv_cell(v) for v in row])
                n += batch.num_rows
        else:  # json lines
            for batch in reader:
                for row in batch.to_pylist():
                    fh.write(json.dumps(row, default=_json_default, ensure_ascii=False) + "\n")
                n += batch.num_rows
        return n


def _csv_cell(value):
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=_json_default)
    return value


def run_query(run_root: Path | str, sql: str, fmt: str = "table", out: Path | None = None,
              max_rows: int = 50, stream: IO[str] | None = None) -> int:
    """`laionface query`: run `sql` and write the result; return the number of rows written."""
    with execute(run_root, sql) as reader:
        return write_result(reader, fmt, out, stream, max_rows)


__all__ = ["connect", "execute", "query", "run_query", "parts_table", "format_table", "write_result", "MACROS"]
