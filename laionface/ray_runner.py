"""The Ray runner: the local runner's per-part pipeline on Ray, with Ray Data for the batch stages.

Per run: every pending part's download is a Ray task (img2dataset runs its own thread pool
inside it), so downloads run on any node while earlier parts are processed. As each part's
download finishes, its image batches go through a Ray Data streaming pipeline:

    slices of the raw tars -> map_batches(ReadImages)        tasks, any node
      -> map_batches(Detect)     actor pool, model loaded once per actor
      -> map_batches(crop)       tasks
      -> map_batches(Score)      actor pool, `num_gpus` when the cluster has GPUs
      -> driver: PartWork        shards, embeddings, manifests, `_done` last

with order preserved, so PartWork sees the batches the local runner would, and the bytes
are the same. Stages know nothing of Ray; only this module and `distributed` import it. The
run folder must be on storage every node sees. A part whose download or pipeline raises is
recorded in `_failed/` and the others go on.
"""

from __future__ import annotations

import socket
import tarfile
import time
import traceback
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .pipeline import Pipeline
from .runfolder import RunFolder
from .runner import (
    IMAGE_BATCH,
    LocalRunner,
    PartOutcome,
    PartWork,
    _now,
    base_samples,
    image_slices,
    jpg_members,
    shard_rows,
)
from .stages.crop import CropStage
from .stages.download import download_part

_SECONDS = "__seconds_"  # per-batch stage timings ride along as a column, summed by the driver


def _download(part: int, run_root: str, pipeline: dict, retry_failed: bool) -> dict:
    """Ray task: download one part; the table is read back by the driver from the marker."""
    import ray

    t0 = time.perf_counter()
    result = download_part(RunFolder(run_root), part, Pipeline.from_dict(pipeline).get("download"), retry_failed=retry_failed)
    node = ray.get_runtime_context().get_node_id()[:12]
    return {"rows": result.num_rows, "seconds": time.perf_counter() - t0, "host": f"{socket.gethostname()}/{node}"}


def _timed(name: str, fn, batch: pa.Table) -> pa.Table:
    t, n = time.perf_counter(), batch.num_rows
    out = fn(batch)
    return out.append_column(f"{_SECONDS}{name}", pa.array([(time.perf_counter() - t) / max(n, 1)] * out.num_rows, pa.float64()))


def _read_images(rows: pa.Table, run_root: str) -> pa.Table:
    """Ray Data task: one batch of a part's rows (one raw tar) -> the rows with their image bytes,
    read at the member offsets the driver indexed once per tar."""
    images = []
    with open(Path(run_root) / rows["raw_shard"][0].as_py(), "rb") as f:
        for offset, size in zip(rows["__offset"].to_pylist(), rows["__size"].to_pylist()):
            if offset < 0:
                images.append(None)
                continue
            f.seek(offset)
            images.append(f.read(size))
    return rows.drop_columns(["__offset", "__size"]).append_column("image", pa.array(images, pa.binary()))


def _crop(batch: pa.Table, pipeline: dict) -> pa.Table:
    """Ray Data task: crop has no model to keep, so no actor."""
    return _timed("crop", CropStage(Pipeline.from_dict(pipeline).get("crop")), batch)


class ModelStage:
    """detect or score in a Ray Data actor: the model is loaded once per actor."""

    def __init__(self, name: str, run_root: str, pipeline: dict, part: int):
        runner = LocalRunner(RunFolder(run_root), Pipeline.from_dict(pipeline), progress=False)
        self.name, self.stage = name, runner.detect_stage(part) if name == "detect" else runner.score_stage()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _timed(self.name, self.stage, batch)


