"""The Ray runner: the local runner's pipeline as one Ray Data streaming dataset over the parts.

    parts -> map_batches(download)   a task per part (img2dataset's threads inside): the part's
                                     alive rows with their image offsets in the raw tars
      -> map_batches(Detect)         actor pool, model loaded once per actor for the whole run;
                                     it reads its batch's images itself (seek + read), so images
                                     never queue in the object store ahead of the slowest stage
      -> map_batches(crop)           tasks
      -> map_batches(Score)          actor pool, `num_gpus` when the cluster has GPUs
      -> driver: one PartWork per part: shards, embeddings, manifests, `_done` last

One dataset for the run, so actors start once and the next parts download while earlier ones
are detected. A Ray Data row is one local-runner batch (a part's rows `IMAGE_BATCH` at a time,
as Arrow IPC bytes), so every stage sees exactly the local runner's batches, whatever blocks
Ray Data makes: CLIP's floats depend on which rows share a forward pass. Order is preserved,
so each part's batches reach its PartWork in the local runner's order and the bytes are the
same. Every row carries its part and how many rows the part sends; a part with nothing to
process, or whose download failed, sends one control row instead, so the driver knows when a
part is complete. A stage raising on a batch turns it into an error row: the part is recorded
in `_failed/` and the others go on. Stages know nothing of Ray; the run folder must be on
storage every node sees.
"""

from __future__ import annotations

import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
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
    failed_part,
    indexed_rows,
    read_images,
)
from .stages.crop import CropStage
from .stages.download import download_part, read_download_result

PART, COUNT, CONTROL, ERROR = "__part", "__count", "__control", "__error"  # CONTROL: null, "empty" or "error"
BATCH = "__batch"  # one local-runner batch of the part's rows, Arrow IPC; null in control rows
DL_SECONDS, DL_ROWS, HOST, STARTED = DOWNLOAD = ("__download_seconds", "__download_rows", "__host", "__started")
BLOCK_BYTES = 16 * 1024 * 1024
SECONDS = "__seconds_"  # + stage: the stage's time on the row's batch, summed by the driver


def _with_columns(table: pa.Table, values: dict[str, Any], types: dict[str, pa.DataType]) -> pa.Table:
    for name, value in values.items():
        table = table.append_column(name, pa.array([value] * table.num_rows, types.get(name)))
    return table


def _pack(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _payloads(buffers: list[pa.Buffer | None]) -> pa.ChunkedArray:
    """IPC payloads as a large_binary column, one chunk per payload, built on the buffers
    themselves (no copy). Not `pa.array([memoryview(buffer)])`: pyarrow 26 never releases that
    memoryview's export, so every payload leaked, ~30 MB per 256-image batch (a crop worker
    reached 1.3 GB, the detect actor 1.5 GB, after ~40 batches; tests/test_ray_payloads.py)."""
    chunks = []
    for buffer in buffers:
        if buffer is None:
            chunks.append(pa.nulls(1, pa.large_binary()))
        else:
            offsets = pa.array([0, buffer.size], pa.int64()).buffers()[1]
            chunks.append(pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, buffer]))
    return pa.chunked_array(chunks, pa.large_binary())


def _unpack(payload: pa.Scalar) -> pa.Table:
    return pa.ipc.open_stream(payload.as_buffer()).read_all()


def _unpack_detached(payload: pa.Scalar) -> pa.Table:
    """A batch for the driver's PartWork: the images still in the payload (written to the tars,
    then dropped), every other column copied into buffers of its own. PartWork keeps manifest
    columns, faces and embedding rows until the part ends; as zero-copy IPC slices they pinned
    the whole payload (images, crop JPEGs) until then: +8 MB per 256-row batch, so the driver's
    memory grew with the rows per part. One copy of all of them would still pin the crops, so
    each column gets its own (take)."""
    table = _unpack(payload)
    every = pa.array(np.arange(table.num_rows))
    columns = [column if name == "image" else column.take(every) for name, column in zip(table.column_names, table.columns)]
    return pa.Table.from_arrays(columns, schema=table.schema)


def _download(batch: pa.Table, run_root: str, pipeline: dict, retry_failed: bool, batch_rows: int) -> pa.Table:
    """Ray Data task, one part: download it (or read the finished download) and list its work,
    one row per local-runner batch of its alive rows (with their image offsets, not images)."""
    import ray

    part, started, t0 = batch["part"][0].as_py(), _now(), time.perf_counter()
    run, batches, control, error, result_rows = RunFolder(run_root), [], None, None, 0
    try:
        result = download_part(run, part, Pipeline.from_dict(pipeline).get("download"), retry_failed=retry_failed)
        result_rows = result.num_rows
        rows = indexed_rows(run, base_samples(run, part, result))
        batches = [_pack(rows.slice(s, batch_rows)) for s in range(0, rows.num_rows, batch_rows)]
    except Exception as exc:  # noqa: BLE001 - recorded as the part's failure; the others go on
        control, error = "error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    if not batches:
        control = control or "empty"
    out = pa.table({BATCH: _payloads(batches or [None])})
    host = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    values = {PART: part, COUNT: out.num_rows, CONTROL: control, ERROR: error, DL_SECONDS: time.perf_counter() - t0,
              DL_ROWS: result_rows, HOST: host, STARTED: started}
    types = {PART: pa.int32(), COUNT: pa.int64(), CONTROL: pa.string(), ERROR: pa.string(), DL_ROWS: pa.int64()}
    return _with_columns(out, values, types)


