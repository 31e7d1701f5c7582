"""Score stage throughput against a plain open_clip loop over the same images and captions.

    python benchmarks/clip_bench.py [--quick] [--images 256] [--repeats 3] [--batch-size 64] [--device auto]

Both sides use one model object (random-init ViT-B-32: timing needs no weights), the same
batch size and the same torch thread settings, over composed face photos (JPEG bytes, 320-1600
px long side) and LAION-style captions:
  (a) stage: ScoreStage over a table with `image` and `TEXT` columns (decode, open_clip
      preprocessing, image and text towers, normalise, cosine, status, float16 embedding
      columns), end to end;
  (b) plain loop: per batch, `preprocess(Image.open(bytes).convert("RGB"))` per image,
      `encode_image`, `tokenizer`, `encode_text`, normalise, cosine: what one writes with
      open_clip's README in hand.
Both are checked to give the same scores. Prints stage/plain throughput (target >= 0.85x),
median of --repeats, and appends a dated block to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from laionface.testing.faces import NON_FACE_NAMES, compose, encode_jpeg, face_sources

RESULTS = Path(__file__).with_name("RESULTS.md")
CAPTIONS = (
    "Actress {i} arrives at the premiere of her new film in Los Angeles",
    "portrait of a smiling young man, studio photo {i}",
    "Wedding photographer captures the bride and groom, image {i}",
    "CEO speaks at the annual conference (photo {i})",
)


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


def plain_loop(model, preprocess, tokenizer, device: str, images: list[bytes], texts: list[str], bs: int) -> np.ndarray:
    import torch
    from PIL import Image

    scores = []
    with torch.no_grad():
        for s in range(0, len(images), bs):
            x = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in images[s : s + bs]])
            img = torch.nn.functional.normalize(model.encode_image(x.to(device)).float(), dim=-1)
            txt = torch.nn.functional.normalize(model.encode_text(tokenizer(texts[s : s + bs]).to(device)).float(), dim=-1)
            scores.append((img * txt).sum(-1).cpu().numpy())
    return np.concatenate(scores)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="the stage's decode threads (default: min(8, CPUs))")
    ap.add_argument("--prefetch", choices=["auto", "on", "off"], default="auto", help="the stage's prefetch setting")
    ap.add_argument("--quick", action="store_true", help="64 images (a smoke run; still median of --repeats)")
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.images = 64

    import open_clip
    import torch

    from laionface.stages.score import ClipModel, ScoreConfig, ScoreStage, pick_device

    device = pick_device(args.device)
    t = time.perf_counter()
    images = make_images(args.images)
    texts = [CAPTIONS[i % len(CAPTIONS)].format(i=i) for i in range(len(images))]
    print(f"composed {len(images)} JPEGs ({sum(map(len, images)) / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s")
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", device=device)
    model.eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    clip = ClipModel(model, preprocess, tokenizer, device, "ViT-B-32/random")
    prefetch = {"auto": None, "on": True, "off": False}[args.prefetch]
    config = ScoreConfig(batch_size=args.batch_size, threads=args.threads, device=device, apply_to="none", prefetch=prefetch)
    stage = ScoreStage(config, clip=clip)
    n = len(images)
    table = pa.table({
        "key": [f"00000_{i}" for i in range(n)], "status": ["kept"] * n, "error": pa.nulls(n, pa.string()),
        "image": pa.array(images, pa.binary()), "TEXT": texts,
    })

    warm = min(n, 2 * args.batch_size)  # first-run allocations (and CUDA kernels) out of the timings
    stage(table.slice(0, warm))
    plain_loop(model, preprocess, tokenizer, device, images[:warm], texts[:warm], args.batch_size)
    stage_s, plain_s = [], []
    for r in range(args.repeats):
        order = (0, 1) if r % 2 == 0 else (1, 0)  # alternate who goes first
        for which in order:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            if which == 0:
                out = stage(table)
            else:
                ref = plain_loop(model, preprocess, tokenizer, device, images, texts, args.batch_size)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            (stage_s if which == 0 else plain_s).append(time.perf_counter() - t)
        print(f"repeat {r + 1}: stage {stage_s[-1]:.2f} s, plain loop {plain_s[-1]:.2f} s")
    diff = float(np.abs(out["clip_score"].to_numpy() - ref).max())
    s, p = statistics.median(stage_s), statistics.median(plain_s)
    ratio = p / s
    verdict = "PASS" if ratio >= 0.85 else "MISS"
    lines = [
        f"images: {n} JPEG (composed face photos, 320-1600 px long side), captions {len(CAPTIONS)} LAION-style templates; "
        f"model ViT-B-32 random init, fp32, device {device}, batch_size {args.batch_size}, torch threads {torch.get_num_threads()}, "
        f"stage decode threads {stage.workers}, prefetch {stage.prefetch}",
        f"(a) stage end to end: {n / s:.1f} images/s ({s:.2f} s)",
        f"(b) plain open_clip loop: {n / p:.1f} images/s ({p:.2f} s)",
        f"stage/plain throughput = {ratio:.2f}x (target >= 0.85x) {verdict}; per repeat "
        + ", ".join(f"{b / a:.2f}x" for a, b in zip(stage_s, plain_s)),
        f"max |score difference| stage vs plain = {diff:.2e}",
    ]
    print("\n".join(lines))
    if not args.no_record:
        cpu = platform.processor() or platform.machine()
        try:
            cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        gpu = f", {torch.cuda.get_device_name(0)}" if device.startswith("cuda") else ""
        cmd = "python benchmarks/clip_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
        block = (
            f"\n## clip — {dt.date.today().isoformat()}\n\n"
            f"`{cmd.strip()}` (median of {args.repeats}, A/B order alternated; {cpu}, {os.cpu_count()} cores{gpu}; "
            f"torch {torch.__version__}, open_clip {open_clip.__version__})\n\n"
            + "\n".join(f"- {l}" for l in lines) + "\n"
        )
        with open(RESULTS, "a") as fh:  # append: other benchmarks write here too
            fh.write(block)
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
