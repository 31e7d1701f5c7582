"""export-detections -> import-detections through the CLI: the published-format round trip
rebuilds the same faces manifest and statuses without running the detector."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pyarrow.parquet as pq

from laionface.runfolder import RunFolder


def laionface(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "laionface.cli", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_exported_detections_import_into_a_fresh_copy_of_the_run(tmp_path):
    original = tmp_path / "run"
    laionface("demo", "--out", str(original), "--rows", "120")
    laionface("export-detections", str(original), "--format", "sample2detect", "--out", str(tmp_path / "det"))
    assert sorted(p.name for p in (tmp_path / "det").iterdir()) == ["sample2detect_0.pth", "sample2detect_1.pth"]

    copy = tmp_path / "copy"
    shutil.copytree(original, copy, ignore=shutil.ignore_patterns("manifests", "_done", "laion_face*"))
    out = laionface("import-detections", str(copy), str(tmp_path / "det"))
    assert "sample2detect_0.pth" in out.stdout

    a, b = RunFolder(original), RunFolder(copy)
    assert (copy / "imported_detections" / "sample2detect_0.pth").exists()
    cols = ["face_key", "box", "landmarks", "score", "kept"]
    for part in a.done_parts():
        assert b.is_done(part)
        assert pq.read_table(b.faces(part), columns=cols).equals(pq.read_table(a.faces(part), columns=cols))
        for col in ("key", "status", "kept_face_count", "shard"):
            assert pq.read_table(b.samples(part))[col].to_pylist() == pq.read_table(a.samples(part))[col].to_pylist(), col
