"""`laionface crop` on a run detected without crops, then `laionface show` (real subprocesses, real
HTTP on 127.0.0.1): done parts are redone from the cached download and the sheet is drawn."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from PIL import Image

from laionface.pipeline import Pipeline
from laionface.runfolder import RunFolder, write_json
from laionface.runner import LocalRunner
from laionface.stages.download import download_marker
from tests.test_runner import write_candidates


def laionface(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "laionface.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cropped_run(tmp_path_factory, fault_server):
    run = RunFolder(tmp_path_factory.mktemp("crop") / "run")
    urls = [fault_server.url_for(f"face_{i}.jpg") + "?k=crop" for i in range(4)] + [fault_server.url + "/fault/404"]
    write_candidates(run, 0, urls)
    pipeline = Pipeline.from_dict({"stages": {"download": {"timeout": 5}, "detect": {}}})
    write_json({"pipeline": pipeline.to_dict(), "config_hash": pipeline.hash}, run.config)
    # detected before crop was on (in-process: one subprocess less)
    LocalRunner(run, pipeline.with_settings("download", allow_private_addresses=True), progress=False).run_parts()
    assert run.is_done(0) and not run.laion_face_cropped(0).exists()
    downloaded = download_marker(run, 0).stat().st_mtime_ns
    hits = sum(fault_server.hits.values())
    crop = laionface("crop", str(run.root), "--size", "224")
    assert crop.returncode == 0, crop.stderr[-2000:]
    assert download_marker(run, 0).stat().st_mtime_ns == downloaded and sum(fault_server.hits.values()) == hits
    return run


def test_crop_redoes_a_done_part_from_the_cached_download(cropped_run):
    run = cropped_run
    faces = pq.read_table(run.faces(0)).to_pylist()
    kept = [f for f in faces if f["kept"]]
    assert len(kept) >= 3 and all(f["crop_shard"] == "laion_face_cropped/part-00000/00000.tar" for f in kept)
    assert json.loads(run.config.read_text())["pipeline"]["stages"]["crop"]["size"] == 224
    assert json.loads(run.done_marker(0).read_text())["config_hash"] == faces[0]["config_hash"]
    again = laionface("crop", str(run.root))  # same settings: the done part is skipped
    assert again.returncode == 0 and pq.read_table(run.faces(0)).to_pylist() == faces


def test_show_draws_crops_and_source_images(cropped_run, tmp_path):
    out = tmp_path / "sheet.png"
    proc = laionface("show", str(cropped_run.root), "--n", "3", "--full", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 crops, 2 full images" in proc.stdout
    sheet = Image.open(out)
    assert sheet.width >= 8 * 128 and sheet.height > 2 * 128


def test_show_without_crops_says_what_to_run(tmp_path):
    run = RunFolder(tmp_path / "run")
    (run.root / "candidates").mkdir(parents=True)
    proc = laionface("show", str(run.root))
    assert proc.returncode == 2 and "laionface crop" in proc.stderr


def test_crop_and_show_help_show_examples_and_how_done_parts_are_redone(capsys):
    from laionface.cli import build_parser

    for name in ("crop", "show"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([name, "--help"])
        text = capsys.readouterr().out
        assert f"example:\n  laionface {name}" in text
        if name == "crop":
            assert "cached download" in text and "_done" in text
