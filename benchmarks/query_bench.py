"""`laionface query` on a 10M-row samples manifest: a funnel-by-domain group-by and a key lookup.

    python benchmarks/query_bench.py [--rows 10000000] [--quick] [--repeats 5] [--no-record]

Generates once (cached under benchmarks/_work/query/rows-N/) a run folder whose
manifests/samples/ holds --rows rows of the SAMPLES schema in 100 part files, written by
laionface.runfolder.write_parquet, the function (and so the parquet settings: zstd, statistics,
pyarrow's dictionary encoding, one row group per part) the runner writes samples manifests with;
keys sorted within a file, as the runner writes them; realistic values: ~45% kept, download
failures by kind, no_face, select drops; URLs over ~20,000 Zipf-distributed domains (some with `www.` and ports),
LAION-like captions, sizes, LICENSE and NSFW.

Times, through laionface.audit.query.query (what `laionface query` runs: open the views, run the
SQL, fetch the result), the median of --repeats runs, both repeated in this process (one DuckDB
database per process, footers cached) and as the first query of a fresh process each time, of
  group-by:   SELECT status, domain, count(*) FROM samples GROUP BY ALL   (target <= 1 s)
  provenance: SELECT * FROM samples WHERE key = '<a key in the middle of part 57>'  (target <= 0.2 s)
and, separately, one `laionface query` subprocess per query (interpreter start and imports included).
--quick: 1,000,000 rows, nothing recorded. Appends a dated block to benchmarks/RESULTS.md otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
WORK = Path(__file__).with_name("_work") / "query"
N_PARTS = 100
N_DOMAINS = 20_000

GROUP_BY = "SELECT status, domain, count(*) AS n FROM samples GROUP BY ALL"
LOOKUP = "SELECT * FROM samples WHERE key = '{key}'"

# (status, share): a LAION-Face-like funnel
STATUSES = [
    ("kept", 0.45), ("no_face", 0.12), ("face_too_small", 0.04), ("download_failed:http_404", 0.12),
    ("download_failed:timeout", 0.05), ("download_failed:connection", 0.04), ("download_failed:decode", 0.03),
    ("download_failed:http_5xx", 0.01), ("download_failed:dns", 0.03), ("download_failed:http_4xx", 0.02),
    ("opted_out", 0.01), ("duplicate_url", 0.02), ("nsfw", 0.03), ("small_meta_size", 0.02), ("empty_caption", 0.01),
]


def _key_of(part: int, index: int, rows_per_part: int) -> str:
    return f"{part:05d}_{1_000_000_000 + part * 10_000_000 + index * 7}"


def generate(root: Path, rows: int) -> Path:
    """The synthetic run folder (cached)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from laionface.domains import domains as url_domains
    from laionface.runfolder import write_parquet
    from laionface.schema import MANIFEST_VERSION, SAMPLES

    folder = root / "manifests" / "samples"
    marker = root / "_complete"
    if marker.exists() and marker.read_text().split() == [str(rows), MANIFEST_VERSION]:
        return root
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    tlds = np.array(["com", "net", "org", "co.uk", "de", "fr", "com.au", "jp", "ru", "info"])
    words = np.array("photo img cdn media static shop news blog pics stock images assets store style daily world".split())
    domains = [f"{words[i % len(words)]}{i}.{tlds[i % len(tlds)]}" for i in range(N_DOMAINS)]
    hosts = pa.array([("www." if i % 3 == 0 else "") + d.upper() if i % 97 == 0 else ("www." if i % 3 == 0 else "") + d
                      for i, d in enumerate(domains)])
    ports = pa.array([":8080" if i % 50 == 0 else "" for i in range(N_DOMAINS)])
    zipf_p = 1.0 / np.arange(1, N_DOMAINS + 1) ** 1.1
    zipf_p /= zipf_p.sum()
    status_names = pa.array([s for s, _ in STATUSES])
    status_p = np.array([p for _, p in STATUSES])
    status_p /= status_p.sum()
    captions = pa.array([f"{w} of a person at the {v} {i}" for i, (w, v) in
                         enumerate(zip(np.resize(words, 5000), np.resize(words[::-1], 5000)))])
    per_part = rows // N_PARTS
    for part in range(N_PARTS):
        n = per_part + (1 if part < rows % N_PARTS else 0)
        idx = np.arange(n)
        sid = 1_000_000_000 + part * 10_000_000 + idx * 7  # same width: string order == numeric order
        sid_str = pc.cast(pa.array(sid), pa.string())
        key = pc.binary_join_element_wise(pa.array(np.full(n, f"{part:05d}")), sid_str, "_")
        dom = rng.choice(N_DOMAINS, size=n, p=zipf_p)
        scheme = pa.array(np.where(rng.random(n) < 0.8, "https://", "http://"))
        url = pc.binary_join_element_wise(scheme, hosts.take(pa.array(dom)), ports.take(pa.array(dom)),
                                          pa.array(np.full(n, "/images/")), sid_str, pa.array(np.full(n, ".jpg")), "")
        status_idx = rng.choice(len(STATUSES), size=n, p=status_p)
        status = status_names.take(pa.array(status_idx))
        st = np.array([s for s, _ in STATUSES])[status_idx]
        downloaded = ~np.char.startswith(st, "download_failed") & ~np.isin(
            st, ["opted_out", "duplicate_url", "nsfw", "small_meta_size", "empty_caption"])
        kept = st == "kept"
        w = rng.integers(200, 2000, n).astype(np.int32)
        h = rng.integers(200, 2000, n).astype(np.int32)
        face_count = np.where(st == "no_face", 0, rng.integers(1, 6, n)).astype(np.int16)
        part_name = f"part-{part:05d}"

        def masked(values, mask, typ):
            return pa.array(values, type=typ, mask=~mask)

        cols = {
            "key": key, "part": pa.array(np.full(n, part, np.int32)), "row": pa.array(idx.astype(np.int64)),
            "SAMPLE_ID": pa.array(sid), "URL": url, "TEXT": captions.take(pa.array(idx % len(captions))),
            "HEIGHT": pa.array(h), "WIDTH": pa.array(w),
            "LICENSE": pa.array(np.where(rng.random(n) < 0.9, "?", "creativecommons.org/licenses/by/4.0")),
            "NSFW": pa.array(np.where(st == "nsfw", "NSFW", np.where(rng.random(n) < 0.9, "UNLIKELY", "UNSURE"))),
            "similarity": pa.array((0.3 + 0.1 * rng.random(n)).astype(np.float32)),
            "domain": url_domains(url),  # stored since manifest 1.1, as the runner writes it
            "raw_shard": masked(np.full(n, f"raw/{part_name}/00000.tar"), downloaded, pa.string()),
            "raw_key": masked(np.char.zfill(idx.astype(str), 9), downloaded, pa.string()),
            "sha256": masked(np.char.zfill(sid.astype(str), 64), downloaded, pa.string()),
            "original_width": masked(w, downloaded, pa.int32()), "original_height": masked(h, downloaded, pa.int32()),
            "width": masked(w, downloaded, pa.int32()), "height": masked(h, downloaded, pa.int32()),
            "face_count": masked(face_count, downloaded, pa.int16()),
            "kept_face_count": masked(np.where(kept, face_count, 0).astype(np.int16), downloaded, pa.int16()),
            "best_face_score": masked(np.where(face_count > 0, 0.9 + 0.1 * rng.random(n), np.nan).astype(np.float32),
                                      downloaded & (face_count > 0), pa.float32()),
            "clip_score": masked((0.2 + 0.2 * rng.random(n)).astype(np.float32), downloaded, pa.float32()),
            "shard": masked(np.char.add(f"laion_face/{part_name}/", np.char.zfill((idx // 10000).astype(str), 5)),
                            kept, pa.string()),
            "duplicate_of": pa.nulls(n, pa.string()),
            "status": status,
            "error": pa.nulls(n, pa.string()),
            "pipeline_version": pa.array(np.full(n, "0.1.0")), "config_hash": pa.array(np.full(n, "0123456789abcdef")),
        }
        table = pa.Table.from_arrays([cols[f.name] for f in SAMPLES], schema=SAMPLES)
        write_parquet(table, folder / f"{part_name}.parquet", SAMPLES)  # the runner's writer and settings
    (root / "candidates").mkdir(exist_ok=True)
    marker.write_text(f"{rows} {MANIFEST_VERSION}\n")
    print(f"generated {rows:,} rows in {N_PARTS} files under {root} in {time.perf_counter() - t0:.1f} s", flush=True)
    return root


def _median_time(fn, repeats: int) -> tuple[float, list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, result


_FIRST_QUERY = """
import sys, time
import duckdb, pyarrow.parquet  # imported by query() on first use: untimed, as the CLI's imports are
from laionface.audit.query import query
t = time.perf_counter()
query(sys.argv[1], sys.argv[2])
print(time.perf_counter() - t)
"""


def _first_query_times(root: Path, sql: str, repeats: int) -> tuple[float, list[float]]:
    """The query as the first of a fresh process (imports done, untimed): a new DuckDB database,
    no footer read yet, what one `laionface query` pays after its imports."""
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _FIRST_QUERY, str(root), sql], check=True, capture_output=True, text=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times), times


def _cli_time(root: Path, sql: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "laionface.cli", "query", str(root), sql, "--format", "csv", "--out", os.devnull],
                   check=True)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--quick", action="store_true", help="1,000,000 rows, nothing recorded")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    rows = 1_000_000 if args.quick else args.rows
    root = generate(WORK / f"rows-{rows}", rows)

    import duckdb

    from laionface.audit.query import query

    per_part = rows // N_PARTS
    key = _key_of(57, per_part // 2 + 3, per_part)
    group_s, group_all, grouped = _median_time(lambda: query(root, GROUP_BY), args.repeats)
    lookup_s, lookup_all, found = _median_time(lambda: query(root, LOOKUP.format(key=key)), args.repeats)
    first_group_s, first_group_all = _first_query_times(root, GROUP_BY, args.repeats)
    first_lookup_s, first_lookup_all = _first_query_times(root, LOOKUP.format(key=key), args.repeats)
    total = sum(grouped["n"].to_pylist())
    assert total == rows, (total, rows)
    assert found.num_rows == 1 and found["key"][0].as_py() == key, found
    cli_group = _cli_time(root, GROUP_BY)
    cli_lookup = _cli_time(root, LOOKUP.format(key=key))

    def verdict(value, target):
        return "PASS" if value <= target else "MISS"

    lines = [
        f"- manifest: {rows:,} rows in {N_PARTS} parquet files (zstd, one row group per file, keys sorted within a file); "
        f"group-by result {grouped.num_rows:,} (status, domain) groups",
        f"- group-by over status and domain, repeated in one process: median {group_s:.3f} s (target <= 1 s) "
        f"{verdict(group_s, 1.0)}; runs {', '.join(f'{t:.3f}' for t in group_all)}",
        f"- group-by, the first query of a fresh process (imports untimed): median {first_group_s:.3f} s (target <= 1 s) "
        f"{verdict(first_group_s, 1.0)}; runs {', '.join(f'{t:.3f}' for t in first_group_all)}",
        f"- provenance lookup by key, repeated in one process: median {lookup_s:.3f} s (target <= 0.2 s) "
        f"{verdict(lookup_s, 0.2)}; runs {', '.join(f'{t:.3f}' for t in lookup_all)}",
        f"- lookup, the first query of a fresh process: median {first_lookup_s:.3f} s (target <= 0.2 s) "
        f"{verdict(first_lookup_s, 0.2)}; runs {', '.join(f'{t:.3f}' for t in first_lookup_all)}",
        f"- one `laionface query` subprocess each (interpreter start + imports included): group-by {cli_group:.2f} s, "
        f"lookup {cli_lookup:.2f} s",
    ]
    print("\n".join(lines))
    if not (args.no_record or args.quick):
        machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; duckdb {duckdb.__version__}"
        cmd = "python benchmarks/query_bench.py" + (f" --rows {args.rows}" if args.rows != 10_000_000 else "")
        block = [f"\n## query — {datetime.date.today().isoformat()}", "",
                 f"`{cmd}` (median of {args.repeats}; {machine}; laionface.audit.query.query: one DuckDB "
                 "database per process, a connection and TEMP views per call, footers read once per process)", ""] + lines
        with RESULTS.open("a") as fh:
            fh.write("\n".join(block) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