def _each_batch(name: str | None, stage_for: Callable[[int], Callable[[pa.Table], pa.Table]], batch: pa.Table) -> pa.Table:
    """Run a stage on every batch row of a Ray Data batch (each a local-runner batch of one
    part); control rows pass through. A stage raising turns its row into an error row."""
    parts, payloads = batch[PART].to_pylist(), batch[BATCH]
    controls, errors = batch[CONTROL].to_pylist(), batch[ERROR].to_pylist()
    out: list[pa.Buffer | None] = []
    seconds: list[float] = []
    for i, part in enumerate(parts):
        t = time.perf_counter()
        if controls[i] is None:
            try:
                out.append(_pack(stage_for(part)(_unpack(payloads[i]))))
            except Exception as exc:  # noqa: BLE001 - this part fails, the others go on
                controls[i], errors[i] = "error", f"{name or 'read'} raised {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
                out.append(None)
        else:
            out.append(None)
        seconds.append(time.perf_counter() - t)
    for column, values in ((BATCH, _payloads(out)), (CONTROL, pa.array(controls, pa.string())), (ERROR, pa.array(errors, pa.string()))):
        batch = batch.set_column(batch.schema.get_field_index(column), column, values)
    return batch.append_column(SECONDS + name, pa.array(seconds, pa.float64())) if name else batch


def _read(batch: pa.Table, run_root: str) -> pa.Table:
    return _each_batch(None, lambda part: lambda rows: read_images(run_root, rows), batch)


def _crop(batch: pa.Table, pipeline: dict) -> pa.Table:
    """Ray Data task: crop has no model to keep, so no actor."""
    stage = CropStage(Pipeline.from_dict(pipeline).get("crop"))
    return _each_batch("crop", lambda part: stage, batch)


def _reading(run_root: str, stage: Callable[[pa.Table], pa.Table]) -> Callable[[pa.Table], pa.Table]:
    return lambda rows: stage(read_images(run_root, rows))


class ModelStage:
    """detect or score in a Ray Data actor: the model is loaded once per actor, for the whole run.

    Detect reads its rows' images (seek + read from the raw tars) instead of a read stage before
    it: a read stage runs ahead of detect, the slowest stage, and its image blocks pile up in
    the object store, more the bigger the input (measured: Ray's tree PSS 1.23x at 10x input)."""

    def __init__(self, name: str, run_root: str, pipeline: dict):
        self.name, self.runner = name, LocalRunner(RunFolder(run_root), Pipeline.from_dict(pipeline), progress=False)
        if name == "detect":
            self.stage_for = lambda part: _reading(run_root, self.runner.detect_stage(part))
        else:
            self.stage_for = lambda part: self.runner.score_stage()
        if name == "score":
            self.runner.score_stage()  # load now, not on the first batch

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _each_batch(self.name, self.stage_for, batch)


@dataclass
class _Part:
    """The driver's view of one part while its rows arrive."""

    outcome: PartOutcome
    expected: int
    record: dict
    received: int = 0
    work: PartWork | None = None
    error: str | None = None


