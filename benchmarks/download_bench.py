"""Download stage vs the img2dataset CLI with the same settings, over 127.0.0.1.

    python benchmarks/download_bench.py [--quick] [--images 2000] [--repeats 3] [--server auto|nginx|python]

Generates (once, cached in benchmarks/_work/download/images-N) N JPEG images, 320-1,024 px on
each side (smooth random colour fields + gradients + fine noise, quality 88, ~50-150 kB), and
serves them from 127.0.0.1 with nginx (Debian package `nginx`; the script starts its own
`nginx -c <generated config>` with daemon off, 2 workers, access log off, all paths in the work
folder, and stops it at the end). Without /usr/sbin/nginx it says how to install it and falls
back to laionface.testing.FaultServer (Python's http.server), which may be the bottleneck.

Contenders, each in its own child process (wall time measured around the child, so interpreter
start, imports and img2dataset's own process start-up are included for both):
  ours: `python benchmarks/download_bench.py --child-ours RUN` -> laionface's
        download_part(RunFolder(RUN), 0, DownloadConfig(allow_private_addresses=True)):
        candidates parquet -> img2dataset (as a library) -> per-row RESULT + _download.parquet.
  i2d:  `.venv/bin/img2dataset --url_list ... ` with the arguments laionface's
        _img2dataset_args(DownloadConfig()) passes (printed below; values equal to
        img2dataset's defaults are left out, since the CLI cannot spell `inf`), over the same
        URL list parquet columns (URL, TEXT, laionface_key, SAMPLE_ID, LICENSE, NSFW, similarity).
Both children get NO_ALBUMENTATIONS_UPDATE=1 so albumentations' import-time PyPI version check
(an HTTP request with a 2 s timeout) does not add network noise to either side.

One untimed warm-up pair first (page cache, first imports), then A/B order alternates between
repeats; medians of --repeats. Prints images/s for both, the wall
times, and ours/i2d throughput (target >= 0.95x). Checks that every image downloaded on both
sides. Appends a dated block to benchmarks/RESULTS.md unless --no-record (or --quick).
"""

from __future__ import annotations

# Keep module-level imports light: this file is also the child process for `ours`, and
# img2dataset spawns its workers (multiprocessing "spawn"), which re-import this module.
import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
NGINX = "/usr/sbin/nginx"
I2D = Path(sys.executable).with_name("img2dataset")
SIZE_RANGE = (320, 1024)


# ----------------------------------------------------------------------------------------------
# images


