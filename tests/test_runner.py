"""The local runner: a failing part is recorded and the others finish; a re-run completes it."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from laionface.pipeline import Pipeline
from laionface.runfolder import RunFolder, write_parquet
from laionface.runner import LocalRunner
from laionface.schema import CANDIDATES, empty_columns
from laionface.stages.download import download_marker


def write_candidates(run: RunFolder, part: int, urls: list[str]) -> None:
    n = len(urls)
    t = pa.table({"key": [f"{part:05d}_{i}" for i in range(n)], "part": pa.array([part] * n, pa.int32()),
                  "row": pa.array(range(n), pa.int64()), "SAMPLE_ID": pa.array(range(n), pa.int64()),
                  "URL": urls, "TEXT": ["a person"] * n, "status": ["kept"] * n})
    write_parquet(empty_columns(t, CANDIDATES), run.candidates(part), CANDIDATES)


def test_failing_part_is_recorded_others_finish_and_rerun_completes(tmp_path, fault_server):
    run = RunFolder(tmp_path / "run")
    urls = [fault_server.url_for("face_0.jpg"), fault_server.url_for("face_1.jpg"), fault_server.url + "/fault/404"]
    write_candidates(run, 0, urls)
    write_candidates(run, 1, urls)
    # part 1 looks downloaded, but its result belongs to other rows: processing it must fail
    bogus = pa.table({"key": ["nope"], "status": ["kept"]})
    download_marker(run, 1).parent.mkdir(parents=True)
    pq.write_table(bogus, download_marker(run, 1))
    pipeline = Pipeline.from_dict({"stages": {"download": {"allow_private_addresses": True, "timeout": 5}, "detect": {}}})

    outcomes = LocalRunner(run, pipeline, progress=False).run_parts()
    assert [o.state for o in outcomes] == ["done", "failed"]
    assert "line up" in json.loads(run.failed_marker(1).read_text())["error"]
    assert run.is_done(0) and not run.is_done(1)
    assert pq.read_table(run.samples(0))["status"].to_pylist() == ["kept", "kept", "download_failed:http_404"]

    download_marker(run, 1).unlink()  # half-done now: the re-run redoes it, and skips part 0
    outcomes = LocalRunner(run, pipeline, progress=False).run_parts()
    assert [o.state for o in outcomes] == ["skipped", "done"]
    assert not run.failed_marker(1).exists()
    assert pq.read_table(run.samples(1))["status"].to_pylist() == ["kept", "kept", "download_failed:http_404"]