class RayRunner:
    def __init__(self, run: RunFolder, pipeline: Pipeline, address: str | None = None, progress: bool = True):
        self.run = run
        self.pipeline = pipeline
        self.address = address or "local"
        self.progress = progress
        LocalRunner(run, pipeline, progress=False)  # the same up-front config checks

    def _init(self) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=None if self.address == "local" else self.address, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # PartWork gets the local runner's batch order
        ctx.enable_progress_bars = self.progress

    def run_parts(self, parts: list[int] | None = None, retry_failed: bool = False) -> list[PartOutcome]:
        import ray

        todo = parts if parts is not None else self.run.candidate_parts()
        outcomes = [PartOutcome(p, "skipped") for p in todo if self.run.is_done(p) and not retry_failed]
        pending = [p for p in todo if retry_failed or not self.run.is_done(p)]
        if not pending:
            return outcomes
        self._init()
        conf = self.pipeline.ray
        # SPREAD: parts' downloads go round the nodes. A window of downloads in flight (default:
        # half the cluster's CPUs) keeps the next parts downloading while this one is processed,
        # without starving the model stages of CPUs.
        task = ray.remote(num_cpus=conf.download_cpus, max_retries=1, scheduling_strategy="SPREAD")(_download)
        window = conf.downloads_in_flight or max(1, int(ray.cluster_resources().get("CPU", 1)) // 2)
        queue, refs, started = list(pending), {}, {}

        def submit() -> None:
            while queue and len(refs) < window:
                part = queue.pop(0)
                started[part] = _now()
                refs[task.remote(part, str(self.run.root), self.pipeline.to_dict(), retry_failed)] = part

        submit()
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            part = refs.pop(ready[0])
            submit()  # the next download starts before this part is processed
            try:
                outcomes.append(self._process(part, ray.get(ready[0]), started[part]))
            except Exception as exc:  # noqa: BLE001 - one part failing must not stop the others
                error = f"{type(exc).__name__}: {exc}"
                self.run.mark_failed(part, {"part": part, "state": "failed", "error": error, "traceback": traceback.format_exc()})
                outcomes.append(PartOutcome(part, "failed", error=error))
        return sorted(outcomes, key=lambda o: o.part)

    def _process(self, part: int, downloaded: dict, started: str) -> PartOutcome:
        run, p = self.run, self.pipeline
        table = base_samples(run, part, download_part(run, part, p.get("download")))  # the marker: no refetch
        outcome = PartOutcome(part, "done", stage_seconds={"download": downloaded["seconds"]},
                              stage_rows={"download": downloaded["rows"]})
        work = PartWork(run, p, part, table)
        try:
            for batch in self._batches(part, table):
                for name in [c for c in batch.column_names if c.startswith(_SECONDS)]:
                    outcome.tally(name[len(_SECONDS):], float(pc.sum(batch[name]).as_py() or 0), batch.num_rows)
                    batch = batch.drop_columns([name])
                t = time.perf_counter()
                work.add(batch)
                outcome.tally("write", time.perf_counter() - t, batch.num_rows)
        except BaseException:
            work.abort()
            raise
        return work.finish(outcome, {"host": downloaded["host"], "started_at": started})

    def _image_blocks(self, table: pa.Table) -> list[pa.Table]:
        """The part's batches (`image_slices` order) without images, each row with its member's
        offset and size in the raw tar: every tar's headers are read once, here."""
        blocks, current, members, rows = [], None, {}, None
        for shard, start, length in image_slices(table, IMAGE_BATCH):
            if shard != current:
                with tarfile.open(self.run.root / shard) as tar:
                    current, members, rows = shard, jpg_members(tar), shard_rows(table, shard)
            batch = rows.slice(start, length)
            found = [members.get(k) for k in batch["raw_key"].to_pylist()]
            batch = batch.append_column("__offset", pa.array([m.offset_data if m else -1 for m in found], pa.int64()))
            blocks.append(batch.append_column("__size", pa.array([m.size if m else 0 for m in found], pa.int64())))
        return blocks

    def _batches(self, part: int, table: pa.Table):
        import ray

        blocks = self._image_blocks(table)
        if not blocks:
            return iter(())
        conf = self.pipeline.ray
        ds = ray.data.from_arrow(blocks)  # one block per batch: batches stay IMAGE_BATCH rows, in order
        common: dict[str, Any] = {"batch_size": None, "batch_format": "pyarrow", "zero_copy_batch": True}
        pipeline = self.pipeline.to_dict()
        ds = ds.map_batches(_read_images, fn_kwargs={"run_root": str(self.run.root)}, num_cpus=0.25, **common)  # I/O
        if self.pipeline.runs("detect"):
            ds = ds.map_batches(ModelStage, fn_constructor_args=("detect", str(self.run.root), pipeline, part),
                                concurrency=(1, conf.detect_actors), **common)
        if self.pipeline.runs("crop"):
            ds = ds.map_batches(_crop, fn_kwargs={"pipeline": pipeline}, num_cpus=0.25, **common)  # ~1/5 of detect
        if self.pipeline.runs("score"):
            gpu = ray.cluster_resources().get("GPU", 0) and self.pipeline.get("score").device != "cpu"
            ds = ds.map_batches(ModelStage, fn_constructor_args=("score", str(self.run.root), pipeline, part),
                                concurrency=(1, conf.score_actors), num_gpus=conf.gpus_per_score_actor if gpu else None, **common)
        return ds.iter_batches(batch_size=None, batch_format="pyarrow")
