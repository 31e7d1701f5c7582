"""Select stage against the published LAION-Face recipe (convert_parquet.py): time and peak memory.

    python benchmarks/select_bench.py [--rows 2000000] [--quick] [--repeats 3] [--scaling] [--library]

Generates (once, cached in --workdir by row count) a synthetic LAION-400M metadata part
`part-00000-5b54c5d5-…-c000.snappy.parquet` with LAION's column types and realistic string
lengths (URL ~100 chars, TEXT ~60 chars, unique URLs, no empty captions, row groups of 250k rows)
and a LAION-Face ID list `laion_face_ids.pth` (zip torch-save layout, written without torch: a
protocol-2 pickle of 32 lists, list 0 holding 12% of the part's SAMPLE_IDs).

Then, each in its own child process (peak RSS read per child with os.wait4, wall time around the
child: both include interpreter start and imports; each child also reports its own in-process time):
  reference: FacePerceiver/LAION-Face convert_parquet.py — pq.read_table(part).to_pandas(),
             set(ids[part]), SAMPLE_ID.map(lambda x: x in ids), boolean filter,
             pq.write_table(pa.Table.from_pandas(df)).  The ID list is unpickled from the zip
             instead of torch.load (no 5 s torch import: this favours the reference).
  ours:      the `laionface select` command, as a user runs it (--meta PART --ids LIST --parts 0
             --out RUN: RUN/candidates/part-00000.parquet, stats.json, config); with --library
             the library (plan_parts + load_id_list + select) in a child instead. laionface's
             bytecode is compiled first, as an installed copy has it (PYTHONDONTWRITEBYTECODE,
             set in these sandboxes, would otherwise recompile it on every run).
Checks that both outputs hold the same rows (SAMPLE_ID, URL, TEXT) in the same order, and that
every candidate row is `kept`. Prints medians over --repeats (A/B order alternated):
reference/ours wall time (target >= 5x), ours/reference peak RSS (target <= 0.25x), and a scaling
check: ours' peak RSS on a 4x-row part <= 1.2x of the 1x part (skipped with --quick unless
--scaling; --no-scaling skips it). Appends a dated block to benchmarks/RESULTS.md unless --no-record (or --quick).
"""

from __future__ import annotations

# Keep module-level imports light: this file is also the child process for both contenders.
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
PART_NAME = "part-00000-5b54c5d5-bbcf-484d-a2ce-0d6f73df1a36-c000.snappy.parquet"
ID_FRACTION = 0.12
ROW_GROUP = 250_000
GEN_CHUNK = 500_000  # rows generated at a time
COPY_OFFSET = 10**13  # SAMPLE_ID offset between the copies that make the 4x part


def _self_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ----------------------------------------------------------------------------------------------
# synthetic data


def _rand_strings(rng, lengths, alphabet: bytes):
    """A pyarrow string array of random ASCII strings with the given lengths (vectorised)."""
    import numpy as np
    import pyarrow as pa

    n = len(lengths)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    alph = np.frombuffer(alphabet, np.uint8)
    data = alph[rng.integers(0, len(alph), int(offsets[-1]), dtype=np.uint8 if len(alph) < 256 else np.int64)]
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data)), data, offsets


