"""`laionface query`: the README's example queries give the numbers pandas computes from the same
files; every output format round-trips; bad SQL is one line and exit 2; an empty run has empty views."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from laionface import cli
from laionface.audit.query import format_table, query, run_query
from laionface.errors import ConfigError
from laionface.schema import FACES, PARTS, SAMPLES
from tests.audit import domain, make_run

README = Path(__file__).resolve().parents[2] / "README.md"

# The README's examples, verbatim (test_readme_shows_the_examples keeps them in step).
PROVENANCE = "SELECT key, part, row, SAMPLE_ID, URL, status, error, sha256, shard, config_hash FROM samples WHERE key = '00000_1000003'"
DROPS = "SELECT part, status, count(*) AS n FROM samples WHERE status <> 'kept' GROUP BY ALL ORDER BY part, n DESC, status"
TOP_DOMAINS = "SELECT domain, count(*) AS n, count(*) FILTER (status = 'kept') AS kept FROM samples GROUP BY domain ORDER BY n DESC, domain LIMIT 20"
OF_DOMAIN = "SELECT key, URL, status, shard FROM samples WHERE domain = 'example.com' ORDER BY key"
FACES_HIST = "SELECT face_count, count(*) AS images FROM samples WHERE face_count IS NOT NULL GROUP BY 1 ORDER BY 1"
EXAMPLES = [PROVENANCE, DROPS, TOP_DOMAINS, OF_DOMAIN, FACES_HIST]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("q") / "run").root


@pytest.fixture(scope="module")
def samples(run) -> pd.DataFrame:
    df = pq.read_table(sorted((run / "manifests" / "samples").glob("part-*.parquet"))).to_pandas()
    df["domain"] = df["URL"].map(domain)
    return df


def test_readme_shows_the_examples():
    text = README.read_text()
    assert "## Querying the manifests" in text
    for sql in EXAMPLES:
        assert sql in text, sql


def test_provenance_of_a_key(run, samples):
    got = query(run, PROVENANCE).to_pylist()
    want = samples[samples.key == "00000_1000003"]
    assert len(got) == 1 and len(want) == 1
    row, ref = got[0], want.iloc[0]
    for col in ("key", "part", "row", "SAMPLE_ID", "URL", "status", "error", "sha256", "shard", "config_hash"):
        assert row[col] == (None if pd.isna(ref[col]) else ref[col]), col


def test_drops_per_reason_per_part(run, samples):
    got = query(run, DROPS).to_pandas()
    dropped = samples[samples.status != "kept"]
    want = dropped.groupby(["part", "status"]).size().rename("n").reset_index()
    want = want.sort_values(["part", "n", "status"], ascending=[True, False, True]).reset_index(drop=True)
    assert got[["part", "status", "n"]].astype({"n": int}).values.tolist() == want.astype({"n": int}).values.tolist()
    assert got.n.sum() == len(dropped)


def test_top_domains(run, samples):
    got = query(run, TOP_DOMAINS).to_pylist()
    counts = samples.groupby("domain").agg(n=("key", "size"), kept=("status", lambda s: int((s == "kept").sum())))
    counts = counts.reset_index().sort_values(["n", "domain"], ascending=[False, True]).head(20)
    assert [(r["domain"], r["n"], r["kept"]) for r in got] == list(counts.itertuples(index=False, name=None))
    # lowercased, no www., no port, no userinfo
    assert {r["domain"] for r in got} == {"example.com", "cdn.example.org", "site.net", "img.site.net", "photos.example.com"}


def test_all_samples_of_a_domain(run, samples):
    got = query(run, OF_DOMAIN).to_pandas()
    want = samples[samples.domain == "example.com"].sort_values("key")
    assert got.key.tolist() == want.key.tolist() and len(got) > 0
    assert set(got.URL.str.extract(r"://([^/]+)/")[0].str.lower()) == {"www.example.com", "example.com:8080"}


def test_faces_per_image_histogram(run, samples):
    got = query(run, FACES_HIST).to_pylist()
    want = samples.face_count.dropna().astype(int).value_counts().sort_index()
    assert [(r["face_count"], r["images"]) for r in got] == list(want.items())


def test_downloaded_size_is_not_lost_to_case_insensitivity(run, samples):
    got = query(run, "SELECT key, WIDTH, image_width FROM samples WHERE image_width IS NOT NULL ORDER BY key LIMIT 1").to_pylist()[0]
    ref = samples[samples.key == got["key"]].iloc[0]
    assert (got["WIDTH"], got["image_width"]) == (ref["WIDTH"], ref["width"])


def test_faces_and_parts_views(run):
    faces = query(run, "SELECT count(*) AS n, count(*) FILTER (kept) AS kept FROM faces").to_pylist()[0]
    ref = pq.read_table(sorted((run / "manifests" / "faces").glob("*.parquet")))
    assert faces == {"n": ref.num_rows, "kept": sum(ref["kept"].to_pylist())}
    parts = query(run, "SELECT part, state, rows, error, json_extract(stage_seconds, '$.download')::DOUBLE AS dl FROM parts ORDER BY part")
    assert parts.to_pylist() == [
        {"part": 0, "state": "done", "rows": 40, "error": None, "dl": 8.0},
        {"part": 1, "state": "done", "rows": 40, "error": None, "dl": 9.0},
        {"part": 2, "state": "failed", "rows": None, "error": "RuntimeError: boom", "dl": None},
    ]
    sizes = query(run, "SELECT face_size(box) AS s, face_width(box) AS w, reason(status) AS r FROM faces JOIN samples USING (key) LIMIT 1")
    assert sizes.num_rows == 1


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_formats_round_trip(run, tmp_path, fmt):
    sql = "SELECT key, part, face_count, clip_score, URL, domain FROM samples ORDER BY key"
    want = query(run, sql).to_pandas()
    out = tmp_path / f"result.{fmt}"
    n = run_query(run, sql, fmt, out)
    assert n == len(want) == 80
    if fmt == "csv":
        got = pd.read_csv(out, dtype={"key": str})
    elif fmt == "json":
        got = pd.DataFrame([json.loads(line) for line in out.read_text().splitlines()])
    else:
        got = pq.read_table(out).to_pandas()
    assert got.key.tolist() == want.key.tolist()
    assert got.face_count.fillna(-1).astype(int).tolist() == want.face_count.fillna(-1).astype(int).tolist()
    assert got.domain.tolist() == want.domain.tolist()


def test_table_format_aligns_and_truncates(run):
    buf = io.StringIO()
    shown = run_query(run, "SELECT key, part FROM samples ORDER BY key", "table", max_rows=5, stream=buf)
    lines = buf.getvalue().splitlines()
    assert shown == 5 and len(lines) == 2 + 5 + 1
    assert lines[0].split() == ["key", "part"] and set(lines[1]) <= {"-", " "}
    assert "first 5 rows shown" in lines[-1]
    assert len({len(line) for line in lines[2:-1]}) == 1  # aligned
    small = format_table(query(run, "SELECT 1 AS one"))
    assert small.endswith("(1 row)")


def test_bad_sql_is_one_line_and_exit_2(run, capsys):
    code = cli.main(["query", str(run), "SELEC key FROM samples"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "syntax error" in err.lower()
    code = cli.main(["query", str(run), "SELECT nope FROM samples"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nope" in err
    with pytest.raises(ConfigError):
        query(run, "SELECT * FROM no_such_table")
    assert cli.main(["query", str(run), "SELECT 1", "--format", "parquet"]) == 2  # parquet needs --out
    assert "--out" in capsys.readouterr().err


def test_cli_prints_a_table(run, capsys):
    assert cli.main(["query", str(run), "SELECT status, count(*) AS n FROM samples GROUP BY 1 ORDER BY 1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^kept\s+\d+$", out, re.M) and out.rstrip().endswith("rows)")


def test_empty_run_has_empty_views_with_the_schema(tmp_path):
    (tmp_path / "candidates").mkdir()
    for table, schema in (("samples", SAMPLES), ("faces", FACES), ("parts", PARTS)):
        result = query(tmp_path, f"SELECT * FROM {table}")
        assert result.num_rows == 0
        renamed = {"width": "image_width", "height": "image_height"} if table == "samples" else {}
        want = [renamed.get(n, n) for n in schema.names]  # samples.domain is stored since 1.1
        assert result.column_names == want
    assert query(tmp_path, TOP_DOMAINS).num_rows == 0
    assert query(tmp_path, "SELECT count(*) AS n FROM samples").to_pylist() == [{"n": 0}]


def test_queries_in_one_process_see_their_own_run_and_rewritten_files(tmp_path):
    """query() shares one DuckDB database per process (a connection each) and caches footers:
    two runs must not see each other's views, and a rewritten manifest (takedown) must be read anew."""
    import pyarrow.compute as pc

    from laionface.runfolder import write_parquet

    a, b = make_run(tmp_path / "a").root, make_run(tmp_path / "b").root
    path = sorted((b / "manifests" / "samples").glob("part-*.parquet"))[0]
    table = pq.read_table(path)
    write_parquet(table.slice(0, 2), path, SAMPLES)  # b's first part now holds 2 rows
    count = "SELECT count(*) AS n FROM samples"
    n_a, n_b = query(a, count)["n"][0].as_py(), query(b, count)["n"][0].as_py()
    assert n_a - n_b == table.num_rows - 2
    keys = query(b, "SELECT key FROM samples")["key"]
    assert pc.sum(pc.is_in(keys, table["key"].slice(2))).as_py() == 0
    assert query(a, count)["n"][0].as_py() == n_a  # a's views were not replaced by b's
