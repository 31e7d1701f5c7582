"""The local runner: takes each part from candidates to manifests and shards, in-process.

Per part: download (img2dataset) -> stream the raw shards in batches -> batch stages
(detect, crop, score) -> LAION-FACE and LAION-FACE-cropped shard writers and the part's CLIP
embeddings -> samples and faces manifests -> `_done` marker, written last. A re-run skips done parts and redoes the rest; a failing part is recorded in
`_failed/` and the others still run.
"""

from __future__ import annotations

import json
import platform
import shutil
import tarfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator

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

IMAGE_BATCH = 256  # rows per batch through the batch stages: bounds memory by batch, not part


@dataclass
class PartOutcome:
    part: int
    state: str  # done | skipped | failed
    error: str | None = None
    status_counts: dict[str, int] = field(default_factory=dict)
    faces: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)


def _base_samples(run: RunFolder, part: int, result: pa.Table) -> pa.Table:
    """Candidates joined with the download outcome (same keys, same order)."""
    cand = run.read_candidates(part)
    if cand["key"].to_pylist() != result["key"].to_pylist():
        raise RuntimeError(f"part {part}: download result does not line up with candidates; delete {run.raw(part)} and re-run")
    table = cand.drop_columns(["status", "error"])
    for name in result.column_names[1:]:
        table = table.append_column(name, result[name])
    return table


def _image_batches(run: RunFolder, table: pa.Table, size: int) -> Iterator[pa.Table]:
    """Yield batches of the alive rows with an `image` column read from their raw tars."""
    alive = table.filter(pc.equal(table["status"], KEPT))
    for shard in sorted(set(alive["raw_shard"].to_pylist())):
        rows = alive.filter(pc.equal(alive["raw_shard"], shard))
        wanted = dict(zip(rows["raw_key"].to_pylist(), range(rows.num_rows)))
        images: list[bytes | None] = [None] * rows.num_rows
        with tarfile.open(run.root / shard) as tar:
            for member in tar:
                stem, _, ext = member.name.partition(".")
                if ext == "jpg" and stem in wanted:
                    images[wanted[stem]] = tar.extractfile(member).read()
        rows = rows.append_column("image", pa.array(images, pa.binary()))
        for start in range(0, rows.num_rows, size):
            yield rows.slice(start, size)


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

    def process_part(self, part: int, retry_failed: bool = False) -> PartOutcome:
        run, p = self.run, self.pipeline
        seconds: dict[str, float] = {}
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        result = download_part(run, part, p.get("download"), retry_failed=retry_failed)
        seconds["download"] = time.perf_counter() - t0
        table = _base_samples(run, part, result)

        done_rows: dict[str, dict] = {}  # key -> updated row (after batch stages)
        face_tables: list[pa.Table] = []
        writer = ShardWriter(run.laion_face(part), run.root, p.get("laion_face").max_count, p.get("laion_face").max_bytes)
        detect = self.detect_stage(part) if p.runs("detect") else None
        if p.runs("crop") and detect is None:
            raise ConfigError("the crop stage needs detect: add a detect section to the pipeline")
        crop = CropStage(p.get("crop")) if p.runs("crop") else None
        score = self.score_stage() if p.runs("score") else None
        embeddings = EmbeddingsWriter(run.embeddings, part)  # no rows: stale files of the part go
        shutil.rmtree(run.laion_face_cropped(part), ignore_errors=True)  # no stale crops from an earlier try
        cropped = ShardWriter(run.laion_face_cropped(part), run.root, p.get("laion_face_cropped").max_count, p.get("laion_face_cropped").max_bytes)
        crop_shards: dict[str, str] = {}  # face_key -> RUN-relative cropped tar
        with writer, cropped:
            for batch in _image_batches(run, table, IMAGE_BATCH):
                if detect is not None:
                    t = time.perf_counter()
                    batch = detect(batch)
                    seconds["detect"] = seconds.get("detect", 0.0) + time.perf_counter() - t
                if crop is not None:
                    t = time.perf_counter()
                    batch = crop(batch)
                    seconds["crop"] = seconds.get("crop", 0.0) + time.perf_counter() - t
                if score is not None:
                    t = time.perf_counter()
                    batch = embeddings.add(score(batch))
                    seconds["score"] = seconds.get("score", 0.0) + time.perf_counter() - t
                if detect is not None:
                    face_tables.append(crop_scores_for_faces(faces_table(batch, PIPELINE_VERSION, p.hash), batch))
                t = time.perf_counter()
                for row in batch.to_pylist():
                    faces = row.pop("faces", None) or []
                    crops = row.pop("crops", None) or []
                    row.pop("crop_clip_scores", None)
                    if row["status"] == KEPT and (detect is None or row["kept_face_count"]):
                        row["shard"] = writer.write(row["key"], _laion_face_files(row, faces))
                        by_index = {f["face_index"]: f for f in faces}
                        for c in crops:
                            fk = face_key(row["key"], c["face_index"])
                            files = _laion_face_cropped_files(row, by_index[c["face_index"]], c, crop.config)
                            crop_shards[fk] = cropped.write(fk, files)
                    row.pop("image")
                    done_rows[row["key"]] = row
                seconds["write"] = seconds.get("write", 0.0) + time.perf_counter() - t

        embeddings.close()
        samples = self._samples_manifest(table, done_rows)
        faces = with_crop_shards(pa.concat_tables(face_tables) if face_tables else FACES.empty_table(), crop_shards)
        write_parquet(faces, run.faces(part), FACES)
        write_parquet(samples, run.samples(part), SAMPLES)
        counts = dict(sorted(zip(*[x.tolist() for x in np.unique(samples["status"].to_numpy(zero_copy_only=False), return_counts=True)]))) if samples.num_rows else {}
        outcome = PartOutcome(part, "done", status_counts=counts, faces=faces.num_rows, stage_seconds=seconds)
        run.mark_done(part, self._part_record(part, outcome, started))
        return outcome

    def _samples_manifest(self, table: pa.Table, done_rows: dict[str, dict]) -> pa.Table:
        fixed = {"pipeline_version": PIPELINE_VERSION, "config_hash": self.pipeline.hash}
        rows = []
        for r in table.to_pylist():
            r = done_rows.get(r["key"], r)
            rows.append({name: fixed.get(name, r.get(name)) for name in SAMPLES.names})
        samples = pa.Table.from_pylist(rows, schema=SAMPLES)
        i = SAMPLES.get_field_index("domain")
        return samples.set_column(i, SAMPLES.field(i), domains(samples["URL"]))

    def _part_record(self, part: int, outcome: PartOutcome, started: str) -> dict:
        return {
            "part": part, "state": outcome.state, "error": outcome.error,
            "rows": sum(outcome.status_counts.values()), "kept": outcome.status_counts.get(KEPT, 0),
            "faces": outcome.faces, "status_counts": outcome.status_counts,
            "host": self.worker, "started_at": started,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "stage_seconds": {k: round(v, 3) for k, v in outcome.stage_seconds.items()},
            "pipeline_version": PIPELINE_VERSION, "config_hash": self.pipeline.hash,
        }

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
            except Exception as exc:  # one part failing must not stop the others
                error = f"{type(exc).__name__}: {exc}"
                self.run.mark_failed(part, {"part": part, "state": "failed", "error": error, "traceback": traceback.format_exc()})
                outcomes.append(PartOutcome(part, "failed", error=error))
        return outcomes