def _domains(rng, k: int = 20_000) -> list[str]:
    heavy = ["i.pinimg.com", "cdn.shopify.com", "images-na.ssl-images-amazon.com", "i.ebayimg.com",
             "media.gettyimages.com", "upload.wikimedia.org", "img.alicdn.com", "static.wixstatic.com",
             "i.ytimg.com", "ae01.alicdn.com", "cdn.media.example-news.co.uk", "photos.smugmug.com"]
    letters = "abcdefghijklmnopqrstuvwxyz"
    tlds = [".com", ".net", ".org", ".co.uk", ".de", ".fr", ".ru", ".com.au", ".info", ".jp"]
    pool = []
    for _ in range(k):
        name = "".join(rng.choice(list(letters), int(rng.integers(4, 16))))
        sub = ["www.", "", "cdn.", "images.", "static.", "media."][int(rng.integers(0, 6))]
        pool.append(sub + name + tlds[int(rng.integers(0, len(tlds)))])
    return heavy * (k // 40) + pool  # the heavy hitters hold ~ a quarter of rows


def _chunk_table(rng, ids, row0: int, domains):
    """LAION-like columns for len(ids) rows; URLs embed the row number so they are unique."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(ids)
    scheme = pa.array(np.where(rng.random(n) < 0.7, "https://", "http://"))
    dom = pa.array(domains).take(pa.array(rng.integers(0, len(domains), n)))
    path_len = np.clip(rng.lognormal(np.log(52), 0.55, n), 6, 900).astype(np.int32)
    path, _, _ = _rand_strings(rng, path_len, b"abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz/-_ABCDEFGHIJ")
    ext = pa.array(np.array([".jpg", ".jpg", ".jpg", ".jpeg", ".png", ".webp", ".JPG", "?w=640&h=480"])[rng.integers(0, 8, n)])
    rowno = pc.cast(pa.array(np.arange(row0, row0 + n, dtype=np.int64)), pa.string())
    url = pc.binary_join_element_wise(scheme, dom, "/", path, "-", rowno, ext, "")

    text_len = np.clip(rng.lognormal(np.log(48), 0.65, n), 3, 1000).astype(np.int32)
    text, data, offsets = _rand_strings(rng, text_len, b"eeeeetttaaaoooiiinnnssshhrrdllcumwfgypbvkjxqz     EATSNMBC0123,.-'")
    # a caption never starts or ends with a space: no empty/whitespace-only TEXT
    data[offsets[:-1]] = np.frombuffer(b"ABCDEFGHIJKLMNOPRSTW", np.uint8)[rng.integers(0, 20, n)]
    data[offsets[1:] - 1] = np.frombuffer(b"aeinorst", np.uint8)[rng.integers(0, 8, n)]

    sizes = np.array([256, 300, 400, 500, 600, 640, 700, 800, 1000, 1024, 1200, 1500, 2000], np.float64)
    lic = np.full(n, "?", dtype=object)
    cc = rng.random(n) < 0.04
    lic[cc] = np.array(["https://creativecommons.org/licenses/by/2.0/", "https://creativecommons.org/licenses/by-sa/3.0/",
                        "https://creativecommons.org/licenses/by-nc-nd/4.0/", "https://creativecommons.org/publicdomain/zero/1.0/"],
                       dtype=object)[rng.integers(0, 4, int(cc.sum()))]
    u = rng.random(n)
    nsfw = np.where(u < 0.885, "UNLIKELY", np.where(u < 0.97, "UNSURE", "NSFW"))
    return pa.table({
        "SAMPLE_ID": pa.array(ids, pa.int64()),
        "URL": url,
        "TEXT": text,
        "HEIGHT": pa.array(sizes[rng.integers(0, len(sizes), n)] * np.where(rng.random(n) < 0.3, 1.0, rng.uniform(0.5, 1.0, n)).round(2)).cast(pa.float64()),
        "WIDTH": pa.array(sizes[rng.integers(0, len(sizes), n)], pa.float64()),
        "LICENSE": pa.array(lic, pa.string()),
        "NSFW": pa.array(nsfw, pa.string()),
        "similarity": pa.array(0.3 + 0.15 * rng.beta(1.2, 3.0, n), pa.float64()),
    })


def _write_idlist(path: Path, part0_ids) -> None:
    """LAION-Face's laion_face_ids.pth layout, without torch: zip with data.pkl (list of 32 lists) + version."""
    import pickle
    import zipfile

    lists = [[int(x) for x in part0_ids]] + [[] for _ in range(31)]
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("laion_face_ids/data.pkl", pickle.dumps(lists, protocol=2))
        zf.writestr("laion_face_ids/byteorder", "little")
        zf.writestr("laion_face_ids/version", "3\n")
    os.replace(tmp, path)


def generate(workdir: Path, rows: int, seed: int = 0) -> tuple[Path, Path, int]:
    """The 1x part and its ID list under workdir/rows_N/ (cached). Returns (part, ids, n_ids)."""
    import numpy as np
    import pyarrow.parquet as pq

    d = workdir / f"rows_{rows}"
    part, idp, meta = d / PART_NAME, d / "laion_face_ids.pth", d / "info.json"
    if meta.exists() and part.exists() and idp.exists():
        return part, idp, json.loads(meta.read_text())["ids"]
    d.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    # large unique SAMPLE_IDs in shuffled order, like LAION's
    ids = np.cumsum(rng.integers(1, 2_000_000, rows, dtype=np.int64)) + 1_000_000_000
    rng.shuffle(ids)
    chosen = ids[rng.random(rows) < ID_FRACTION]
    domains = _domains(rng)
    tmp = d / (PART_NAME + ".tmp")
    with pq.ParquetWriter(tmp, _chunk_table(rng, ids[:1], 0, domains).schema, compression="snappy") as w:
        for s in range(0, rows, GEN_CHUNK):
            w.write_table(_chunk_table(rng, ids[s : s + GEN_CHUNK], s, domains), row_group_size=ROW_GROUP)
    os.replace(tmp, part)
    rng.shuffle(chosen)
    _write_idlist(idp, chosen)
    meta.write_text(json.dumps({"rows": rows, "ids": int(len(chosen)), "seed": seed}))
    print(f"generated {rows:,} rows ({part.stat().st_size / 1e6:.0f} MB) + {len(chosen):,} ids in {time.perf_counter() - t:.1f} s")
    return part, idp, int(len(chosen))


def generate_times(workdir: Path, base_rows: int, k: int) -> tuple[Path, Path, int]:
    """A k x part made by streaming the 1x part k times with shifted SAMPLE_IDs and distinct URLs."""
    import pickle
    import zipfile

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    base, base_ids, _ = generate(workdir, base_rows)
    d = workdir / f"rows_{base_rows * k}_x{k}"
    part, idp, meta = d / PART_NAME, d / "laion_face_ids.pth", d / "info.json"
    if meta.exists() and part.exists() and idp.exists():
        return part, idp, json.loads(meta.read_text())["ids"]
    d.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with zipfile.ZipFile(base_ids) as zf:
        ids0 = np.asarray(pickle.loads(zf.read("laion_face_ids/data.pkl"))[0], np.int64)
    pf = pq.ParquetFile(base)
    tmp = d / (PART_NAME + ".tmp")
    with pq.ParquetWriter(tmp, pf.schema_arrow, compression="snappy") as w:
        for c in range(k):
            for rg in range(pf.num_row_groups):
                b = pf.read_row_group(rg)
                if c:
                    b = b.set_column(0, "SAMPLE_ID", pc.add(b["SAMPLE_ID"], pa.scalar(c * COPY_OFFSET, pa.int64())))
                    b = b.set_column(1, "URL", pc.binary_join_element_wise(b["URL"], f"#c{c}", ""))
                w.write_table(b, row_group_size=ROW_GROUP)
    os.replace(tmp, part)
    allids = np.concatenate([ids0 + c * COPY_OFFSET for c in range(k)])
    np.random.default_rng(1).shuffle(allids)
    _write_idlist(idp, allids)
    meta.write_text(json.dumps({"rows": base_rows * k, "ids": int(len(allids))}))
    print(f"generated {base_rows * k:,} rows ({part.stat().st_size / 1e6:.0f} MB) + {len(allids):,} ids in {time.perf_counter() - t:.1f} s")
    return part, idp, int(len(allids))


# ----------------------------------------------------------------------------------------------
# the two contenders, each run as `select_bench.py --run-… ` in a child process


def run_reference(ids_path: str, meta: str, out: str) -> dict:
    """FacePerceiver/LAION-Face convert_parquet.py, for one part (split_num = 0)."""
    t0 = time.perf_counter()
    import pickle
    import zipfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    t1 = time.perf_counter()
    with zipfile.ZipFile(ids_path) as zf:  # stands in for torch.load(args.sample_list)
        all_samples = pickle.loads(zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl"))))
    samples = set(all_samples[0])
    big_table = pq.read_table(meta).to_pandas()
    big_table["has_face"] = big_table["SAMPLE_ID"].map(lambda x: x in samples)
    big_table = big_table[big_table["has_face"]]
    del big_table["has_face"]
    n = len(big_table)
    pq.write_table(pa.Table.from_pandas(big_table), out)
    t2 = time.perf_counter()
    return {"import_s": t1 - t0, "work_s": t2 - t1, "rows": n}


def run_ours(ids_path: str, meta: str, run: str) -> dict:
    t0 = time.perf_counter()
    from laionface.idlists import load_id_list
    from laionface.metaparts import plan_parts
    from laionface.stages.select import SelectConfig, select

    t1 = time.perf_counter()
    ids = load_id_list(ids_path)
    parts = plan_parts(meta, parts=(0,))
    cand = Path(run) / "candidates"
    results = select(parts, ids, SelectConfig(), lambda p: cand / f"part-{p:05d}.parquet")
    t2 = time.perf_counter()
    errors = [r.error for r in results if r.error]
    if errors:
        raise SystemExit(f"select failed: {errors}")
    return {"import_s": t1 - t0, "work_s": t2 - t1, "rows": sum(r.matched_rows for r in results),
            "status_counts": results[0].status_counts}


def _child_main(which: str, a: str, b: str, c: str, profile: str | None) -> int:
    fn = {"reference": run_reference, "ours": run_ours}[which]
    if profile:
        import cProfile

        prof = cProfile.Profile()
        res = prof.runcall(fn, a, b, c)
        prof.dump_stats(profile)
    else:
        res = fn(a, b, c)
    res["maxrss_mb"] = _self_rss_mb()
    print("RESULT " + json.dumps(res), flush=True)
    return 0


# ----------------------------------------------------------------------------------------------
# the driver


def _in_fresh_process(fn, *args):
    """fn(*args) in a spawned process, so this one stays small: Linux carries a process's peak
    RSS across exec into its children's ru_maxrss, so generating the data here first made every
    child report at least this process's peak (`laionface select` 572 MB instead of 362 MB)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _measure(cmd: list[str]) -> dict:
    """Run cmd; wall time around it, peak RSS of exactly that child (os.wait4), its RESULT line."""
    with tempfile.TemporaryFile("w+") as out:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if p.returncode != 0:
        raise SystemExit(f"FAILED ({p.returncode}): {' '.join(cmd)}\n{text[-4000:]}")
    res = {}
    for line in text.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
    res["wall_s"] = wall
    res["rss_mb"] = ru.ru_maxrss / 1024  # KiB on Linux
    return res


def _cache_bytecode() -> bool:
    """Compile laionface's modules once, as pip does for an installed wheel and an editable
    install's first run does. Where PYTHONDONTWRITEBYTECODE is set (these sandboxes) nothing
    ever caches them, so each `laionface select` recompiled ~15 modules (30-45 ms): a cost no
    user's installed copy pays, while the reference's libraries (pandas, pyarrow) come compiled.
    True when that flag is set, so the record says the cache was made here."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("laionface")
    if spec is None or not spec.submodule_search_locations:
        return False
    for folder in spec.submodule_search_locations:
        compileall.compile_dir(folder, quiet=1)
    return bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))


