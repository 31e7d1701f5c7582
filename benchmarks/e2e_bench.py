"""End to end: select -> download -> detect -> LAION-FACE shards over 127.0.0.1, against each stage alone.

    python benchmarks/e2e_bench.py [--quick] [--urls 2000] [--repeats 3] [--runner local|ray|both] [--scale 10]

Generates (once, cached in benchmarks/_work/e2e/images-N) N JPEGs, 320-1,024 px per side, each
a real face photo (laionface.testing.faces: astronaut, camera, grace_hopper, lfw faces) composed
at 12-40% of the shorter side onto a real non-face photo, JPEG quality 85-95, so detection does
real work. nginx (Debian package; started by download_bench.Nginx, 2 workers, 127.0.0.1) serves
them. The metadata is 4 LAION-400M parts (`part-0000K-5b54c5d5-...-c000.snappy.parquet`, LAION's
columns SAMPLE_ID, URL, TEXT, HEIGHT, WIDTH, LICENSE, NSFW, similarity) of N/4 rows each.

Measured in child processes (wall time around each child: interpreter start, imports and model
load included for every contender, so the three figures are comparable):
  T_dl : `laionface download RUN --allow-private-addresses` after an (untimed)
         `laionface select --meta META --pipeline PIPELINE --out RUN`
         -> images/s = downloaded images / wall.
  T_det: DetectStage (the pipeline's detect settings) over the images T_dl downloaded, read from
         the raw tars exactly as the runner does (runner.image_batches, IMAGE_BATCH rows)
         -> images/s = images / wall (pure detect seconds printed too).
  T_e2e: `laionface run PIPELINE --input META --out RUN --allow-private-addresses
         [--runner ray]` -> images/s = downloaded images / wall. PIPELINE: laion_face_cropped.yaml
         without its score section (download -> detect -> crop -> write; CLIP skipped).
Target: T_e2e >= 0.8 x 1/(1/T_dl + 1/T_det) (the serial composition of the two stages).
Order alternates between repeats (dl, det, local, ray / ray, local, dl, det); medians.

Memory: peak RSS of the e2e child from os.wait4 (Linux: the largest single process among the
child and the descendants it waited for), and the peak of the summed RSS of the whole process
tree (/proc, sampled every 0.2 s; for Ray this counts raylet, GCS and workers), at 1x (the
repeats' median) and at --scale x the input: the same image files under --scale URL variants
(`?v=k`), 4 parts of scale*N/4 rows. Target <= 1.2x. Summed RSS counts a shared page once
per process that maps it: Ray's object store (shared memory) is mapped into the driver and every
worker that reads a block, and those mapped pages grow with how much of the store a long run has
cycled through, not with what is held. So the verdict is on memory counted once: the tree's
summed PSS (/proc/PID/smaps_rollup) and the run process's own private memory (RssAnon); the
wait4 and summed-RSS figures are printed beside it.

Appends a dated block to benchmarks/RESULTS.md unless --no-record or --quick.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
# The pipeline: download -> detect -> crop -> write, CLIP skipped:
# pipelines/laion_face_cropped.yaml without its score section (written under the workdir).
CROPPED = REPO / "pipelines" / "laion_face_cropped.yaml"
PIPELINE: Path = CROPPED  # set by main()


def write_pipeline(workdir: Path) -> Path:
    import yaml

    data = yaml.safe_load(CROPPED.read_text())
    data["stages"].pop("score", None)
    data["name"] = "laion_face_cropped_no_clip"
    path = workdir / "laion_face_cropped_no_clip.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
PARTS = 4
SIZE_RANGE = (320, 1024)
LAION_NAME = "part-{:05d}-5b54c5d5-bbcf-484d-a2ce-0d6f73df1a36-c000.snappy.parquet"
LAIONFACE = Path(sys.executable).with_name("laionface")

sys.path.insert(0, str(HERE))


# ----------------------------------------------------------------------------------------------
# inputs


def make_images(folder: Path, n: int, seed: int = 0) -> list[tuple[str, int, int]]:
    """N composed face JPEGs; cached (a complete folder has its _done file). Returns (name, w, h)."""
    done = folder / "_done"
    if done.exists():
        return [tuple(x) for x in json.loads(done.read_text())]
    import numpy as np

    from laionface.testing.faces import (
        NON_FACE_NAMES,
        compose,
        encode_jpeg,
        face_sources,
    )

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = face_sources()
    out = []
    t0 = time.perf_counter()
    for i in range(n):
        w, h = (int(v) for v in rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, 2))
        face_px = int(rng.uniform(0.12, 0.4) * min(w, h))
        comp = compose(sources[i % len(sources)], face_px, (w, h), NON_FACE_NAMES[i % len(NON_FACE_NAMES)], None, rng)
        name = f"img_{i:05d}.jpg"
        (folder / name).write_bytes(encode_jpeg(comp.image, quality=int(rng.integers(85, 96))))
        out.append((name, w, h))
        if (i + 1) % 500 == 0:
            print(f"  composed {i + 1}/{n} images ({time.perf_counter() - t0:.0f} s)", flush=True)
    done.write_text(json.dumps(out))
    return out


def write_meta(folder: Path, base_url: str, images: list[tuple[str, int, int]], scale: int) -> Path:
    """PARTS LAION-400M metadata parts holding every image under `scale` URL variants."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rows = []
    for k in range(scale):
        for i, (name, w, h) in enumerate(images):
            rows.append({
                "SAMPLE_ID": 3_000_000 + k * len(images) + i,
                "URL": f"{base_url}/{name}" + (f"?v={k}" if k else ""),
                "TEXT": f"a photo of a person, number {i} variant {k}",
                "HEIGHT": float(h), "WIDTH": float(w), "LICENSE": "?", "NSFW": "UNLIKELY",
                "similarity": 0.3 + (i % 100) / 1000,
            })
    per = -(-len(rows) // PARTS)
    for p in range(PARTS):
        pq.write_table(pa.Table.from_pylist(rows[p * per:(p + 1) * per]), folder / LAION_NAME.format(p), compression="snappy")
    return folder


# ----------------------------------------------------------------------------------------------
# children


def _tree_rss(root: int) -> int:
    """Summed RSS (bytes) of `root` and all its descendants, from /proc (no psutil needed)."""
    page, total = os.sysconf("SC_PAGE_SIZE"), 0
    for pid in _descendants(root):
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * page
        except OSError:
            continue
    return total


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith(field + ":")), 0)
    except OSError:
        return 0


