"""Every table laionface writes, in one place. Documented in manifests/README.md.

Bump MANIFEST_VERSION when a column is added, removed or changes meaning.
"""

from __future__ import annotations

import pyarrow as pa

from . import __version__
from .errors import InputError
from .status import is_valid

MANIFEST_VERSION = "1.1"  # 1.1: samples.domain; parts.crops, shards, stage_rows
PIPELINE_VERSION = __version__

# Columns of a LAION-400M metadata part, and the types we normalise them to.
LAION_COLUMNS: dict[str, pa.DataType] = {
    "SAMPLE_ID": pa.int64(),
    "URL": pa.string(),
    "TEXT": pa.string(),
    "HEIGHT": pa.int32(),
    "WIDTH": pa.int32(),
    "LICENSE": pa.string(),
    "NSFW": pa.string(),
    "similarity": pa.float32(),
}
# Columns a metadata file must have; the others are filled with nulls when absent.
REQUIRED_LAION_COLUMNS = ("SAMPLE_ID", "URL", "TEXT")

_ROW_ID = [
    pa.field("key", pa.string(), nullable=False),  # deterministic from (part, SAMPLE_ID)
    pa.field("part", pa.int32(), nullable=False),
    pa.field("row", pa.int64(), nullable=False),  # position in the input part
]
_LAION = [pa.field(name, typ) for name, typ in LAION_COLUMNS.items()]
_STATUS = [
    pa.field("status", pa.string(), nullable=False),  # `kept` or first drop reason
    pa.field("error", pa.string()),  # readable detail for a drop
]

CANDIDATES = pa.schema(_ROW_ID + _LAION + _STATUS, metadata={"laionface.table": "candidates"})

SAMPLES = pa.schema(
    _ROW_ID
    + _LAION
    + [
        pa.field("domain", pa.string()),  # URL host, lowercased, no www./port (laionface.domains)
        # download (img2dataset)
        pa.field("raw_shard", pa.string()),  # RUN-relative tar holding the downloaded bytes
        pa.field("raw_key", pa.string()),  # img2dataset's key inside raw_shard
        pa.field("sha256", pa.string()),
        pa.field("original_width", pa.int32()),
        pa.field("original_height", pa.int32()),
        pa.field("width", pa.int32()),  # after download's optional downscale
        pa.field("height", pa.int32()),
        # detect
        pa.field("face_count", pa.int16()),  # detections above min_score
        pa.field("kept_face_count", pa.int16()),  # those passing the keep rules
        pa.field("best_face_score", pa.float32()),
        # score
        pa.field("clip_score", pa.float32()),
        # outputs
        pa.field("shard", pa.string()),  # RUN-relative laion_face tar, when kept
        pa.field("duplicate_of", pa.string()),
    ]
    + _STATUS
    + [
        pa.field("pipeline_version", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
    ],
    metadata={"laionface.table": "samples"},
)

FACES = pa.schema(
    [
        pa.field("face_key", pa.string(), nullable=False),  # {key}_f{face_index}
        pa.field("key", pa.string(), nullable=False),  # the sample's key
        pa.field("part", pa.int32(), nullable=False),
        pa.field("SAMPLE_ID", pa.int64()),
        pa.field("face_index", pa.int16(), nullable=False),  # by descending score
        pa.field("box", pa.list_(pa.float32(), 4), nullable=False),  # x0,y0,x1,y1 in original pixels
        pa.field("landmarks", pa.list_(pa.float32(), 10), nullable=False),  # le,re,nose,ml,mr as x,y pairs
        pa.field("score", pa.float32(), nullable=False),
        pa.field("kept", pa.bool_(), nullable=False),  # passes the keep rules
        pa.field("reject_reason", pa.string()),  # why a face is not kept (face_too_small, max_faces)
        pa.field("crop_shard", pa.string()),
        pa.field("crop_clip_score", pa.float32()),
        pa.field("pipeline_version", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
    ],
    metadata={"laionface.table": "faces"},
)

# One record per finished part: _done/part-NNNNN.json, read as the `parts` table.
PARTS = pa.schema(
    [
        pa.field("part", pa.int32(), nullable=False),
        pa.field("input_file", pa.string()),
        pa.field("state", pa.string(), nullable=False),  # done | failed
        pa.field("error", pa.string()),
        pa.field("rows", pa.int64()),
        pa.field("kept", pa.int64()),
        pa.field("faces", pa.int64()),
        pa.field("crops", pa.int64()),  # LAION-FACE-cropped samples written
        pa.field("shards", pa.int64()),  # LAION-FACE and LAION-FACE-cropped tars written
        pa.field("host", pa.string()),  # timing and host facts live here, never in samples
        pa.field("started_at", pa.string()),
        pa.field("finished_at", pa.string()),
        pa.field("stage_seconds", pa.string()),  # JSON object stage -> seconds
        pa.field("stage_rows", pa.string()),  # JSON object stage -> rows it was given
        pa.field("pipeline_version", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
    ],
    metadata={"laionface.table": "parts"},
)

TABLES = {"candidates": CANDIDATES, "samples": SAMPLES, "faces": FACES, "parts": PARTS}


def sample_key(part: int, sample_id: int | None, row: int, unique: bool = True) -> str:
    """`00000_123456789`: no dots (webdataset splits extensions on the first dot).

    Rows whose SAMPLE_ID is missing or repeated get the input row appended so keys stay unique.
    """
    if sample_id is None or not unique:
        return f"{part:05d}_{'x' if sample_id is None else sample_id}_r{row}"
    return f"{part:05d}_{sample_id}"


def empty_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Add every schema column the table lacks (as nulls) and order columns as the schema says."""
    n = table.num_rows
    arrays = [
        table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type) for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def validate(table: pa.Table, schema: pa.Schema, where: str = "table") -> None:
    """Raise InputError unless `table` has exactly `schema` and every status is in the vocabulary."""
    # names, order and types must match; nullability is checked on the data below
    if [(f.name, f.type) for f in table.schema] != [(f.name, f.type) for f in schema]:
        want, got = set(schema.names), set(table.schema.names)
        raise InputError(
            f"{where}: schema mismatch (missing {sorted(want - got)}, unexpected {sorted(got - want)}, "
            f"types {[(f.name, str(f.type)) for f in table.schema if f.name in want and f.type != schema.field(f.name).type]})"
        )
    for f in schema:
        if not f.nullable and table[f.name].null_count:
            raise InputError(f"{where}: column {f.name} has {table[f.name].null_count} nulls")
    if "status" in schema.names and schema is not PARTS:
        bad = {s for s in table["status"].unique().to_pylist() if not is_valid(s)}
        if bad:
            raise InputError(f"{where}: statuses outside the vocabulary: {sorted(bad)}")