def _cli_available() -> str | None:
    exe = Path(sys.executable).with_name("laionface")
    exe = str(exe) if exe.exists() else shutil.which("laionface")
    if not exe:
        return None
    r = subprocess.run([exe, "select", "--help"], capture_output=True, text=True)
    return exe if r.returncode == 0 else None


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.me = str(Path(__file__).resolve())
        self.py = sys.executable
        self.cli = None if args.library else _cli_available()
        if not args.library and not self.cli:
            raise SystemExit("`laionface select` is not installed in this environment (pip install -e .), or pass --library")
        self.scratch = Path(args.workdir) / "runs"

    def reference(self, part: Path, ids: Path) -> dict:
        out = self.scratch / "reference" / "laion_face_part_00000.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        res = _measure([self.py, self.me, "--run-child", "reference", str(ids), str(part), str(out)])
        res["out"] = out
        return res

    def ours(self, part: Path, ids: Path, tag: str = "ours") -> dict:
        run = self.scratch / tag
        shutil.rmtree(run, ignore_errors=True)
        if self.cli:
            cmd = [self.cli, "select", "--meta", str(part), "--ids", str(ids), "--parts", "0", "--out", str(run)]
        else:
            cmd = [self.py, self.me, "--run-child", "ours", str(ids), str(part), str(run)]
        res = _measure(cmd)
        res["out"] = run / "candidates" / "part-00000.parquet"
        return res