def _kind(pid: int, root: int) -> str:
    """What a process of the run is, for the PSS breakdown: the run process, a Ray worker by
    its task or actor (`ray::_crop`, `ray::MapWorker(MapBatches(ModelStage))`), or a Ray daemon."""
    if pid == root:
        return "run process"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "?"
    first = argv[0].decode(errors="replace")
    if first.startswith("ray::"):
        return first.split(" ")[0]
    program = os.path.basename(first)
    if "python" not in program:
        return program  # raylet, gcs_server, nginx
    script = next((a.decode(errors="replace") for a in argv[1:] if a.endswith(b".py")), None)
    return os.path.basename(script) if script else "python"  # img2dataset's spawned workers have no script


def _tree_pss_by_kind(root: int) -> dict[str, tuple[int, int]]:
    """PSS (bytes) and process count of the run's processes, by kind."""
    out: dict[str, tuple[int, int]] = {}
    for pid in _descendants(root):
        try:
            pss, store = _pss_and_object_store(pid)
        except OSError:
            continue
        kind = _kind(pid, root)
        total, n = out.get(kind, (0, 0))
        out[kind] = (total + pss - store, n + 1)
        if store:
            total, n = out.get(OBJECT_STORE, (0, 0))
            out[OBJECT_STORE] = (total + store, n + 1)
    return out


OBJECT_STORE = "Ray object store pages (all processes)"


def _pss_and_object_store(pid: int) -> tuple[int, int]:
    """A process's PSS (bytes), and the part of it in Ray's object store (the plasma mapping):
    a worker that reads or writes a block maps its pages, so the store shows up in workers' PSS."""
    total = store = 0
    in_store = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                in_store = "plasma" in line
            elif line.startswith("Pss:"):
                kb = int(line.split()[1]) * 1024
                total += kb
                if in_store:
                    store += kb
    return total, store


def _kinds_text(kinds: dict[str, tuple[int, int]]) -> str:
    return ", ".join(f"{k} {mb} ({n})" for k, (mb, n) in kinds.items())


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(d))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


