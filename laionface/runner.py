"""The local runner: takes each part from candidates to manifests and shards, in-process.

Per part: download (img2dataset) -> stream the raw shards in batches -> batch stages
(detect, crop, score) -> `PartWork`: LAION-FACE and LAION-FACE-cropped shard writers, the
part's CLIP embeddings, samples and faces manifests -> `_done` marker, written last. A re-run
skips done parts and redoes the rest; a failing part is recorded in `_failed/` and the others
still run. The Ray Data runner feeds the same `PartWork` the same batches in the same order.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import tarfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .domains import domains
from .errors import ConfigError
from .pipeline import Pipeline
from .runfolder import RunFolder, write_parquet
from .sample2detect import ImportedDetections
from .schema import FACES, PIPELINE_VERSION, SAMPLES
from .shards import ShardWriter
from .stages.crop import CropStage, face_key, with_crop_shards
from .stages.detect import DetectStage, faces_table
from .stages.download import download_part
from .stages.score import EmbeddingsWriter, ScoreStage, crop_scores_for_faces
from .status import KEPT

# Rows per batch through the batch stages: bounds memory by batch, not part. The variable is for
# tests, so small parts span several batches; both runners read it in the driver.
IMAGE_BATCH = int(os.environ.get("LAIONFACE_IMAGE_BATCH", "256"))
BATCH_STAGES = ("detect", "crop", "score")  # in the order they run, after download


@dataclass
class PartOutcome:
    part: int
    state: str  # done | skipped | failed
    error: str | None = None
    status_counts: dict[str, int] = field(default_factory=dict)
    faces: int = 0
    crops: int = 0
    shards: int = 0  # LAION-FACE and LAION-FACE-cropped tars written
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_rows: dict[str, int] = field(default_factory=dict)  # rows each stage was given

    def tally(self, stage: str, seconds: float, rows: int) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
        self.stage_rows[stage] = self.stage_rows.get(stage, 0) + rows


def base_samples(run: RunFolder, part: int, result: pa.Table) -> pa.Table:
    """Candidates joined with the download outcome (same keys, same order)."""
    cand = run.read_candidates(part)
    if cand["key"].to_pylist() != result["key"].to_pylist():
        raise RuntimeError(f"part {part}: download result does not line up with candidates; delete {run.raw(part)} and re-run")
    table = cand.drop_columns(["status", "error"])
    for name in result.column_names[1:]:
        table = table.append_column(name, result[name])
    return table


OFFSET, SIZE = "__offset", "__size"  # an image's place in its raw tar (-1, 0: img2dataset wrote none)


def indexed_rows(run: RunFolder, table: pa.Table) -> pa.Table:
    """The alive rows in the order they are processed (raw shards sorted, manifest order within
    one), each with its image member's offset and size: every tar's headers are read once, here,
    so a batch's images can be read anywhere by seeking. Both runners' work list."""
    alive = table.filter(pc.equal(table["status"], KEPT))
    indexed = []
    for shard in sorted(set(alive["raw_shard"].to_pylist())):
        rows = alive.filter(pc.equal(alive["raw_shard"], shard))
        with tarfile.open(run.root / shard) as tar:
            members = jpg_members(tar)
        found = [members.get(k) for k in rows["raw_key"].to_pylist()]
        rows = rows.append_column(OFFSET, pa.array([m.offset_data if m else -1 for m in found], pa.int64()))
        indexed.append(rows.append_column(SIZE, pa.array([m.size if m else 0 for m in found], pa.int64())))
    if not indexed:
        return alive.append_column(OFFSET, pa.array([], pa.int64())).append_column(SIZE, pa.array([], pa.int64()))
    return pa.concat_tables(indexed)


def read_images(run_root, rows: pa.Table) -> pa.Table:
    """`indexed_rows` rows -> the same rows with an `image` column (None where img2dataset wrote
    none) in place of the offsets."""
    images, current, f = [], None, None
    try:
        for shard, offset, size in zip(rows["raw_shard"].to_pylist(), rows[OFFSET].to_pylist(), rows[SIZE].to_pylist()):
            if offset < 0:
                images.append(None)
                continue
            if shard != current:
                if f is not None:
                    f.close()
                current, f = shard, open(f"{run_root}/{shard}", "rb")  # noqa: SIM115 - one open file per shard run
            f.seek(offset)
            images.append(f.read(size))
    finally:
        if f is not None:
            f.close()
    return rows.drop_columns([OFFSET, SIZE]).append_column("image", pa.array(images, pa.binary()))


def jpg_members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """img2dataset's `{key}.jpg` members by key; reads headers only (tarfile seeks over the data)."""
    members = {}
    for member in tar:
        stem, _, ext = member.name.partition(".")
        if ext == "jpg":
            members[stem] = member
    return members


