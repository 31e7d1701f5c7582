"""Dedup finds exact copies (same bytes, other URL), re-encoded and resized copies, and leaves
distinct faces alone; later copies leave the shards; a second pass finds nothing new."""

from __future__ import annotations

import subprocess
import sys
import tarfile

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from laionface.audit.dedup import near_duplicates
from laionface.pipeline import Pipeline
from laionface.runfolder import RunFolder
from laionface.runner import LocalRunner
from laionface.testing.faces import compose, encode_jpeg, face_sources
from tests.test_runner import write_candidates


def test_band_buckets_find_every_pair_within_the_threshold():
    rng = np.random.default_rng(0)
    base = [int(x) for x in rng.integers(0, 2**63, 50)]
    hashes = list(base)
    for i in range(0, 50, 5):  # a copy of every 5th hash with 4 bits flipped
        flips = rng.choice(64, 4, replace=False)
        hashes.append(base[i] ^ sum(1 << int(b) for b in flips))
    found = near_duplicates(hashes, threshold=4)
    brute = {i: min(j for j in range(i) if bin(hashes[i] ^ hashes[j]).count("1") <= 4)
             for i in range(len(hashes)) if any(bin(hashes[i] ^ hashes[j]).count("1") <= 4 for j in range(i))}
    assert found == brute and len(found) == 10


def test_dedup_over_a_run(tmp_path, fault_server):
    root = fault_server.root
    a = compose(face_sources()[0], 120, (480, 400), "coffee").image
    b = compose(face_sources()[2], 150, (520, 420), "brick").image
    files = {
        "dd_a.jpg": encode_jpeg(a, quality=92),
        "dd_b.jpg": encode_jpeg(b, quality=92),
        "dd_a_q60.jpg": encode_jpeg(a, quality=60),  # re-encoded
        "dd_a_small.jpg": encode_jpeg(np.asarray(Image.fromarray(a).resize((336, 280))), quality=85),  # resized
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    urls = [fault_server.url_for(n) for n in ("dd_a.jpg", "dd_b.jpg", "dd_a_q60.jpg", "dd_a_small.jpg")]
    urls.append(fault_server.url_for("dd_a.jpg") + "?copy=1")  # same bytes, other URL
    run = RunFolder(tmp_path / "run")
    write_candidates(run, 0, urls)
    pipeline = Pipeline.from_dict({"stages": {"download": {"allow_private_addresses": True}, "detect": {}}})
    LocalRunner(run, pipeline, progress=False).run_parts()
    assert pq.read_table(run.samples(0))["status"].to_pylist() == ["kept"] * 5

    cmd = [sys.executable, "-m", "laionface.cli", "dedup", str(run.root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "1 exact and 2 near" in proc.stdout
    s = pq.read_table(run.samples(0))
    assert s["status"].to_pylist() == ["kept", "kept", "duplicate", "duplicate", "duplicate"]
    assert s["duplicate_of"].to_pylist() == [None, None, "00000_0", "00000_0", "00000_0"]
    with tarfile.open(run.root / s["shard"][0].as_py()) as tar:
        assert {n.split(".")[0] for n in tar.getnames()} == {"00000_0", "00000_1"}

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert "0 exact and 0 near" in again.stdout
