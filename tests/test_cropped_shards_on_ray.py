"""LAION-FACE-cropped shards open with `ray.data.read_webdataset` (own module: ray.init costs ~4 s).

The shards are written in-process by the runner's own helpers from real detections on composed
faces, so no download is needed here; the demo test reads the demo's shards with webdataset.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pytest
from PIL import Image

from laionface.runner import _laion_face_cropped_files
from laionface.shards import ShardWriter
from laionface.stages.crop import CropConfig, CropStage, face_key
from laionface.stages.detect import DetectConfig, DetectStage
from laionface.testing.faces import encode_jpeg


@pytest.fixture(scope="module")
def cropped_shards(tmp_path_factory, composed_faces):
    root = tmp_path_factory.mktemp("ray_crops")
    n = len(composed_faces)
    table = pa.table({"key": [f"00000_{i}" for i in range(n)], "SAMPLE_ID": pa.array(range(n), pa.int64()),
                      "URL": [f"http://example.com/{i}.jpg" for i in range(n)], "TEXT": ["a face"] * n,
                      "status": ["kept"] * n, "error": pa.nulls(n, pa.string()),
                      "image": pa.array([encode_jpeg(c.image) for c in composed_faces], pa.binary())})
    config = CropConfig(size=128)
    table = CropStage(config)(DetectStage(DetectConfig())(table))
    keys = []
    with ShardWriter(root / "laion_face_cropped" / "part-00000", root, max_count=3) as writer:
        for row in table.to_pylist():
            row["shard"] = "laion_face/part-00000/00000.tar"
            for c in row["crops"] or []:
                face = next(f for f in row["faces"] if f["face_index"] == c["face_index"])
                keys.append(face_key(row["key"], c["face_index"]))
                writer.write(keys[-1], _laion_face_cropped_files(row, face, c, config))
    assert len(keys) >= 4
    return sorted((root / "laion_face_cropped").glob("part-*/*.tar")), keys


def test_ray_data_reads_the_cropped_shards(cropped_shards):
    ray = pytest.importorskip("ray")
    tars, keys = cropped_shards
    # address="local": start a private instance, never attach to a Ray another process started here
    ray.init(address="local", num_cpus=1, include_dashboard=False, object_store_memory=150 * 1024**2, log_to_driver=False)
    try:
        rows = ray.data.read_webdataset([str(t) for t in tars], decoder=None).take_all()
    finally:
        ray.shutdown()
    assert sorted(r["__key__"] for r in rows) == sorted(keys)
    for r in rows:
        assert {"jpg", "txt", "json"} <= set(r)
        meta = json.loads(r["json"])  # decoder=None: the bytes as written
        assert meta["face_key"] == r["__key__"] and meta["SAMPLE_ID"] == int(meta["key"].split("_")[1])
        assert Image.open(io.BytesIO(r["jpg"])).size == (128, 128) and r["txt"] == b"a face"
