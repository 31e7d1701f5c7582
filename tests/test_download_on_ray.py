"""`laionface download --address`: parts spread over a real 3-node Ray cluster on this machine,
one task per part, with the same per-row outcome as a local download."""

from __future__ import annotations

import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from laionface.runfolder import RunFolder
from laionface.stages.download import download_marker
from tests.test_runner import write_candidates

ray_cluster_utils = pytest.importorskip("ray.cluster_utils")


@pytest.fixture(scope="module")
def cluster():
    c = ray_cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 150 * 1024**2, "include_dashboard": False})
    for _ in range(2):
        c.add_node(num_cpus=1, object_store_memory=150 * 1024**2)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def test_parts_are_spread_over_nodes_and_match_a_local_download(tmp_path, fault_server, cluster):
    urls = [fault_server.url_for("face_0.jpg"), fault_server.url_for("face_2.jpg"), fault_server.url + "/fault/404", "ftp://x/y.jpg"]
    ray_run, local_run = RunFolder(tmp_path / "ray"), RunFolder(tmp_path / "local")
    for run in (ray_run, local_run):
        for part in range(4):
            write_candidates(run, part, urls)
    cmd = [sys.executable, "-m", "laionface.cli", "download"]
    proc = subprocess.run(cmd + [str(ray_run.root), "--address", cluster.address, "--allow-private-addresses"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nodes = set(re.findall(r"downloaded on (\S+)", proc.stdout))
    assert len(nodes) >= 2, proc.stdout
    proc = subprocess.run(cmd + [str(local_run.root), "--allow-private-addresses"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for part in range(4):
        a, b = (pq.read_table(download_marker(r, part)) for r in (ray_run, local_run))
        assert a.drop_columns(["raw_shard"]).equals(b.drop_columns(["raw_shard"]))
        assert a["status"].to_pylist() == ["kept", "kept", "download_failed:http_404", "refused_address"]