def check_same(ref: Path, ours: Path, n_ids: int) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    cols = ["SAMPLE_ID", "URL", "TEXT"]
    a = pq.read_table(ref, columns=cols)
    b = pq.read_table(ours, columns=cols + ["status"])
    not_kept = b.num_rows - pc.sum(pc.equal(b["status"], "kept")).as_py()
    problems = []
    if not_kept:
        problems.append(f"{not_kept} candidate rows are not 'kept' (the data has no duplicates or empty captions)")
    if a.num_rows != b.num_rows:
        problems.append(f"row counts differ: reference {a.num_rows}, ours {b.num_rows}")
    elif a.num_rows != n_ids:
        problems.append(f"{a.num_rows} rows selected but the ID list holds {n_ids}")
    else:
        for c in cols:
            if not a[c].combine_chunks().equals(b[c].combine_chunks()):
                diff = pc.not_equal(a[c].combine_chunks(), b[c].combine_chunks())
                first = pc.index(diff, True).as_py()
                problems.append(f"column {c} differs, first at row {first}: {a[c][first]} vs {b[c][first]}")
    if problems:
        raise SystemExit("OUTPUTS DIFFER:\n  " + "\n  ".join(problems))
    return a.num_rows


def _commit() -> str:
    """`, commit abc1234` of the checkout the bench ran from (with `+` if it had local changes)."""
    here = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""
    return f", commit {head}{'+' if dirty else ''}" if head else ""