def image_batches(run: RunFolder, table: pa.Table, size: int) -> Iterator[pa.Table]:
    """Batches of `size` alive rows with an `image` column, in `indexed_rows` order; only one
    batch's images are in memory at a time."""
    rows = indexed_rows(run, table)
    for start in range(0, rows.num_rows, size):
        yield read_images(run.root, rows.slice(start, size))


def _laion_face_files(row: dict, faces: list[dict]) -> dict[str, bytes]:
    meta = {k: row[k] for k in ("key", "SAMPLE_ID", "URL", "LICENSE", "NSFW", "similarity", "sha256", "original_width", "original_height")}
    meta["faces"] = [{k: f[k] for k in ("face_index", "box", "landmarks", "score", "kept")} for f in faces]
    return {"jpg": row["image"], "txt": (row["TEXT"] or "").encode(), "json": json.dumps(meta, sort_keys=True).encode()}


def _laion_face_cropped_files(row: dict, face: dict, crop: dict, config) -> dict[str, bytes]:
    """One LAION-FACE-cropped sample: the crop, the caption, and where it came from."""
    m = crop["transform"]
    meta = {k: row[k] for k in ("key", "SAMPLE_ID", "URL")}
    meta.update(source_shard=row["shard"], face_key=face_key(row["key"], face["face_index"]), face_index=face["face_index"],
                score=face["score"], box=face["box"], landmarks=face["landmarks"], box_crop=crop["box_crop"],
                landmarks_crop=crop["landmarks_crop"], transform=[m[0:3], m[3:6]], recipe=config.recipe, size=config.size)
    return {"jpg": crop["jpg"], "txt": (row["TEXT"] or "").encode(), "json": json.dumps(meta, sort_keys=True).encode()}