class TreeRss:
    """Peaks, sampled on a thread: summed RSS and summed PSS of a process and all its
    descendants, and the process's own private memory (RssAnon: its heap, not the shared
    object-store pages a Ray driver maps when it reads blocks)."""

    def __init__(self, pid: int, every: float = 0.2):
        self.pid, self.every, self.peak, self.pss_peak, self.anon_peak = pid, every, 0, 0, 0
        self.pss_peak_kinds: dict[str, tuple[int, int]] = {}  # kind -> (PSS, processes) when the tree's PSS peaked
        self.pss_every = 10  # PSS every 10th sample (2 s)
        self.anon_series: list[int] = []  # RssAnon every 2 s: does it plateau or keep climbing?
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        tick = 0
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss(self.pid))
            self.anon_peak = max(self.anon_peak, _status_kb(self.pid, "RssAnon") * 1024)
            if tick % self.pss_every == 0:  # smaps walks page tables: too dear every 0.2 s
                kinds = _tree_pss_by_kind(self.pid)
                pss = sum(total for total, _ in kinds.values())
                if pss > self.pss_peak:
                    self.pss_peak, self.pss_peak_kinds = pss, kinds
                self.anon_series.append(_status_kb(self.pid, "RssAnon") * 1024)
            tick += 1
            self._stop.wait(self.every)

    def quarters_mb(self) -> list[float]:
        """Peak private memory in each quarter of the run: flat late quarters = a plateau, not a leak."""
        xs = self.anon_series
        cut = [len(xs) * i // 4 for i in range(5)]
        return [max(xs[a:b], default=0) / 2**20 for a, b in zip(cut, cut[1:])]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_child(cmd: list[str], env: dict, log: Path) -> dict:
    """Run cmd; wall, stdout, wait4 peak RSS (MB) and sampled tree peak RSS (MB)."""
    import tempfile

    # stdout to a file, not a pipe: processes the child leaves behind (Ray's) could hold a pipe open
    with open(log, "ab") as f, tempfile.TemporaryFile() as stdout:
        f.write(f"\n$ {' '.join(cmd)}\n".encode())
        f.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=f, cwd=REPO)
        with TreeRss(proc.pid) as tree:
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        out = stdout.read()
        f.write(out)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])}... exited {proc.returncode}; see {log}")
    return {"wall": wall, "stdout": out.decode(errors="replace"), "rss_mb": usage.ru_maxrss / 1024,
            "tree_mb": tree.peak / 2**20, "pss_mb": tree.pss_peak / 2**20, "anon_mb": tree.anon_peak / 2**20,
            "anon_quarters_mb": tree.quarters_mb(),
            "pss_kinds_mb": {k: (round(v / 2**20), n) for k, (v, n) in sorted(tree.pss_peak_kinds.items(), key=lambda kv: -kv[1][0])}}


def child_detect(run_dir: str) -> None:
    """Detect alone over a downloaded run: the runner's tar reading + the pipeline's DetectStage."""
    from laionface.pipeline import Pipeline
    from laionface.runfolder import RunFolder
    from laionface.runner import IMAGE_BATCH, base_samples, image_batches
    from laionface.stages.detect import DetectStage
    from laionface.stages.download import download_part

    t0 = time.perf_counter()
    run = RunFolder(run_dir)
    pipeline = Pipeline.from_dict(json.loads(run.config.read_text())["pipeline"])
    stage = DetectStage(pipeline.get("detect"))
    stage.setup()
    images = faces = 0
    detect_s = 0.0
    for part in run.candidate_parts():
        table = base_samples(run, part, download_part(run, part, pipeline.get("download")))  # reads the marker
        for batch in image_batches(run, table, IMAGE_BATCH):
            t = time.perf_counter()
            out = stage(batch)
            detect_s += time.perf_counter() - t
            images += batch.num_rows
            faces += sum(x or 0 for x in out["kept_face_count"].to_pylist())
    print(json.dumps({"images": images, "faces": faces, "detect_s": detect_s, "inner_s": time.perf_counter() - t0}))


def run_summary(run: Path) -> dict:
    """Rows, statuses and summed stage seconds from RUN/_done/part-*.json; raw tar bytes."""
    import collections

    counts: collections.Counter = collections.Counter()
    seconds: collections.Counter = collections.Counter()
    hosts = set()
    parts = sorted((run / "_done").glob("part-*.json"))
    for p in parts:
        rec = json.loads(p.read_text())
        counts.update(rec["status_counts"])
        seconds.update(rec["stage_seconds"])
        hosts.add(rec.get("host"))
    tars = list((run / "raw").glob("part-*/*.tar"))
    return {"parts": len(parts), "counts": dict(counts), "stage_seconds": dict(seconds), "hosts": sorted(map(str, hosts)),
            "raw_tar_bytes": sum(t.stat().st_size for t in tars)}