def _cpu() -> str:
    try:
        return next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.machine()


def _load() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--run-child":
        prof = os.environ.get("SELECT_BENCH_PROFILE")
        return _child_main(argv[1], argv[2], argv[3], argv[4], prof)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--quick", action="store_true", help="200k rows, no 4x scaling run, not recorded")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default="benchmarks/_work/select")
    ap.add_argument("--scaling", action="store_true", help="run the 4x scaling check even with --quick")
    ap.add_argument("--no-scaling", action="store_true", help="skip the 4x scaling check")
    ap.add_argument("--library", action="store_true", help="run ours as the library in a child, not the `laionface select` command")
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows = 200_000
    do_scaling = (args.scaling or not args.quick) and not args.no_scaling
    workdir = Path(args.workdir)
    import pyarrow as pa

    part, ids, n_ids = _in_fresh_process(generate, workdir, args.rows)
    part4 = ids4 = None
    if do_scaling:
        part4, ids4, n_ids4 = _in_fresh_process(generate_times, workdir, args.rows, 4)
    bench = Bench(args)
    compiled_here = _cache_bytecode()
    load_before = _load()
    mode = "`laionface select` CLI" if bench.cli else "library (plan_parts + load_id_list + select) in a child"
    if compiled_here:
        mode += " (its bytecode compiled first: PYTHONDONTWRITEBYTECODE is set here)"
    print(f"part: {args.rows:,} rows, {part.stat().st_size / 1e6:.0f} MB snappy; ID list: {n_ids:,} ids; ours = {mode}")

    ref_runs, our_runs = [], []
    for r in range(args.repeats):
        order = ("ref", "ours") if r % 2 == 0 else ("ours", "ref")
        for who in order:
            if who == "ref":
                ref_runs.append(bench.reference(part, ids))
            else:
                our_runs.append(bench.ours(part, ids))
        rr, oo = ref_runs[-1], our_runs[-1]
        print(f"repeat {r + 1} ({'/'.join(order)}): reference {rr['wall_s']:.2f} s {rr['rss_mb']:.0f} MB | "
              f"ours {oo['wall_s']:.2f} s {oo['rss_mb']:.0f} MB")
    matched = check_same(ref_runs[-1]["out"], our_runs[-1]["out"], n_ids)
    print(f"check: same {matched:,} rows (SAMPLE_ID, URL, TEXT) in the same order; all candidates kept")

    med = lambda runs, k: statistics.median(x[k] for x in runs if k in x) if any(k in x for x in runs) else float("nan")
    rt, ot = med(ref_runs, "wall_s"), med(our_runs, "wall_s")
    rm, om = med(ref_runs, "rss_mb"), med(our_runs, "rss_mb")
    speed, mem = rt / ot, om / rm
    lines = [
        f"part: {args.rows:,} rows ({part.stat().st_size / 1e6:.0f} MB snappy, row groups of {ROW_GROUP:,}), "
        f"ID list {n_ids:,} ids ({ID_FRACTION:.0%}); ours = {mode}",
        f"reference (convert_parquet.py: read_table.to_pandas, set, map(lambda), filter, write): "
        f"wall {rt:.2f} s (in-process {med(ref_runs, 'work_s'):.2f} s + imports {med(ref_runs, 'import_s'):.2f} s), "
        f"peak RSS {rm:.0f} MB",
        f"ours (select, streaming): wall {ot:.2f} s"
        + (f" (in-process {med(our_runs, 'work_s'):.2f} s + imports {med(our_runs, 'import_s'):.2f} s)" if not bench.cli else "")
        + f", peak RSS {om:.0f} MB",
        f"time reference/ours = {speed:.2f}x (target >= 5x) {'PASS' if speed >= 5 else 'MISS'}; per repeat "
        + ", ".join(f"{a['wall_s'] / b['wall_s']:.2f}x" for a, b in zip(ref_runs, our_runs)),
        f"peak RSS ours/reference = {mem:.3f}x (target <= 0.25x) {'PASS' if mem <= 0.25 else 'MISS'}; per repeat "
        + ", ".join(f"{b['rss_mb'] / a['rss_mb']:.3f}x" for a, b in zip(ref_runs, our_runs)),
    ]
    if do_scaling:
        s_runs = [bench.ours(part4, ids4, tag="ours_x4") for _ in range(args.repeats)]
        from pyarrow import parquet as pq

        got = pq.ParquetFile(s_runs[-1]["out"]).metadata.num_rows
        if got != n_ids4:
            raise SystemExit(f"4x run: {got} candidate rows, expected {n_ids4}")
        sm, st = med(s_runs, "rss_mb"), med(s_runs, "wall_s")
        ratio = sm / om
        lines.append(
            f"scaling: ours on {args.rows * 4:,} rows (4x): wall {st:.2f} s, peak RSS {sm:.0f} MB = {ratio:.2f}x of 1x "
            f"(target <= 1.2x) {'PASS' if ratio <= 1.2 else 'MISS'}; per repeat " + ", ".join(f"{x['rss_mb']:.0f} MB" for x in s_runs)
        )
    lines.append(f"1-min load average {load_before} before, {_load()} after (2 shared cores: other sessions' jobs slow both sides)")
    print("\n".join(lines))
    if not args.no_record and not args.quick:
        import pandas
        import polars

        cmd = "python benchmarks/select_bench.py " + " ".join(argv)
        header = "# Benchmark results\n\nDated blocks appended by the scripts in benchmarks/ (see benchmarks/README.md).\n"
        block = (
            f"\n## select — {time.strftime('%Y-%m-%d %H:%M')}{_commit()}\n\n"
            f"`{cmd.strip()}` (median of {args.repeats}, A/B alternated; {_cpu()}, {os.cpu_count()} cores, shared; "
            f"python {sys.version.split()[0]}, pyarrow {pa.__version__}, pandas {pandas.__version__}, polars {polars.__version__}; "
            f"wall times include interpreter start and imports; peak RSS per child via wait4)\n\n"
            + "\n".join(f"- {l}" for l in lines) + "\n"
        )
        if not RESULTS.exists():
            RESULTS.write_text(header)
        with open(RESULTS, "a") as fh:  # append: other benchmarks write here too
            fh.write(block)
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