class PartWork:
    """One part's outputs, fed its batches after the batch stages, in `indexed_rows` order.

    `add()` writes the kept rows into the shards and keeps the (image-free) rows and faces;
    `finish()` closes the shards, writes embeddings, faces and samples manifests, then `_done`.
    Earlier tries' shards and embeddings of the part are removed first: a redo with other
    settings (say a higher CLIP threshold) must not leave a stale tar behind.
    """

    def __init__(self, run: RunFolder, pipeline: Pipeline, part: int, table: pa.Table):
        self.run, self.pipeline, self.part, self.table = run, pipeline, part, table
        p = pipeline
        self.detects, self.crop_config = p.runs("detect"), p.get("crop")
        for folder in (run.laion_face(part), run.laion_face_cropped(part)):
            shutil.rmtree(folder, ignore_errors=True)
        self.full = ShardWriter(run.laion_face(part), run.root, p.get("laion_face").max_count, p.get("laion_face").max_bytes)
        self.cropped = ShardWriter(run.laion_face_cropped(part), run.root, p.get("laion_face_cropped").max_count,
                                   p.get("laion_face_cropped").max_bytes)
        self.embeddings = EmbeddingsWriter(run.embeddings, part)  # no rows: the part's stale files go
        self.processed: list[pa.Table] = []  # each batch's rows after the stages, image-free, SAMPLES columns
        self.face_tables: list[pa.Table] = []
        self.crop_shards: dict[str, str] = {}  # face_key -> RUN-relative cropped tar

    def add(self, batch: pa.Table) -> None:
        batch = self.embeddings.add(batch)
        if self.detects:
            self.face_tables.append(crop_scores_for_faces(faces_table(batch, PIPELINE_VERSION, self.pipeline.hash), batch))
        shards = batch["shard"].to_pylist() if "shard" in batch.column_names else [None] * batch.num_rows
        # Images stay in their Arrow buffer (one 90 kB copy at a time into the tar): as Python
        # bytes a batch is ~25 MB of short-lived objects that fragment the heap of a long run.
        images = batch["image"].combine_chunks() if "image" in batch.column_names else None
        rows = batch.drop_columns(["image"]).to_pylist() if images is not None else batch.to_pylist()
        for i, row in enumerate(rows):
            if row["status"] == KEPT and (not self.detects or row["kept_face_count"]):
                faces = row.get("faces") or []
                row["image"] = images[i].as_buffer() if images is not None and images[i].is_valid else None
                shards[i] = row["shard"] = self.full.write(row["key"], _laion_face_files(row, faces))
                by_index = {f["face_index"]: f for f in faces}
                for c in row.get("crops") or []:
                    fk = face_key(row["key"], c["face_index"])
                    files = _laion_face_cropped_files(row, by_index[c["face_index"]], c, self.crop_config)
                    self.crop_shards[fk] = self.cropped.write(fk, files)
        # Only the manifest's columns are kept, as Arrow: a part's rows cost bytes, not Python dicts.
        batch = batch.select([n for n in batch.column_names if n in SAMPLES.names and n != "shard"])
        self.processed.append(batch.append_column("shard", pa.array(shards, pa.string())))
        # The batch's Python rows and crop bytes are freed now; glibc keeps their pages, so the Ray
        # driver crept 233 -> 267 MB over one 5,000-row part (206 -> 217 MB with this).
        _release_freed_memory()

    def abort(self) -> None:
        for writer in (self.full, self.cropped):
            writer.__exit__(RuntimeError, None, None)

    def finish(self, outcome: PartOutcome, record: dict) -> PartOutcome:
        run, part = self.run, self.part
        shards = self.full.close() + self.cropped.close()
        self.embeddings.close()
        faces = with_crop_shards(pa.concat_tables(self.face_tables) if self.face_tables else FACES.empty_table(), self.crop_shards)
        samples = self._samples_manifest()
        write_parquet(faces, run.faces(part), FACES)
        write_parquet(samples, run.samples(part), SAMPLES)
        status = samples["status"].to_numpy(zero_copy_only=False)
        outcome.status_counts = dict(sorted(zip(*[x.tolist() for x in np.unique(status, return_counts=True)]))) if samples.num_rows else {}
        outcome.faces, outcome.crops, outcome.shards = faces.num_rows, len(self.crop_shards), len(shards)
        run.mark_done(part, {**record, **_outcome_record(outcome), "pipeline_version": PIPELINE_VERSION,
                             "config_hash": self.pipeline.hash, "finished_at": _now()})
        _release_freed_memory()
        return outcome

    def _samples_manifest(self) -> pa.Table:
        """Every candidate row in input order: the processed rows' values where a batch stage saw
        the row, the download's otherwise (rows dropped before detection)."""
        base, n = self.table, self.table.num_rows
        done = pa.concat_tables(self.processed, promote_options="default") if self.processed else None
        at = pc.index_in(base["key"], value_set=done["key"]) if done is not None else pa.nulls(n, pa.int32())
        seen = pc.is_valid(at)
        fixed = {"pipeline_version": PIPELINE_VERSION, "config_hash": self.pipeline.hash}
        columns = []
        for f in SAMPLES:
            if f.name in fixed:
                columns.append(pa.array([fixed[f.name]] * n, f.type))
                continue
            column = base[f.name].cast(f.type) if f.name in base.column_names else pa.nulls(n, f.type)
            if done is not None and f.name in done.column_names:
                column = pc.if_else(seen, done[f.name].cast(f.type).take(at), column)
            columns.append(column)
        samples = pa.Table.from_arrays(columns, schema=SAMPLES)
        i = SAMPLES.get_field_index("domain")
        return samples.set_column(i, SAMPLES.field(i), domains(samples["URL"]))


def _release_freed_memory() -> None:
    """Hand the heap pages freed by a finished part back to the OS: glibc keeps them, so a
    long run's memory would otherwise creep with the fragments of every part before."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        pass


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _outcome_record(o: PartOutcome) -> dict:
    return {"part": o.part, "state": o.state, "error": o.error, "rows": sum(o.status_counts.values()),
            "kept": o.status_counts.get(KEPT, 0), "faces": o.faces, "crops": o.crops, "shards": o.shards,
            "status_counts": o.status_counts, "stage_seconds": {k: round(v, 3) for k, v in o.stage_seconds.items()},
            "stage_rows": o.stage_rows}


def failed_part(run: RunFolder, part: int, error: str, trace: str) -> PartOutcome:
    """Record a part's failure in `_failed/` (a re-run redoes it); its outcome."""
    run.mark_failed(part, {"part": part, "state": "failed", "error": error, "traceback": trace})
    return PartOutcome(part, "failed", error=error)


