"""`laionface card`: the Croissant file validates with mlcroissant, and the card's counts are the run's."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from laionface.audit.card import CROISSANT_FILE, MARKDOWN_FILE, collect, data_type, validate_croissant
from laionface.runfolder import RunFolder
from laionface.schema import FACES, SAMPLES
from laionface.summary import funnel

mlc = pytest.importorskip("mlcroissant")

RAI_FIELDS = ("rai:dataCollection", "rai:dataCollectionType", "rai:dataPreprocessingProtocol", "rai:dataLimitations",
              "rai:dataBiases", "rai:personalSensitiveInformation", "rai:dataUseCases", "rai:dataSocialImpact",
              "rai:hasSyntheticData")


def cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "laionface.cli", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("card") / "demo-run"
    cli("demo", "--out", str(out), "--rows", "120")
    cli("card", str(out))
    return out


def _strict_json(path: Path) -> dict:
    def no_constants(name):
        raise AssertionError(f"{path} holds {name}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=no_constants)


def test_croissant_loads_in_mlcroissant_with_rai_fields(demo_run):
    path = demo_run / CROISSANT_FILE
    doc = _strict_json(path)
    dataset = mlc.Dataset(jsonld=str(path))  # raises on any structural error
    warnings = sorted(map(str, dataset.metadata.ctx.issues.warnings))
    print("mlcroissant warnings:", warnings)
    assert validate_croissant(path) == warnings
    assert doc["conformsTo"][0] == "http://mlcommons.org/croissant/1.0"
    for name in RAI_FIELDS:
        assert doc.get(name) not in (None, "", []), name
    assert doc["rai:hasSyntheticData"] is True  # the demo's images are composed, and the card says so
    assert "synthetic compositions of scikit-image and matplotlib photos" in doc["rai:dataCollection"]
    assert "LAION-FACE" in doc["description"] and "LAION-FACE-cropped" in doc["description"]
    assert any("see LICENSE column" in lic for lic in doc["license"])
    for paper in ("2112.03109", "2111.02114", "2309.03575"):  # FaRL, LAION-400M, MCF
        assert paper in doc["citeAs"]
    config = json.loads((demo_run / "config.json").read_text())
    assert doc["version"].endswith("+" + config["config_hash"])
    includes = {d.get("includes") for d in doc["distribution"]}
    assert {"laion_face/*/*.tar", "laion_face_cropped/*/*.tar", "manifests/samples/*.parquet",
            "manifests/faces/*.parquet"} <= includes
    # the date is the run's, not the clock's: the latest part's finish time
    finished = max(json.loads(p.read_text())["finished_at"] for p in (demo_run / "_done").glob("*.json"))
    assert doc["datePublished"] == finished
    assert str(dataset.metadata.date_published.isoformat()) == finished


def test_record_sets_describe_the_manifests_and_read_them(demo_run):
    doc = _strict_json(demo_run / CROISSANT_FILE)
    by_id = {rs["@id"]: rs for rs in doc["recordSet"]}
    for name, schema in (("samples", SAMPLES), ("faces", FACES)):
        fields = {f["name"]: f for f in by_id[name]["field"]}
        assert list(fields) == schema.names
        for f in schema:
            assert fields[f.name]["dataType"] == data_type(f.type)[0]
            assert fields[f.name]["source"]["extract"] == {"column": f.name}
    assert by_id["samples"]["field"][SAMPLES.get_field_index("part")]["dataType"] == "sc:Integer"
    assert by_id["samples"]["field"][SAMPLES.get_field_index("clip_score")]["dataType"] == "sc:Float"
    assert by_id["faces"]["field"][FACES.get_field_index("kept")]["dataType"] == "sc:Boolean"
    # mlcroissant reads the records through the FileSets (paths relative to the run folder)
    dataset = mlc.Dataset(jsonld=str(demo_run / CROISSANT_FILE))
    run = RunFolder(demo_run)
    statuses = Counter(r["samples/status"].decode() for r in dataset.records("samples"))
    assert statuses == funnel(run)
    faces = sum(pq.read_metadata(run.faces(p)).num_rows for p in run.done_parts())
    assert sum(1 for _ in dataset.records("faces")) == faces


def test_card_counts_equal_the_funnel_and_the_outputs(demo_run):
    run = RunFolder(demo_run)
    counts = funnel(run)
    samples = pa.concat_tables([pq.read_table(run.samples(p)) for p in run.done_parts()])
    faces = pa.concat_tables([pq.read_table(run.faces(p)) for p in run.done_parts()])
    kept = samples.filter(pc.equal(samples["status"], "kept"))
    kept_faces = faces.filter(pc.and_(faces["kept"], pc.is_in(faces["key"], value_set=kept["key"].combine_chunks())))
    tars = sorted(demo_run.glob("laion_face/*/*.tar"))
    assert counts["kept"] == kept.num_rows > 0 and tars

    facts = collect(demo_run)
    assert facts.funnel == counts
    assert (facts.kept_samples, facts.faces_detected, facts.faces_kept) == (kept.num_rows, faces.num_rows, kept_faces.num_rows)
    assert len(facts.laion_face_shards) == len(tars) == facts.shard_refs == len(set(kept["shard"].to_pylist()))
    assert len(facts.cropped_shards) == len(list(demo_run.glob("laion_face_cropped/*/*.tar")))
    assert facts.crops == kept_faces.num_rows - kept_faces["crop_shard"].null_count

    card = (demo_run / MARKDOWN_FILE).read_text()
    table = dict(re.findall(r"^\| `([^`]+)` \| ([\d,]+) \|", card, flags=re.M))
    assert {s: int(n.replace(",", "")) for s, n in table.items()} == dict(counts)
    assert f"| total | {sum(counts.values()):,} |" in card
    outputs = dict(line.strip("| ").split(" | ") for line in card.splitlines() if line.count(" | ") == 1)
    assert outputs["LAION-FACE samples (status kept)"] == f"{kept.num_rows:,}"
    assert outputs["faces detected (faces manifest rows)"] == f"{faces.num_rows:,}"
    assert outputs["faces kept (of kept samples)"] == f"{kept_faces.num_rows:,}"
    assert outputs["LAION-FACE shards (`laion_face/*/*.tar`)"] == f"{len(tars):,}"
    # link rot, measured: download failures over the rows handed to the downloader
    failed = sum(n for s, n in counts.items() if s.startswith("download_failed"))
    assert failed and f"Link rot: {failed:,} of {facts.reached_download:,} URLs" in card
    doc = _strict_json(demo_run / CROISSANT_FILE)
    assert any(f"Link rot: {failed:,} of" in x for x in doc["rai:dataLimitations"])
    assert f"{kept.num_rows:,} samples" in doc["description"]
    # the recipe: config hash and every setting of config.json
    config = json.loads((demo_run / "config.json").read_text())
    assert config["config_hash"] in card
    for stage, settings in config["pipeline"]["stages"].items():
        for name in settings:
            assert f"| {stage} | `{name}` |" in card
    for section in ("## Sources and licences", "## Known limits", "## Personal data and takedowns", "## How to cite",
                    "## How to reproduce", "laionface demo --out demo-run --rows 120", "fires on face-like patterns"):
        assert section in card


def test_card_is_reproducible(demo_run, tmp_path):
    cli("card", str(demo_run), "--out", str(tmp_path))
    for name in (CROISSANT_FILE, MARKDOWN_FILE):
        assert (tmp_path / name).read_bytes() == (demo_run / name).read_bytes(), name


def test_real_run_card_says_no_synthetic_data_and_records_takedowns(demo_run, tmp_path):
    """A run whose pipeline is not the demo: hasSyntheticData false, a `laionface run` command, takedowns counted."""
    run_dir = tmp_path / "lf"
    shutil.copytree(demo_run, run_dir, ignore=shutil.ignore_patterns(CROISSANT_FILE, MARKDOWN_FILE))
    config = json.loads((run_dir / "config.json").read_text())
    config["pipeline"]["name"] = "laion_face"
    (run_dir / "config.json").write_text(json.dumps(config))
    kept = pq.read_table(RunFolder(run_dir).samples(0)).filter(pc.equal(pq.read_table(RunFolder(run_dir).samples(0))["status"], "kept"))
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(str(i) for i in kept["SAMPLE_ID"].to_pylist()[:3]) + "\n")
    cli("takedown", str(run_dir), "--ids", str(ids), "--by", "card-test")
    cli("card", str(run_dir))

    doc = _strict_json(run_dir / CROISSANT_FILE)
    mlc.Dataset(jsonld=str(run_dir / CROISSANT_FILE))
    assert doc["rai:hasSyntheticData"] is False
    assert "synthetic" not in doc["rai:dataCollection"].lower()
    assert "Web Scraping" in doc["rai:dataCollectionType"]
    assert any(d["@id"] == "takedowns.parquet" and len(d["sha256"]) == 64 for d in doc["distribution"])
    card = (run_dir / MARKDOWN_FILE).read_text()
    assert "Demo run" not in card
    assert "laionface run pipeline.yaml --input 'laion400m-meta/*.parquet' --ids laion_face_ids.pth --parts 0,1 --out lf" in card
    assert "1 takedown request(s), 3 sample(s) removed, 3 row(s) now with status taken_down" in card
    assert "| `taken_down` | 3 |" in card and "card-test" in card
    # the YAML in the card rebuilds the same pipeline (same hash)
    import yaml

    from laionface.pipeline import Pipeline

    block = re.search(r"```yaml\n(.*?)```", card, flags=re.S).group(1)
    assert Pipeline.from_dict(yaml.safe_load(block)).hash == config["config_hash"]


def test_data_type_per_arrow_type():
    assert data_type(pa.string()) == ("sc:Text", False)
    assert data_type(pa.int16()) == ("sc:Integer", False)
    assert data_type(pa.float32()) == ("sc:Float", False)
    assert data_type(pa.bool_()) == ("sc:Boolean", False)
    assert data_type(pa.list_(pa.float32(), 4)) == ("sc:Float", True)


def test_card_of_a_folder_that_is_no_run_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "laionface.cli", "card", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "not a run folder" in proc.stderr and proc.stderr.count("\n") == 1
