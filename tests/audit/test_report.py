"""`laionface report`: the page has every section and ≥ 6 embedded PNGs that decode; stats.json holds
the same funnel as summary.funnel; the CLIP section follows the data; headless Chromium renders it."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from laionface import cli
from laionface.audit.report import SECTIONS, build_report
from laionface.runfolder import RunFolder
from laionface.summary import funnel
from tests.audit import make_run

IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    proc = subprocess.run([sys.executable, "-m", "laionface.cli", "demo", "--out", str(out), "--rows", "120"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cli.main(["report", str(out)]) == 0
    return out


def _images(page: str) -> list[Image.Image]:
    images = []
    for b64 in IMG.findall(page):
        img = Image.open(io.BytesIO(base64.b64decode(b64)))
        img.load()
        images.append(img)
    return images


def test_report_has_every_section_and_decodable_plots(demo_report):
    page = (demo_report / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page, title
    images = _images(page)
    assert len(images) >= 6
    assert all(img.format == "PNG" and img.width > 100 and img.height > 100 for img in images)
    assert "src=\"http" not in page and "<script" not in page  # self-contained
    assert "58b918eb" in page or re.search(r"config hash <code>[0-9a-f]{16}</code>", page)
    stats = json.loads((demo_report / "stats.json").read_text())["report"]
    assert ("not scored" in page) == (not stats["clip_score"]["scored"])
    cropped = any((demo_report / "laion_face_cropped").glob("part-*/*.tar"))  # the demo crops once issue #6 lands
    want = "face crops from LAION-FACE-cropped shards" if cropped else "full images from LAION-FACE shards"
    assert want in page and stats["sample_grid"]["source"] == ("laion_face_cropped" if cropped else "laion_face")


def test_stats_json_has_the_funnel_and_the_report_numbers(demo_report):
    stats = json.loads((demo_report / "stats.json").read_text())
    want = dict(funnel(RunFolder(demo_report)))
    assert stats["funnel"] == want and stats["report"]["funnel"] == want
    rep = stats["report"]
    assert rep["total_rows"] == sum(want.values())
    assert sum(rep["download_errors"].values()) == sum(v for k, v in want.items() if k.startswith("download_failed:"))
    assert sum(rep["faces_per_image"].values()) > 0 and rep["face_size"]["n"] == stats["faces"]
    assert rep["clip_score"]["scored"] or rep["clip_score"]["note"].startswith("not scored")
    assert set(rep["throughput"]) == {"0", "1"} and all(p["rows_per_s"] > 0 for p in rep["throughput"].values())
    assert rep["sample_grid"]["images"] > 0 and "select" in stats  # select's numbers are kept


def test_clip_histogram_with_threshold_on_a_scored_run(tmp_path):
    run = make_run(tmp_path / "run", clip=True, threshold=0.3)
    html_path, stats_path = build_report(run.root)
    rep = json.loads(stats_path.read_text())["report"]
    clip = rep["clip_score"]
    assert clip["scored"] and clip["threshold"] == 0.3 and clip["n"] == sum(clip["counts"]) > 0
    import pyarrow.parquet as pq

    scores = [s for f in sorted((run.root / "manifests/samples").glob("*.parquet"))
              for s in pq.read_table(f, columns=["clip_score"])["clip_score"].to_pylist() if s is not None]
    assert clip["n"] == len(scores) and clip["below_threshold"] == sum(s < 0.3 for s in scores)
    page = html_path.read_text()
    assert "not scored" not in page and len(_images(page)) >= 9
    assert rep["parts"] == {"done": 2, "failed": 1, "candidates": 3}
    assert {d["domain"] for d in rep["top_domains"]} >= {"example.com", "site.net"}


def test_report_on_an_empty_run(tmp_path):
    (tmp_path / "candidates").mkdir()
    html_path, stats_path = build_report(tmp_path)
    page = html_path.read_text()
    assert all(f"<h2>{t}</h2>" in page for t in SECTIONS) and "no LAION-FACE" in page
    assert json.loads(stats_path.read_text())["report"]["total_rows"] == 0


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)")
def test_chromium_renders_the_plots(demo_report, tmp_path):
    shot = tmp_path / "report.png"
    profile = tempfile.mkdtemp()
    try:
        subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1280,4000",
                        (demo_report / "report.html").resolve().as_uri()], capture_output=True, timeout=120, check=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 4000)
    # the plots' bars and the sample grid paint a good share of the page in colour, not just text
    import numpy as np

    px = np.asarray(img.resize((128, 400))).astype(int)
    coloured = int(((px.max(axis=2) - px.min(axis=2)) > 60).sum())
    assert coloured > 0.03 * 128 * 400, coloured