def parts_to_redo(run: RunFolder, pipeline: Pipeline, parts: list[int]) -> list[int]:
    """Done parts not made by `pipeline` (e.g. detected before crop or score was turned on):
    `laionface crop` and `laionface score` delete their `_done` marker so the runner redoes
    them; the download stays cached."""
    redo = []
    for part in parts:
        if run.is_done(part) and json.loads(run.done_marker(part).read_text()).get("config_hash") != pipeline.hash:
            redo.append(part)
    return redo


class LocalRunner:
    def __init__(self, run: RunFolder, pipeline: Pipeline, progress: bool = True, worker: str | None = None):
        self.run = run
        self.pipeline = pipeline
        self.progress = progress
        self.worker = worker or platform.node()  # recorded in the parts table, never in samples
        self._detect: DetectStage | None = None
        self._score: ScoreStage | None = None
        if pipeline.runs("crop") and not pipeline.runs("detect"):
            raise ConfigError("the crop stage needs detect: add a detect section to the pipeline")

    def detect_stage(self, part: int | None = None):
        """Published detections for this part when imported (import-detections), else the model."""
        imported = self.run.imported_detections(part) if part is not None else None
        if imported is not None and imported.exists():
            return ImportedDetections(self.pipeline.get("detect"), imported)
        if self._detect is None:  # one model per worker, loaded once
            self._detect = DetectStage(self.pipeline.get("detect"))
            self._detect.setup()
        return self._detect

    def score_stage(self) -> ScoreStage:
        if self._score is None:  # one CLIP model per worker, loaded once
            self._score = ScoreStage(self.pipeline.get("score"))
            self._score.setup()
        return self._score

    def batch_stages(self, part: int) -> list[tuple[str, Callable[[pa.Table], pa.Table]]]:
        p = self.pipeline
        makers = {"detect": lambda: self.detect_stage(part), "crop": lambda: CropStage(p.get("crop")), "score": self.score_stage}
        return [(name, makers[name]()) for name in BATCH_STAGES if p.runs(name)]

    def process_part(self, part: int, retry_failed: bool = False) -> PartOutcome:
        from tqdm import tqdm

        run = self.run
        outcome = PartOutcome(part, "done")
        record = {"host": self.worker, "started_at": _now()}
        t0 = time.perf_counter()
        result = download_part(run, part, self.pipeline.get("download"), retry_failed=retry_failed)
        outcome.tally("download", time.perf_counter() - t0, result.num_rows)
        table = base_samples(run, part, result)
        stages = self.batch_stages(part)
        alive = pc.sum(pc.equal(table["status"], KEPT)).as_py() or 0
        bars = [tqdm(total=alive, desc=f"part {part} {name}", unit="img", leave=False, disable=not self.progress)
                for name, _ in stages]
        work = PartWork(run, self.pipeline, part, table)
        try:
            for batch in image_batches(run, table, IMAGE_BATCH):
                for (name, stage), bar in zip(stages, bars):
                    t, n = time.perf_counter(), batch.num_rows
                    batch = stage(batch)
                    outcome.tally(name, time.perf_counter() - t, n)
                    bar.update(n)
                t = time.perf_counter()
                work.add(batch)
                outcome.tally("write", time.perf_counter() - t, batch.num_rows)
        except BaseException:
            work.abort()
            raise
        finally:
            for bar in bars:
                bar.close()
        return work.finish(outcome, record)

    def run_parts(self, parts: list[int] | None = None, retry_failed: bool = False) -> list[PartOutcome]:
        from tqdm import tqdm

        todo = parts if parts is not None else self.run.candidate_parts()
        outcomes = []
        for part in tqdm(todo, desc="parts", unit="part", disable=not self.progress):
            if self.run.is_done(part) and not retry_failed:
                outcomes.append(PartOutcome(part, "skipped"))
                continue
            try:
                outcomes.append(self.process_part(part, retry_failed=retry_failed))
            except Exception as exc:  # noqa: BLE001 - one part failing must not stop the others
                outcomes.append(failed_part(self.run, part, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        return outcomes