def _actor_cpus(cluster_cpus: float, download_cpus: float, models: int) -> float:
    """CPUs each model actor reserves: 1, less on a small cluster, so that the first actor of
    every model stage, a download task and a crop task fit at once. Ray Data holds an actor's CPUs
    for the whole run: on 2 CPUs a 1-CPU detect actor and a 1-CPU score actor left no CPU for
    the downloads, and the run waited forever."""
    spare = cluster_cpus - download_cpus - 0.25  # 0.25: a crop task
    return max(0.1, min(1.0, spare / models))


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
        ctx.execution_options.preserve_order = True  # each PartWork gets its rows in the local runner's order
        # Blocks of about one batch of images, not Ray's 128 MiB: a task's batches would otherwise
        # be merged into blocks that grow with the part, and the driver holds a block or two.
        ctx.target_max_block_size = BLOCK_BYTES
        ctx.enable_progress_bars = self.progress

    def run_parts(self, parts: list[int] | None = None, retry_failed: bool = False) -> list[PartOutcome]:
        todo = parts if parts is not None else self.run.candidate_parts()
        outcomes = [PartOutcome(p, "skipped") for p in todo if self.run.is_done(p) and not retry_failed]
        pending = [p for p in todo if retry_failed or not self.run.is_done(p)]
        if not pending:
            return outcomes
        self._init()
        states: dict[int, _Part] = {}
        try:
            for batch in self._dataset(pending, retry_failed).iter_batches(batch_size=None, batch_format="pyarrow"):
                parts = pc.unique(batch[PART]).to_pylist()
                for part in parts:  # most blocks hold one part: no copy of their images then
                    done = self._receive(states, part, batch if len(parts) == 1 else batch.filter(pc.equal(batch[PART], part)))
                    if done is not None:
                        outcomes.append(done)
                        del states[part]  # its rows, faces and writers: a finished part kept them until the run ended
        except Exception as exc:  # noqa: BLE001 - Ray itself failed: the unfinished parts are failed, a re-run redoes them
            error = f"{type(exc).__name__}: {exc}"
            for part in [p for p in pending if p not in {o.part for o in outcomes}]:
                state = states.get(part)
                if state and state.work:
                    state.work.abort()
                outcomes.append(failed_part(self.run, part, error, traceback.format_exc()))
        return sorted(outcomes, key=lambda o: o.part)

    def _dataset(self, pending: list[int], retry_failed: bool):
        import ray

        conf, pipeline, root = self.pipeline.ray, self.pipeline.to_dict(), str(self.run.root)
        # A window of downloads in flight (default: half the cluster's CPUs) keeps the next parts
        # downloading while earlier ones are processed, without starving the model stages.
        cpus = ray.cluster_resources().get("CPU", 1)
        window = conf.downloads_in_flight or max(1, int(cpus) // 2)
        actor_cpus = _actor_cpus(cpus, conf.download_cpus, models=1 + self.pipeline.runs("score"))
        common: dict[str, Any] = {"batch_size": 1, "batch_format": "pyarrow", "zero_copy_batch": True}  # a row is a batch
        ds = ray.data.from_items([{"part": p} for p in pending], override_num_blocks=len(pending))
        ds = ds.map_batches(_download, fn_kwargs={"run_root": root, "pipeline": pipeline, "retry_failed": retry_failed, "batch_rows": IMAGE_BATCH},
                            batch_size=1, batch_format="pyarrow", num_cpus=conf.download_cpus, concurrency=window)
        if self.pipeline.runs("detect"):  # reads the images itself
            ds = ds.map_batches(ModelStage, fn_constructor_args=("detect", root, pipeline), concurrency=(1, conf.detect_actors),
                                num_cpus=actor_cpus, **common)
        else:
            ds = ds.map_batches(_read, fn_kwargs={"run_root": root}, num_cpus=0.25, **common)  # I/O
        if self.pipeline.runs("crop"):
            ds = ds.map_batches(_crop, fn_kwargs={"pipeline": pipeline}, num_cpus=0.25, **common)  # ~1/5 of detect
        if self.pipeline.runs("score"):
            gpu = ray.cluster_resources().get("GPU", 0) and self.pipeline.get("score").device != "cpu"
            ds = ds.map_batches(ModelStage, fn_constructor_args=("score", root, pipeline), concurrency=(1, conf.score_actors), num_cpus=actor_cpus,
                                num_gpus=conf.gpus_per_score_actor if gpu else None, **common)
        return ds

    def _receive(self, states: dict[int, _Part], part: int, rows: pa.Table) -> PartOutcome | None:
        """Feed one part's batch rows to its PartWork; the part's outcome once all have come."""
        state = states.get(part)
        if state is None:
            first = {c: rows[c][0].as_py() for c in (COUNT, *DOWNLOAD)}
            state = states[part] = _Part(PartOutcome(part, "done"), first[COUNT], {"host": first[HOST], "started_at": first[STARTED]})
            state.outcome.tally("download", first[DL_SECONDS], first[DL_ROWS])
        state.received += rows.num_rows
        controls, errors = rows[CONTROL].to_pylist(), rows[ERROR].to_pylist()
        state.error = state.error or next((e for c, e in zip(controls, errors) if c == "error"), None)
        timings = [c for c in rows.column_names if c.startswith(SECONDS)]
        try:
            for i in range(rows.num_rows):
                if state.error is not None or controls[i] is not None:
                    continue
                data = _unpack_detached(rows[BATCH][i])
                state.work = state.work or self._work(part)
                for name in timings:
                    state.outcome.tally(name[len(SECONDS):], rows[name][i].as_py(), data.num_rows)
                t = time.perf_counter()
                state.work.add(data)
                state.outcome.tally("write", time.perf_counter() - t, data.num_rows)
            if state.received < state.expected:
                return None
            if state.error is None:
                return (state.work or self._work(part)).finish(state.outcome, state.record)
        except Exception as exc:  # noqa: BLE001 - writing this part failed; the others go on
            state.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            if state.received < state.expected:
                return None
        if state.work:
            state.work.abort()
        message, _, trace = state.error.partition("\n")
        return failed_part(self.run, part, message, trace)

    def _work(self, part: int) -> PartWork:
        return PartWork(self.run, self.pipeline, part, base_samples(self.run, part, read_download_result(self.run, part)))

