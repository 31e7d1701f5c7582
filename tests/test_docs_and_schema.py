"""The schema module, the status vocabulary and their documentation agree."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from laionface.errors import InputError
from laionface.runfolder import write_parquet
from laionface.schema import MANIFEST_VERSION, SAMPLES, TABLES, empty_columns, sample_key, validate
from laionface.status import DROP_REASONS, drop, is_valid

DOC = (Path(__file__).parents[1] / "manifests" / "README.md").read_text()


def test_manifest_docs_name_every_column_status_and_the_version():
    assert f"version {MANIFEST_VERSION}" in DOC
    for schema in TABLES.values():
        for field in schema:
            assert f"`{field.name}`" in DOC, field.name
    for reason in DROP_REASONS:
        assert f"`{reason}`" in DOC, reason


def test_status_vocabulary():
    assert is_valid("kept") and is_valid("download_failed:timeout") and not is_valid("whatever")
    with pytest.raises(KeyError):
        drop("not_a_reason")


def test_keys_have_no_dots_and_are_unique_for_repeats():
    assert sample_key(3, 123, 7) == "00003_123"
    assert sample_key(3, 123, 7, unique=False) == "00003_123_r7"
    assert sample_key(3, None, 7) == "00003_x_r7"


def test_write_parquet_refuses_a_table_off_schema(tmp_path):
    good = empty_columns(pa.table({"key": ["00000_1"], "part": pa.array([0], pa.int32()), "row": pa.array([0], pa.int64()),
                                   "status": ["kept"], "pipeline_version": ["0"], "config_hash": ["x"]}), SAMPLES)
    write_parquet(good, tmp_path / "ok.parquet", SAMPLES)
    with pytest.raises(InputError, match="vocabulary"):
        write_parquet(good.set_column(good.schema.get_field_index("status"), "status", pa.array(["gone"])), tmp_path / "bad.parquet", SAMPLES)
    with pytest.raises(InputError, match="missing"):
        validate(good.drop_columns(["sha256"]), SAMPLES)
    assert not (tmp_path / "bad.parquet").exists() and not list(tmp_path.glob(".*tmp"))
