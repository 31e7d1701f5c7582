"""The demo end to end (real HTTP on 127.0.0.1, real img2dataset, real RetinaFace), then the
contracts it must satisfy: the funnel adds up, the layout is DESIGN.md's, every manifest
validates against the schema module, a re-run of done parts changes nothing, shards open."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from laionface.runfolder import RunFolder
from laionface.schema import CANDIDATES, FACES, SAMPLES, validate
from laionface.status import is_valid


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    proc = subprocess.run([sys.executable, "-m", "laionface.cli", "demo", "--out", str(out), "--rows", "200"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_demo_funnel_adds_up_to_the_input(demo_run):
    out, stdout = demo_run
    assert "funnel: 200 input rows" in stdout
    total = [line for line in stdout.splitlines() if line.startswith("total")]
    assert total and total[0].split()[1] == "200"
    assert "kept" in stdout and "download_failed:http_404" in stdout and "no_face" in stdout


def test_demo_layout_matches_design(demo_run):
    out, _ = demo_run
    run = RunFolder(out)
    parts = run.candidate_parts()
    assert parts == [0, 1]
    for part in parts:
        for path in (run.candidates(part), run.samples(part), run.faces(part), run.done_marker(part)):
            assert path.exists(), path
        assert (run.raw(part) / "00000.tar").exists()
        assert (run.laion_face(part) / "00000.tar").exists()
    assert run.stats.exists() and run.config.exists()


def test_every_manifest_validates_and_counts_match(demo_run):
    out, _ = demo_run
    run = RunFolder(out)
    for part in run.candidate_parts():
        cand, samples, faces = (pq.read_table(p) for p in (run.candidates(part), run.samples(part), run.faces(part)))
        validate(cand, CANDIDATES, "candidates")
        validate(samples, SAMPLES, "samples")
        validate(faces, FACES, "faces")
        assert samples["key"].to_pylist() == cand["key"].to_pylist()
        assert all(is_valid(s) for s in samples["status"].to_pylist())
        kept = samples.filter(pc.equal(samples["status"], "kept"))
        assert all(kept["kept_face_count"].to_pylist()) and all(kept["shard"].to_pylist())
        record = json.loads(run.done_marker(part).read_text())
        assert record["rows"] == samples.num_rows and record["config_hash"] == samples["config_hash"][0].as_py()


def test_laion_face_shards_hold_exactly_the_kept_samples(demo_run):
    out, _ = demo_run
    run = RunFolder(out)
    for part in run.candidate_parts():
        samples = pq.read_table(run.samples(part))
        kept = set(samples.filter(pc.equal(samples["status"], "kept"))["key"].to_pylist())
        keys = set()
        for tar_path in sorted(run.laion_face(part).glob("*.tar")):
            with tarfile.open(tar_path) as tar:
                names = tar.getnames()
                assert all(m.mtime == 0 for m in tar.getmembers())
            for name in names:
                keys.add(name.split(".", 1)[0])
            meta = [n for n in names if n.endswith(".json")]
            assert len(meta) * 3 == len(names)  # jpg, txt, json per sample
        assert keys == kept


def test_rerun_skips_done_parts_and_leaves_manifests_byte_identical(demo_run):
    out, _ = demo_run
    run = RunFolder(out)
    before = {p: run.samples(p).read_bytes() for p in run.candidate_parts()}
    proc = subprocess.run([sys.executable, "-m", "laionface.cli", "detect", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p: run.samples(p).read_bytes() for p in run.candidate_parts()} == before