def download_kept(run: Path) -> int:
    import pyarrow.parquet as pq

    return sum(
        sum(s == "kept" for s in pq.read_table(m, columns=["status"])["status"].to_pylist())
        for m in (run / "raw").glob("part-*/_download.parquet")
    )


def jpg_bytes(run: Path) -> tuple[int, int]:
    import tarfile

    n = total = 0
    for t in (run / "raw").glob("part-*/*.tar"):
        with tarfile.open(t) as tar:
            for m in tar:
                if m.name.endswith(".jpg"):
                    n += 1
                    total += m.size
    return n, total


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--urls", type=int, default=None, help="URLs (= images) at 1x (default 2000; 300 with --quick)")
    ap.add_argument("--quick", action="store_true", help="300 URLs, 1 repeat, scale 2, no RESULTS.md entry")
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    ap.add_argument("--runner", choices=("local", "ray", "both"), default="both")
    ap.add_argument("--scale", type=int, default=None, help="input multiple for the RSS check (default 10; 2 with --quick; 0 skips)")
    ap.add_argument("--workdir", type=Path, default=HERE / "_work" / "e2e")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--child-detect", metavar="RUN", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    global PIPELINE
    PIPELINE = write_pipeline(args.workdir)
    if args.child_detect:
        child_detect(args.child_detect)
        return 0

    from download_bench import NGINX, Nginx, machine

    n = args.urls or (300 if args.quick else 2000)
    repeats = args.repeats or (1 if args.quick else 3)
    scale = args.scale if args.scale is not None else (2 if args.quick else 10)
    runners = ["local", "ray"] if args.runner == "both" else [args.runner]
    if not Path(NGINX).exists():
        print(f"{NGINX} not found; install it with: apt-get install -y nginx", file=sys.stderr)
        return 2
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"e2e bench: {n} URLs, {repeats} repeats, runners {runners}, RSS scale {scale}x; {machine()}", flush=True)
    images_dir = work / f"images-{n}"
    images = make_images(images_dir, n)
    total_mb = sum((images_dir / name).stat().st_size for name, _, _ in images) / 1e6
    print(f"images: {n} composed face JPEGs, {SIZE_RANGE[0]}-{SIZE_RANGE[1]} px per side, {total_mb:.0f} MB "
          f"({total_mb / n * 1e3:.0f} kB mean)", flush=True)

    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0")
    log = work / "children.log"
    log.write_text("")
    lf = str(LAIONFACE)
    res: dict[str, list] = {k: [] for k in ("dl", "det", "det_inner", *(f"e2e_{r}" for r in runners))}
    info: dict = {}
    scaled: dict[str, dict] = {}
    load_before = os.getloadavg()[0]
    with Nginx(images_dir, work / "nginx") as server:
        print(f"server: {server.name} at {server.url}", flush=True)
        meta = write_meta(work / "meta-1x", server.url, images, 1)

        def do_dl() -> None:
            run = work / "run-dl"
            shutil.rmtree(run, ignore_errors=True)
            sel = run_child([lf, "select", "--meta", str(meta), "--pipeline", str(PIPELINE), "--out", str(run)], env, log)
            r = run_child([lf, "download", str(run), "--allow-private-addresses"], env, log)
            got = download_kept(run)
            if got != n:
                raise RuntimeError(f"download kept {got} of {n}; see {run}")
            res["dl"].append(n / r["wall"])
            info["select_wall"] = sel["wall"]
            info["dl_wall"] = r["wall"]
            info["bytes"] = jpg_bytes(run)
            info["raw_tar_bytes"] = sum(t.stat().st_size for t in (run / "raw").glob("part-*/*.tar"))
            print(f"    download: {r['wall']:.2f} s ({n / r['wall']:.1f} images/s); select before it {sel['wall']:.2f} s", flush=True)

        def do_det() -> None:
            run = work / "run-dl"
            r = run_child([sys.executable, str(Path(__file__).resolve()), "--child-detect", str(run)], env, log)
            d = json.loads(r["stdout"].strip().splitlines()[-1])
            res["det"].append(d["images"] / r["wall"])
            res["det_inner"].append(d["images"] / d["detect_s"])
            info["det_faces"] = d["faces"]
            print(f"    detect: {r['wall']:.2f} s ({d['images'] / r['wall']:.1f} images/s; DetectStage calls alone "
                  f"{d['detect_s']:.2f} s = {d['images'] / d['detect_s']:.1f} images/s), {d['faces']} kept faces", flush=True)

        def do_e2e(runner: str, meta_dir: Path, urls: int, tag: str) -> dict:
            run = work / f"run-e2e-{runner}"
            shutil.rmtree(run, ignore_errors=True)
            cmd = [lf, "run", str(PIPELINE), "--input", str(meta_dir), "--out", str(run), "--allow-private-addresses"]
            if runner == "ray":
                cmd += ["--runner", "ray"]
            r = run_child(cmd, env, log)
            s = run_summary(run)
            kept_dl = download_kept(run)
            if kept_dl != urls or s["parts"] != PARTS:
                raise RuntimeError(f"e2e {runner}: {s['parts']} parts done, {kept_dl} of {urls} downloaded; see {run}")
            r.update(s, images=kept_dl, tput=kept_dl / r["wall"])
            secs = ", ".join(f"{k} {v:.1f}" for k, v in s["stage_seconds"].items())
            print(f"    e2e {runner}{tag}: {r['wall']:.2f} s ({r['tput']:.1f} images/s), peak RSS {r['rss_mb']:.0f} MB "
                  f"(tree {r['tree_mb']:.0f} MB, tree PSS {r['pss_mb']:.0f} MB, own private {r['anon_mb']:.0f} MB, by quarter of the run {'/'.join(f'{q:.0f}' for q in r['anon_quarters_mb'])}); stage seconds summed over parts: {secs}; statuses {s['counts']}", flush=True)
            print(f"      tree PSS at its peak by process (MB, count): {_kinds_text(r['pss_kinds_mb'])}", flush=True)
            shutil.rmtree(run / "laion_face", ignore_errors=True)  # disk: the shards are not needed after the checks
            return r

        e2e_runs: dict[str, list[dict]] = {r: [] for r in runners}
        print("warm-up (untimed): one download", flush=True)
        do_dl()
        res["dl"].clear()
        for rep in range(repeats):
            print(f"  repeat {rep + 1}", flush=True)
            steps = ["dl", "det", *runners]
            for step in (steps if rep % 2 == 0 else [*runners[::-1], "dl", "det"]):
                if step == "dl":
                    do_dl()
                elif step == "det":
                    do_det()
                else:
                    r = do_e2e(step, meta, n, "")
                    res[f"e2e_{step}"].append(r["tput"])
                    e2e_runs[step].append(r)
        if scale > 1:
            meta_s = write_meta(work / f"meta-{scale}x", server.url, images, scale)
            for runner in runners:
                print(f"  scale {scale}x ({scale * n} URLs)", flush=True)
                scaled[runner] = do_e2e(runner, meta_s, scale * n, f" {scale}x")
            shutil.rmtree(meta_s, ignore_errors=True)
    load_after = os.getloadavg()[0]

    med = {k: statistics.median(v) for k, v in res.items() if v}
    bound = 1 / (1 / med["dl"] + 1 / med["det"])
    n_jpg, jpg_total = info["bytes"]
    lines = [
        f"- input: {n} URLs in {PARTS} LAION parts of {n // PARTS} rows; {n} composed real-face JPEGs, "
        f"{SIZE_RANGE[0]}-{SIZE_RANGE[1]} px per side, {total_mb:.0f} MB; nginx ({server.name}) on 127.0.0.1",
        "- pipeline: pipelines/laion_face_cropped.yaml without score (select, download 1 process x 64 threads resize_mode no, "
        "detect MobileNet-0.25 max_side 640, crop aligned_farl 256 px, laion_face + laion_face_cropped shards; CLIP skipped)",
        f"- bytes per image (raw tars): {jpg_total / n_jpg / 1e3:.1f} kB JPEG, {info['raw_tar_bytes'] / n_jpg / 1e3:.1f} kB "
        f"per sample with tar headers, .txt and .json",
        f"- T_dl  (laionface download, child wall): {med['dl']:.1f} images/s; per repeat " + ", ".join(f"{x:.1f}" for x in res["dl"]),
        f"- T_det (DetectStage over the raw tars, child wall incl. model load): {med['det']:.1f} images/s; per repeat "
        + ", ".join(f"{x:.1f}" for x in res["det"]) + f" (DetectStage calls alone {med['det_inner']:.1f} images/s)",
        f"- bound 1/(1/T_dl + 1/T_det) = {bound:.1f} images/s; target T_e2e >= 0.8 x bound = {0.8 * bound:.1f} images/s",
    ]
    verdicts = []
    for runner in runners:
        runs = e2e_runs[runner]
        t = med[f"e2e_{runner}"]
        ratio = t / bound
        secs: dict[str, list[float]] = {}
        for r in runs:
            for k, v in r["stage_seconds"].items():
                secs.setdefault(k, []).append(v)
        stage_txt = ", ".join(f"{k} {statistics.median(v):.1f} s" for k, v in secs.items())
        walls = statistics.median(r["wall"] for r in runs)
        rss1 = statistics.median(r["rss_mb"] for r in runs)
        tree1 = statistics.median(r["tree_mb"] for r in runs)
        pss1 = statistics.median(r["pss_mb"] for r in runs)
        anon1 = statistics.median(r["anon_mb"] for r in runs)
        lines.append(
            f"- T_e2e {runner}: {t:.1f} images/s ({walls:.2f} s wall for select+download+detect+write of {n}); "
            f"= {ratio:.2f}x bound; per repeat " + ", ".join(f"{x:.1f}" for x in res[f"e2e_{runner}"])
            + f"; stages run (summed over the {PARTS} parts, median): {stage_txt}; hosts {runs[-1]['hosts']}")
        verdicts.append(f"{runner} {'PASS' if ratio >= 0.8 else 'FAIL'} ({ratio:.2f}x bound)")
        if runner in scaled:
            s = scaled[runner]
            lines.append(
                f"- peak RSS {runner}: 1x {rss1:.0f} MB (wait4) / {tree1:.0f} MB (process tree); {scale}x ({scale * n} URLs, "
                f"{scale * n // PARTS} rows per part, {s['wall']:.0f} s, {s['tput']:.1f} images/s): {s['rss_mb']:.0f} MB / "
                f"{s['tree_mb']:.0f} MB = {s['rss_mb'] / rss1:.2f}x / {s['tree_mb'] / tree1:.2f}x (target <= 1.2x)")
            lines.append(
                f"- peak memory without double counting, {runner}: tree PSS 1x {pss1:.0f} MB, {scale}x {s['pss_mb']:.0f} MB = "
                f"{s['pss_mb'] / pss1:.2f}x; the run process's private memory (RssAnon) 1x {anon1:.0f} MB, {scale}x "
                f"{s['anon_mb']:.0f} MB = {s['anon_mb'] / anon1:.2f}x; its peak by quarter of the {scale}x run "
                + "/".join(f"{q:.0f}" for q in s["anon_quarters_mb"]) + " MB")
            lines.append(f"- tree PSS at its peak by process (MB, count), {runner} 1x (last repeat): {_kinds_text(runs[-1]['pss_kinds_mb'])}; "
                         f"{scale}x: {_kinds_text(s['pss_kinds_mb'])}")
            worst = max(s["pss_mb"] / pss1, s["anon_mb"] / anon1)
            verdicts.append(f"{runner} memory {scale}x/1x (tree PSS, own private) {worst:.2f}x {'PASS' if worst <= 1.2 else 'FAIL'}; "
                            f"wait4 RSS {s['rss_mb'] / rss1:.2f}x")
        else:
            lines.append(f"- peak RSS {runner} 1x: {rss1:.0f} MB (wait4) / {tree1:.0f} MB (process tree); tree PSS {pss1:.0f} MB; "
                         f"own private {anon1:.0f} MB")
    lines.append(f"- walls include interpreter start, imports and model load for every figure; order alternated "
                 f"between repeats, one untimed warm-up download; 1-min load average {load_before:.2f} before, {load_after:.2f} after")
    lines.append("- RESULT: " + "; ".join(verdicts) + " (target T_e2e >= 0.8x bound; RSS <= 1.2x)")
    print()
    print(f"median of {repeats}:")
    print("\n".join(lines))
    if not (args.quick or args.no_record):
        cmd_line = "python benchmarks/e2e_bench.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
        block = ["", f"## e2e — {datetime.date.today().isoformat()}", "",
                 f"`{cmd_line}` (median of {repeats}; {machine()}; laionface CLI children)", "", *lines, ""]
        with open(RESULTS, "a") as f:
            f.write("\n".join(block))
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