def make_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    """N JPEGs img_00000.jpg..; cached: a complete folder (with its _done file) is reused."""
    names = [f"img_{i:05d}.jpg" for i in range(n)]
    done = folder / "_done"
    if done.exists():
        return names
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for i, name in enumerate(names):
        w, h = (int(v) for v in rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, 2))
        coarse = Image.fromarray(rng.integers(0, 256, (h // 48 + 2, w // 48 + 2, 3), dtype=np.uint8))
        field = np.asarray(coarse.resize((w, h), Image.BICUBIC), np.float32)
        gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
        grad = (gx / w * rng.uniform(-80, 80) + gy / h * rng.uniform(-80, 80))[..., None]
        noise = rng.normal(0, 6, (h, w, 1)).astype(np.float32)
        img = np.clip(field * 0.7 + grad + noise + 40, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / name, "JPEG", quality=88)
        if (i + 1) % 500 == 0:
            print(f"  generated {i + 1}/{n} images ({time.perf_counter() - t0:.0f} s)", flush=True)
    done.write_text(str(n))
    return names


# ----------------------------------------------------------------------------------------------
# servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server on 127.0.0.1:{port} did not start within {deadline_s} s")


class Nginx:
    """nginx in the foreground (daemon off) as our child, with a generated minimal config."""

    def __init__(self, root: Path, work: Path):
        self.root, self.work = root.resolve(), work.resolve()
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def config(self) -> str:
        w = self.work
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the image folder
        kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        temps = "\n".join(f"    {k}_temp_path {w}/tmp/{k};" for k in kinds)
        return f"""{user}daemon off;
worker_processes 2;
pid {w}/nginx.pid;
error_log {w}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temps}
    types {{ image/jpeg jpg; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
    }}
}}
"""

    def __enter__(self) -> "Nginx":
        (self.work / "tmp").mkdir(parents=True, exist_ok=True)
        conf = self.work / "nginx.conf"
        conf.write_text(self.config())
        cmd = [NGINX, "-p", str(self.work), "-e", str(self.work / "nginx-error.log"), "-c", str(conf)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(self.port)
        except RuntimeError:
            self.proc.kill()
            raise RuntimeError(f"nginx did not start: {self.proc.communicate()[1].decode(errors='replace')}")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: fast shutdown of master and workers
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        out = subprocess.run([NGINX, "-v"], capture_output=True, text=True)
        return (out.stderr or out.stdout).strip().replace("nginx version: ", "") + ", 2 workers"


class PythonServer:
    """Fallback: laionface's FaultServer (ThreadingHTTPServer) in this process."""

    def __init__(self, root: Path):
        from laionface.testing.server import FaultServer

        self.server = FaultServer(root)
        self.name = "laionface FaultServer (Python http.server) - may be the bottleneck"

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url


# ----------------------------------------------------------------------------------------------
# inputs for both contenders


def write_inputs(work: Path, base_url: str, names: list[str]) -> tuple[Path, Path]:
    """RUN template folder (candidates part 0) and the equivalent img2dataset URL-list parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from laionface.runfolder import RunFolder, write_parquet
    from laionface.schema import CANDIDATES, empty_columns
    from laionface.stages.download import _CARRIED, _KEY_COL

    n = len(names)
    t = pa.table({
        "key": [f"00000_{i}" for i in range(n)],
        "part": pa.array([0] * n, pa.int32()),
        "row": pa.array(range(n), pa.int64()),
        "SAMPLE_ID": pa.array(range(n), pa.int64()),
        "URL": [f"{base_url}/{name}" for name in names],
        "TEXT": [f"a synthetic photo number {i}" for i in range(n)],
        "LICENSE": ["?"] * n,
        "NSFW": ["UNLIKELY"] * n,
        "similarity": pa.array([0.31] * n, pa.float32()),
        "status": ["kept"] * n,
    })
    candidates = empty_columns(t, CANDIDATES)
    template = work / "run-template"
    shutil.rmtree(template, ignore_errors=True)
    write_parquet(candidates, RunFolder(template).candidates(0), CANDIDATES)
    # exactly what run_img2dataset hands to img2dataset
    url_list = work / "urls.parquet"
    pq.write_table(candidates.select(["URL", "TEXT", *_CARRIED]).append_column(_KEY_COL, candidates["key"]), url_list)
    return template, url_list


def i2d_command(url_list: Path, out: Path) -> list[str]:
    """The img2dataset CLI with the arguments laionface passes to img2dataset.download()."""
    import inspect

    from img2dataset import download as i2d_download

    from laionface.stages.download import DownloadConfig, _img2dataset_args

    defaults = {k: p.default for k, p in inspect.signature(i2d_download).parameters.items()}
    args = _img2dataset_args(DownloadConfig(allow_private_addresses=True), url_list, out)
    cmd = [str(I2D)]
    for k, v in args.items():
        if k not in ("url_list", "output_folder") and k in defaults and defaults[k] == v:
            continue  # img2dataset's own default (the CLI cannot spell inf); keeps the line short
        if isinstance(v, (list, tuple)):
            v = json.dumps(list(v))
        cmd += [f"--{k}", str(v)]
    return cmd


# ----------------------------------------------------------------------------------------------
# children


def child_ours(run_dir: str) -> None:
    from laionface.runfolder import RunFolder
    from laionface.stages.download import DownloadConfig, download_part

    t0 = time.perf_counter()
    result = download_part(RunFolder(run_dir), 0, DownloadConfig(allow_private_addresses=True))
    secs = time.perf_counter() - t0
    kept = sum(s == "kept" for s in result["status"].to_pylist())
    print(json.dumps({"rows": result.num_rows, "kept": kept, "inner_s": secs}))


def count_i2d_successes(out: Path) -> int:
    import pyarrow.parquet as pq

    return sum(
        sum(s == "success" for s in pq.read_table(p, columns=["status"])["status"].to_pylist())
        for p in out.glob("[0-9]*.parquet")
    )


def run_child(cmd: list[str], env: dict, log: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    with open(log, "ab") as f:
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=f, cwd=REPO)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"{cmd[:3]}... exited {out.returncode}; see {log}")
    return wall, out.stdout.decode(errors="replace")


# ----------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=None, help="images to serve (default 2000; 300 with --quick)")
    ap.add_argument("--quick", action="store_true", help="300 images, no RESULTS.md entry")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--server", choices=("auto", "nginx", "python"), default="auto")
    ap.add_argument("--workdir", type=Path, default=HERE / "_work" / "download")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the untimed warm-up pair")
    ap.add_argument("--child-ours", metavar="RUN", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_ours:
        child_ours(args.child_ours)
        return 0

    n = args.images or (300 if args.quick else 2000)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"download bench: {n} images, {args.repeats} repeats, {machine()}", flush=True)
    images = work / f"images-{n}"
    names = make_images(images, n)
    total_mb = sum((images / name).stat().st_size for name in names) / 1e6
    sizes = f"{SIZE_RANGE[0]}-{SIZE_RANGE[1]} px per side"
    print(f"images: {n} JPEG, {sizes}, {total_mb:.0f} MB ({total_mb / n * 1e3:.0f} kB mean)")

    use_nginx = args.server == "nginx" or (args.server == "auto" and Path(NGINX).exists())
    if args.server == "nginx" and not Path(NGINX).exists():
        print(f"{NGINX} not found; install it with: apt-get install -y nginx", file=sys.stderr)
        return 2
    if not use_nginx:
        if args.server == "auto":
            print(f"WARNING: {NGINX} not found (install it with: apt-get install -y nginx); falling back to "
                  "Python's http.server (laionface FaultServer), which may be the bottleneck.", flush=True)
    server = Nginx(images, work / "nginx") if use_nginx else PythonServer(images)

    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1")
    log = work / "children.log"
    log.write_text("")
    walls: dict[str, list[float]] = {"ours": [], "i2d": []}
    inner: list[float] = []
    with server:
        print(f"server: {server.name} at {server.url}")
        template, url_list = write_inputs(work, server.url, names)
        cmd = i2d_command(url_list, work / "i2d-out")
        shown = " ".join(c if c != str(url_list) else "URLS.parquet" for c in cmd).replace(str(work / "i2d-out"), "OUT")
        print(f"i2d command: {shown.replace(str(I2D), 'img2dataset')}")
        load_before = os.getloadavg()[0]
        for rep in range(-1 if args.warmup else 0, args.repeats):  # rep -1: untimed warm-up pair
            order = ("ours", "i2d") if rep % 2 == 0 else ("i2d", "ours")
            line = []
            for who in order:
                if who == "ours":
                    run = work / "run-ours"
                    shutil.rmtree(run, ignore_errors=True)
                    shutil.copytree(template, run)
                    child = [sys.executable, str(Path(__file__).resolve()), "--child-ours", str(run)]
                    wall, out = run_child(child, env, log)
                    info = json.loads(out.strip().splitlines()[-1])
                    if info["kept"] != n or info["rows"] != n:
                        raise RuntimeError(f"ours kept {info['kept']} of {n} (rows {info['rows']}); see {run}")
                    inner.append(info["inner_s"])
                else:
                    out_dir = work / "i2d-out"
                    shutil.rmtree(out_dir, ignore_errors=True)
                    wall, _ = run_child(cmd, env, log)
                    ok = count_i2d_successes(out_dir)
                    if ok != n:
                        raise RuntimeError(f"img2dataset CLI downloaded {ok} of {n}; see {out_dir}")
                if rep >= 0:
                    walls[who].append(wall)
                line.append(f"{who} {wall:.2f} s ({n / wall:.0f} images/s)")
            print(f"  {'warm-up' if rep < 0 else f'repeat {rep + 1}'}: " + ", ".join(line), flush=True)
        load_after = os.getloadavg()[0]

    med = {k: statistics.median(v) for k, v in walls.items()}
    tput = {k: n / v for k, v in med.items()}
    ratio = tput["ours"] / tput["i2d"]
    per_rep = [w_i / w_o for w_o, w_i in zip(walls["ours"], walls["i2d"])]
    lines = [
        f"- images: {n} JPEG, {sizes}, {total_mb:.0f} MB; server: {server.name} on 127.0.0.1",
        "- settings (both): laionface DownloadConfig() defaults = resize_mode no, skip_reencode, webdataset, "
        "1 process x 64 threads, timeout 10, retries 0, sha256, no exif (command below)",
        f"- ours (laionface download_part, child process): {tput['ours']:.1f} images/s "
        f"({med['ours']:.2f} s wall; download_part itself {statistics.median(inner):.2f} s)",
        f"- img2dataset CLI (child process): {tput['i2d']:.1f} images/s ({med['i2d']:.2f} s wall)",
        f"- ours/img2dataset throughput = {ratio:.3f}x (target >= 0.95x); per repeat "
        + ", ".join(f"{r:.3f}x" for r in per_rep),
        "- wall = child process start to exit (interpreter, imports, img2dataset's worker start-up included for both); "
        f"A/B order alternated{', after one untimed warm-up pair' if args.warmup else ''}; "
        f"1-min load average {load_before:.2f} before, {load_after:.2f} after",
    ]
    lines.append(f"- RESULT {'PASS' if ratio >= 0.95 else 'FAIL'}: ours/img2dataset = {ratio:.3f}x (target >= 0.95x)")
    print()
    print(f"median of {args.repeats}:")
    for line in lines:
        print(line)
    if not (args.quick or args.no_record):
        cmd_line = "python benchmarks/download_bench.py" + "".join(
            f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
        block = [
            "",
            f"## download — {datetime.date.today().isoformat()}",
            "",
            f"`{cmd_line}` (median of {args.repeats}; {machine()}; img2dataset {_i2d_version()})",
            "",
            *lines,
            f"- img2dataset command: `{shown.replace(str(I2D), 'img2dataset')}`",
            "",
        ]
        with open(RESULTS, "a") as f:
            f.write("\n".join(block))
        print(f"appended to {RESULTS}")
    return 0


def _i2d_version() -> str:
    from importlib.metadata import version

    return version("img2dataset")


if __name__ == "__main__":
    sys.exit(main())
