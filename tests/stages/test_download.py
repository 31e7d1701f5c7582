"""Download stage against real HTTP on 127.0.0.1 (the FaultServer), no mocks.

img2dataset starts its worker processes with the spawn method and needs ~2-3 s per call,
so the fault tests share ONE download_part call (one candidates part holding every fault
URL) and assert per row.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from laionface.runfolder import RunFolder, write_parquet
from laionface.schema import CANDIDATES, empty_columns
from laionface.stages.download import (
    RESULT,
    DownloadConfig,
    classify_failure,
    download_marker,
    download_part,
)
from laionface.status import TRANSIENT_DOWNLOAD_FAILURES, is_valid

TOKEN = uuid.uuid4().hex[:8]  # fresh hit/flaky counters on the session-wide server


def make_run(root, urls: list[str], part: int = 0) -> RunFolder:
    """A run folder whose candidates part holds `urls` (all still `kept`)."""
    run = RunFolder(root)
    n = len(urls)
    t = pa.table({
        "key": [f"{part:05d}_{i}" for i in range(n)],
        "part": pa.array([part] * n, pa.int32()),
        "row": pa.array(range(n), pa.int64()),
        "SAMPLE_ID": pa.array(range(n), pa.int64()),
        "URL": urls,
        "TEXT": ["caption"] * n,
        "status": ["kept"] * n,
    })
    write_parquet(empty_columns(t, CANDIDATES), run.candidates(part), CANDIDATES)
    return run


# name -> (path on the fault server, expected status)
FAULTS_STRICT = {
    "ok_face": ("face_0.jpg", "kept"),
    "ok_face3": ("face_3.jpg", "kept"),
    "http_404": ("fault/404", "download_failed:http_404"),
    "http_500": ("fault/500", "download_failed:http_5xx"),
    "http_429": ("fault/429", "download_failed:http_429"),
    "timeout": ("fault/delay/5/face_1.jpg", "download_failed:timeout"),
    "reset": ("fault/reset", "download_failed:connection"),
    "redirect": ("fault/redirect/face_2.jpg", "kept"),
    "redirect_loop": ("fault/redirect-loop/3", "download_failed:redirect_loop"),
    "noai": ("fault/noai/face_0.jpg", "opted_out"),
    "html": ("fault/html", "download_failed:decode"),
    "wrong_type": ("fault/wrong-type/face_1.jpg", "kept"),
    "empty": ("fault/empty", "download_failed:decode"),
    "cut_body": ("fault/truncated/face_0.jpg", "download_failed:connection"),
    "truncated_jpeg": ("truncated.jpg", None),
    "tiny": ("tiny.jpg", "download_failed:too_small"),
    "huge_area": ("huge_area.jpg", "download_failed:too_large"),
    "bomb": ("bomb.png", None),
    "cmyk": ("cmyk.jpg", None),
    "png16": ("16bit.png", None),
    "rgba": ("rgba.png", None),
    "gif": ("animated.gif", None),
    "wide": ("wide.jpg", "download_failed:aspect_ratio"),
    "exif": ("exif_rotated.jpg", None),
}
STRICT = DownloadConfig(
    timeout=2, min_image_size=10, max_image_area=10_000_000, max_aspect_ratio=5, allow_private_addresses=True
)


@pytest.fixture(scope="module")
def faults(fault_server, tmp_path_factory):
    names = list(FAULTS_STRICT)
    urls = [f"{fault_server.url}/{FAULTS_STRICT[n][0]}?k={TOKEN}-{n}" for n in names]
    run = make_run(tmp_path_factory.mktemp("faults"), urls)
    result = download_part(run, 0, STRICT)
    rows = {n: r for n, r in zip(names, result.to_pylist())}
    return run, result, rows


def test_explore(faults):
    run, result, rows = faults
    for n, r in rows.items():
        print(n, r["status"], repr(r["error"])[:150], r["original_width"], r["original_height"], r["width"], r["height"])
    assert 0
