"""Select: ID-list formats, every rule, bad input, --subset; real parquet files throughout."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionface.errors import InputError, MissingInputError
from laionface.idlists import load_id_list
from laionface.metaparts import SUBSETS, plan_parts
from laionface.schema import CANDIDATES, validate
from laionface.stages.select import SelectConfig, select

PART_NAME = "part-{:05d}-5b54c5d5-bbcf-484d-a2ce-0d6f73df1a36-c000.snappy.parquet"


def laion_rows(n: int, start: int = 0) -> dict:
    ids = np.arange(start, start + n, dtype=np.int64) * 13 + 5
    return {
        "SAMPLE_ID": ids, "URL": [f"https://img.example.com/{i}.jpg" for i in ids], "TEXT": [f"photo {i}" for i in ids],
        "HEIGHT": np.full(n, 480.0), "WIDTH": np.full(n, 640.0), "LICENSE": ["?"] * n,
        "NSFW": ["UNLIKELY"] * n, "similarity": np.full(n, 0.33),
    }


def write_part(folder, part: int, rows: dict, **kw) -> str:
    path = folder / PART_NAME.format(part)
    pq.write_table(pa.table(rows), path, **kw)
    return path


def run_select(tmp_path, meta, ids=None, config=SelectConfig(), **plan):
    out = tmp_path / "run" / "candidates"
    results = select(plan_parts(str(meta), **plan), ids, config, lambda p: out / f"part-{p:05d}.parquet")
    tables = {r.part: pq.read_table(out / f"part-{r.part:05d}.parquet") for r in results if not r.error}
    return results, tables


def torch_style_pth(path, lists) -> None:
    """The zip layout torch.save writes for plain containers (no tensors), built without torch."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("laion_face_ids/data.pkl", pickle.dumps(lists, protocol=2))
        zf.writestr("laion_face_ids/version", "3\n")


def test_id_list_semi_join_keeps_input_order_and_normalises_types(tmp_path):
    rows = laion_rows(1000)
    meta = tmp_path / "meta"
    meta.mkdir()
    write_part(meta, 3, rows, row_group_size=128)
    wanted = rows["SAMPLE_ID"][::7][::-1]  # list order must not matter
    lists = [[] for _ in range(32)]
    lists[3] = [int(x) for x in wanted]
    torch_style_pth(tmp_path / "ids.pth", lists)
    results, tables = run_select(tmp_path, meta, load_id_list(tmp_path / "ids.pth"), SelectConfig(batch_size=100))
    t = tables[3]
    validate(t, CANDIDATES)
    assert t["SAMPLE_ID"].to_pylist() == [int(x) for x in rows["SAMPLE_ID"][::7]]
    assert t["row"].to_pylist() == list(range(0, 1000, 7))
    assert t.schema.field("HEIGHT").type == pa.int32() and t["HEIGHT"][0].as_py() == 480
    assert t["key"][0].as_py() == f"00003_{rows['SAMPLE_ID'][0]}"
    assert results[0].input_rows == 1000 and results[0].matched_rows == len(wanted)


@pytest.mark.parametrize("fmt", ["parquet", "parquet_parts", "txt", "npy"])
def test_plain_id_list_formats(tmp_path, fmt):
    rows = laion_rows(200)
    meta = tmp_path / "meta"
    meta.mkdir()
    write_part(meta, 0, rows)
    wanted = rows["SAMPLE_ID"][10:50]
    path = tmp_path / f"ids.{fmt.split('_')[0]}"
    if fmt == "parquet":
        pq.write_table(pa.table({"SAMPLE_ID": wanted}), path)
    elif fmt == "parquet_parts":
        pq.write_table(pa.table({"SAMPLE_ID": np.r_[wanted, [1, 2]], "part": np.r_[np.zeros(len(wanted), int), [5, 5]]}), path)
    elif fmt == "txt":
        path.write_text("# LAION-Face ids\n" + "\n".join(map(str, wanted)) + "\n")
    else:
        np.save(path, wanted)
    _, tables = run_select(tmp_path, meta, load_id_list(path))
    assert tables[0]["SAMPLE_ID"].to_pylist() == [int(x) for x in wanted]


def test_id_list_errors_are_named(tmp_path):
    with pytest.raises(MissingInputError, match="does not exist"):
        load_id_list(tmp_path / "nope.pth")
    bad = tmp_path / "ids.txt"
    bad.write_text("12\nnot-a-number\n")
    with pytest.raises(InputError, match="ids.txt"):
        load_id_list(bad)
    with pytest.raises(InputError, match="unknown ID list format"):
        (tmp_path / "ids.xml").write_text("<ids/>")
        load_id_list(tmp_path / "ids.xml")


def test_each_rule_sets_its_status_and_keeps_the_row(tmp_path):
    rows = laion_rows(10)
    rows["WIDTH"][1] = 50.0  # small_meta_size
    rows["NSFW"][2] = "NSFW"  # nsfw
    rows["similarity"][3] = 0.29  # low_laion_similarity
    rows["TEXT"][4] = "   "  # empty_caption
    rows["URL"][5] = rows["URL"][0]  # duplicate_url (first wins)
    rows["URL"][6] = None  # null_url
    rows["URL"][7] = "file:///etc/passwd"  # bad_url
    rows["SAMPLE_ID"][8] = rows["SAMPLE_ID"][9]  # duplicate_sample_id: the later one
    meta = tmp_path / "meta"
    meta.mkdir()
    write_part(meta, 0, rows)
    config = SelectConfig(min_width=100, min_height=100, allowed_nsfw=("UNLIKELY", "UNSURE"), min_similarity=0.3)
    results, tables = run_select(tmp_path, meta, None, config)
    t = tables[0]
    assert t["status"].to_pylist() == [
        "kept", "small_meta_size", "nsfw", "low_laion_similarity", "empty_caption",
        "duplicate_url", "null_url", "bad_url", "kept", "duplicate_sample_id",
    ]
    assert all(e for s, e in zip(t["status"].to_pylist(), t["error"].to_pylist()) if s != "kept")
    assert len(set(t["key"].to_pylist())) == 10  # the repeated SAMPLE_ID still gets a unique key
    assert results[0].status_counts["kept"] == 2 and sum(results[0].status_counts.values()) == 10


def test_duplicate_urls_across_parts_first_part_wins(tmp_path):
    meta = tmp_path / "meta"
    meta.mkdir()
    a, b = laion_rows(5), laion_rows(5, start=100)
    b["URL"][2] = a["URL"][4]
    write_part(meta, 0, a)
    write_part(meta, 1, b)
    _, tables = run_select(tmp_path, meta)
    assert tables[0]["status"].to_pylist() == ["kept"] * 5
    assert tables[1]["status"][2].as_py() == "duplicate_url"
    _, tables = run_select(tmp_path, meta, config=SelectConfig(drop_duplicate_urls=False))
    assert tables[1]["status"][2].as_py() == "kept"


def test_missing_column_and_corrupt_file_name_the_file_and_others_finish(tmp_path):
    meta = tmp_path / "meta"
    meta.mkdir()
    write_part(meta, 0, laion_rows(5))
    no_url = laion_rows(5)
    del no_url["URL"]
    write_part(meta, 1, no_url)
    (meta / PART_NAME.format(2)).write_bytes(b"PAR1 this is not parquet")
    optional_missing = laion_rows(5, start=50)
    del optional_missing["NSFW"], optional_missing["LICENSE"]
    write_part(meta, 3, optional_missing)
    results, tables = run_select(tmp_path, meta)
    by_part = {r.part: r for r in results}
    assert "missing column URL" in by_part[1].error and PART_NAME.format(1) in by_part[1].error
    assert "unreadable parquet" in by_part[2].error and PART_NAME.format(2) in by_part[2].error
    assert by_part[0].error is None and tables[0].num_rows == 5
    assert tables[3]["NSFW"].null_count == 5 and tables[3]["status"].to_pylist() == ["kept"] * 5


def test_subset_and_parts_choose_files(tmp_path):
    meta = tmp_path / "meta"
    meta.mkdir()
    for part in range(4):
        write_part(meta, part, laion_rows(3, start=part * 10))
    assert [mp.part for mp in plan_parts(str(meta), subset="20M")] == [p for p in range(4) if p in SUBSETS["20M"]] == [0, 2]
    assert [mp.part for mp in plan_parts(str(meta / "part-*.parquet"), parts=(1, 3))] == [1, 3]
    assert [mp.part for mp in plan_parts(str(meta), parts=(0, 1), subset="20M")] == [0]
    with pytest.raises(MissingInputError):
        plan_parts(str(tmp_path / "missing"))


def test_float_sizes_and_large_string_types_are_normalised(tmp_path):
    rows = laion_rows(4)
    rows["HEIGHT"] = np.array([480.4, np.nan, 10.6, 300.0])
    meta = tmp_path / "meta"
    meta.mkdir()
    table = pa.table(rows).set_column(1, "URL", pa.array(rows["URL"], pa.large_string()))
    pq.write_table(table, meta / PART_NAME.format(0))
    _, tables = run_select(tmp_path, meta)
    assert tables[0]["HEIGHT"].to_pylist() == [480, None, 11, 300]
    validate(tables[0], CANDIDATES)


def test_duplicates_across_batches_and_no_pandas_import(tmp_path):
    """Batches are the scan's; the duplicate rules must still see across them. Select stays
    light: importing pandas (pyarrow's to_numpy and pa.array pull it) would cost ~0.1 s and ~40 MB."""
    import subprocess
    import sys

    rows = laion_rows(300)
    rows["URL"][250] = rows["URL"][3]
    rows["SAMPLE_ID"][280] = rows["SAMPLE_ID"][7]
    meta = tmp_path / "meta"
    meta.mkdir()
    write_part(meta, 0, rows, row_group_size=64)
    results, tables = run_select(tmp_path, meta, None, SelectConfig(batch_size=50))
    status = tables[0]["status"].to_pylist()
    assert status[250] == "duplicate_url" and status[280] == "duplicate_sample_id"
    assert status.count("kept") == 298 and results[0].status_counts == {"duplicate_sample_id": 1, "duplicate_url": 1, "kept": 298}
    assert tables[0]["row"].to_pylist() == list(range(300))
    code = ("import sys; from laionface.metaparts import plan_parts; from laionface.stages.select import SelectConfig, select; "
            f"select(plan_parts({str(meta)!r}), None, SelectConfig(), lambda p: __import__('pathlib').Path({str(tmp_path)!r}) / 'c.parquet'); "
            "assert 'pandas' not in sys.modules, 'select imported pandas'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_select_command_is_light_and_exits_fast_without_losing_output(tmp_path):
    """`laionface select` as a real process: the console entry leaves with os._exit (skipping
    the interpreter's 0.2-0.5 s teardown), so this checks what exit must still do: run atexit
    handlers (Ray registers its shutdown there) and flush piped, block-buffered stdout. The
    command must not import what select never uses (pandas via pq.read_table, pyarrow.compute
    via pl.from_arrow, the other stages' modules): together ~0.6 s of a ~1.6 s select."""
    import subprocess
    import sys

    meta = tmp_path / "meta"
    meta.mkdir()
    write_part(meta, 0, laion_rows(500))
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(str(i) for i in laion_rows(500)["SAMPLE_ID"][::5]))
    heavy = ("pandas", "pyarrow.compute", "pyarrow.dataset", "PIL", "yaml", "laionface.stages.crop", "laionface.stages.detect")
    code = ("import atexit, sys; from laionface.cli import console; "
            f"atexit.register(lambda: print('imported:', [m for m in {heavy!r} if m in sys.modules])); "
            f"sys.argv = ['laionface', 'select', '--meta', {str(meta)!r}, '--ids', {str(ids)!r}, '--out', {str(tmp_path / 'run')!r}]; "
            "console()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "part     0: 100 of 500 rows selected, 100 pass the rules", proc.stdout
    assert lines[1] == f"candidates in {tmp_path / 'run' / 'candidates'}"
    assert lines[2] == "imported: []"  # the atexit handler ran, after the command's output
    assert pq.read_table(tmp_path / "run" / "candidates" / "part-00000.parquet").num_rows == 100


def test_select_command_scans_the_first_part_before_the_heavy_imports(tmp_path):
    """The ID list module loads polars only, so `laionface select` starts scanning the first
    part's SAMPLE_IDs before numpy, pyarrow and the select stage import (~0.1 s of one core);
    select itself starts each next part's scan while the current part is read."""
    import subprocess
    import sys

    meta = tmp_path / "meta"
    meta.mkdir()
    lists = [[] for _ in range(32)]
    for part in (0, 1):
        rows = laion_rows(200, start=200 * part)
        write_part(meta, part, rows)
        lists[part] = [int(x) for x in rows["SAMPLE_ID"][::4]]
    torch_style_pth(tmp_path / "ids.pth", lists)
    code = ("import sys; import laionface.idlists as idlists; "
            "light = [m for m in ('numpy', 'pyarrow') if m in sys.modules]; "
            "prefetch = idlists.IdList.prefetch; "
            "idlists.IdList.prefetch = lambda self, path, part: print('prefetch', part, light, "
            "[m for m in ('numpy', 'pyarrow', 'laionface.stages.select') if m in sys.modules]) or prefetch(self, path, part); "
            "from laionface.cli import main; "
            f"sys.exit(main(['select', '--meta', {str(meta)!r}, '--ids', {str(tmp_path / 'ids.pth')!r}, '--out', {str(tmp_path / 'run')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "prefetch 0 [] []", proc.stdout
    assert lines[1] == "prefetch 1 [] ['numpy', 'pyarrow', 'laionface.stages.select']", proc.stdout
    assert lines[2:4] == ["part     0: 50 of 200 rows selected, 50 pass the rules", "part     1: 50 of 200 rows selected, 50 pass the rules"]


def test_a_part_that_fails_leaves_no_scan_behind_for_a_later_select(tmp_path):
    """select scans the next part while reading this one; when that part then fails (here: no URL
    column), its scan is dropped, so a later select with the same ID list scans the file as it is
    then, not as it was."""
    from laionface.idlists import IdList

    meta = tmp_path / "meta"
    meta.mkdir()
    first, second = laion_rows(100), laion_rows(100, start=100)
    write_part(meta, 0, first)
    broken = dict(second)
    del broken["URL"]
    write_part(meta, 1, broken)
    import polars as pl

    ids = IdList(per_part={0: pl.Series(first["SAMPLE_ID"][::2]), 1: pl.Series(second["SAMPLE_ID"][::2])})
    results, _ = run_select(tmp_path, meta, ids)
    assert results[0].error is None and "missing column URL" in results[1].error
    assert ids._scans == {}
    write_part(meta, 1, {k: v[::-1] for k, v in second.items()})  # fixed, and in another row order
    results, tables = run_select(tmp_path, meta, ids, parts=(1,))
    assert results[0].error is None, results[0].error
    assert tables[1]["SAMPLE_ID"].to_pylist() == [int(x) for x in second["SAMPLE_ID"][::-1] if x in set(second["SAMPLE_ID"][::2])]


def test_a_part_the_list_has_nothing_for_is_counted_and_never_scanned(tmp_path, monkeypatch):
    """Per-part lists name nothing for some parts (the 20M subset's list is empty outside its 13
    parts): such a part's rows are counted and its candidates file is empty, with no scan at all."""
    import polars as pl

    meta = tmp_path / "meta"
    meta.mkdir()
    for part in (0, 1):
        write_part(meta, part, laion_rows(100, start=100 * part))
    lists = [[] for _ in range(32)]
    lists[0] = [int(x) for x in laion_rows(100)["SAMPLE_ID"][:10]]
    torch_style_pth(tmp_path / "ids.pth", lists)
    scanned = []
    real_scan = pl.scan_parquet
    monkeypatch.setattr(pl, "scan_parquet", lambda source, **kw: scanned.append(str(source)) or real_scan(source, **kw))
    results, tables = run_select(tmp_path, meta, load_id_list(tmp_path / "ids.pth"))
    assert [(r.part, r.input_rows, r.matched_rows, r.error) for r in results] == [(0, 100, 10, None), (1, 100, 0, None)]
    assert tables[1].num_rows == 0 and tables[1].schema == CANDIDATES
    assert scanned and not [s for s in scanned if PART_NAME.format(1) in s]


def test_id_values_that_are_not_64_bit_integers_name_the_file(tmp_path):
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"SAMPLE_ID": ["12", "not-a-number"]}), path)
    with pytest.raises(InputError, match="ids.parquet: SAMPLE_IDs must be 64-bit integers"):
        load_id_list(path)
    torch_style_pth(tmp_path / "ids.pth", [[1, 2**70]])
    with pytest.raises(InputError, match="ids.pth: SAMPLE_IDs must be 64-bit integers"):
        load_id_list(tmp_path / "ids.pth")


def test_listed_ids_first_row_wins_across_windows_and_unlisted_windows_are_not_read(tmp_path, monkeypatch):
    """With an ID list, each listed SAMPLE_ID's first row in the part is found once, up front: the
    earliest row keeps the ID wherever the windows fall, each repeat gets duplicate_sample_id (and
    a key of its own), the same statuses as without a list; windows with no listed row are skipped."""
    from laionface.stages import select as stage

    rows = laion_rows(600)
    rows["SAMPLE_ID"][450] = rows["SAMPLE_ID"][20]  # a listed ID again, four windows later
    rows["SAMPLE_ID"][21] = rows["SAMPLE_ID"][499]  # a listed ID whose first row comes early
    meta = tmp_path / "meta"
    meta.mkdir()
    write_part(meta, 0, rows, row_group_size=100)
    ids = tmp_path / "ids.npy"
    np.save(ids, np.concatenate([rows["SAMPLE_ID"][:200], rows["SAMPLE_ID"][499:500]]))
    scanned = []
    real_scan = stage._scan
    monkeypatch.setattr(stage, "_scan", lambda *a: scanned.append(a[-1]) or real_scan(*a))
    results, tables = run_select(tmp_path, meta, load_id_list(ids), SelectConfig(batch_size=100))
    got = tables[0]
    assert got["row"].to_pylist() == [*range(200), 450, 499]
    status = dict(zip(got["row"].to_pylist(), got["status"].to_pylist()))
    assert status[450] == status[499] == "duplicate_sample_id"
    assert status[20] == status[21] == "kept" and results[0].status_counts == {"duplicate_sample_id": 2, "kept": 200}
    keys = got["key"].to_pylist()
    assert len(set(keys)) == len(keys) and keys[-1] == f"00000_{rows['SAMPLE_ID'][499]}_r499"
    assert sorted(scanned) == [(0, 100), (100, 100), (400, 100)]  # 200-399 and 500-599 hold no listed row
    monkeypatch.undo()
    _, unlisted = run_select(tmp_path, meta, None, SelectConfig(batch_size=100))
    plain = dict(zip(unlisted[0]["row"].to_pylist(), unlisted[0]["status"].to_pylist()))
    assert all(plain[row] == s for row, s in status.items())


def test_read_ahead_keeps_order_bounds_what_is_in_flight_and_raises():
    """Windows are read two at a time but handed over in input order; one more waits queued, so
    no reader idles while the consumer works, and no more than threads + 2 are started before
    the consumer takes one (memory stays bounded by windows, not the part)."""
    import threading
    import time

    from laionface.stages.select import _read_ahead

    lock = threading.Lock()
    started, running, peak = [], [0], [0]

    def read(i):
        def run():
            with lock:
                started.append(i)
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.02 if i % 3 == 0 else 0.001)  # later windows often finish first
            with lock:
                running[0] -= 1
            return i
        return run

    got = []
    for value in _read_ahead((read(i) for i in range(12)), threads=2):
        assert len(started) <= value + 4  # at most threads + 2 read ahead of the one handed over
        got.append(value)
    assert got == list(range(12)) and peak[0] == 2
    started.clear()
    for value in _read_ahead((read(i) for i in range(20, 30)), threads=2):
        time.sleep(0.05)  # a slow consumer: meanwhile every queued read has started
        assert len(started) >= min(10, value - 20 + 4), (value, started)

    def failing():
        raise OSError("corrupt row group")

    with pytest.raises(OSError, match="corrupt row group"):
        list(_read_ahead(iter([read(0), failing, read(2)]), threads=2))


def test_seen_set_answers_like_a_python_set_and_keeps_few_runs():
    """The duplicate rules' set: batches of distinct values (as polars' first-in-window flags
    leave them) against everything added before, with negative, zero, sequential and extreme
    IDs; new values become sorted runs that merge, so lookups search O(log n) runs."""
    from laionface.stages.select import _SeenSet

    rng = np.random.default_rng(1)
    seen, reference = _SeenSet(), set()
    pool = np.concatenate([rng.integers(-(2**63), 2**63 - 1, 30_000), np.arange(-50, 20_000), [-(2**63), 2**63 - 1]])
    for size in [5_000] * 10 + [1, 0, 3, 20_000]:
        batch = np.unique(rng.choice(pool, size))
        rng.shuffle(batch)
        got = seen.add(batch)
        assert got.tolist() == [int(v) in reference for v in batch]
        reference.update(int(v) for v in batch)
        merged = np.concatenate(seen.runs)
        assert sorted(merged.tolist()) == sorted(reference)
        assert all(len(a) > 2 * len(b) for a, b in zip(seen.runs, seen.runs[1:])), [len(r) for r in seen.runs]
        assert all(np.all(r[1:] > r[:-1]) for r in seen.runs)


def test_duplicate_rules_keep_the_earliest_row_within_and_across_windows(tmp_path):
    """Repeats inside one window and across windows and parts: the earliest row (part order, then
    row order) keeps the URL or ID, every later one is marked, with and without an ID list."""
    first, second = laion_rows(300), laion_rows(300, start=300)
    first["URL"], second["URL"] = np.array(first["URL"], object), np.array(second["URL"], object)
    first["URL"][[40, 41, 260]] = first["URL"][5]  # twice in the first window, once in the third
    first["SAMPLE_ID"][[7, 8, 299]] = first["SAMPLE_ID"][2]
    second["URL"][[0, 150]] = first["URL"][100]  # a URL the first part had
    meta = tmp_path / "meta"
    meta.mkdir()
    write_part(meta, 0, first, row_group_size=100)
    write_part(meta, 1, second, row_group_size=100)
    expected = {(0, 40): "duplicate_url", (0, 41): "duplicate_url", (0, 260): "duplicate_url", (0, 7): "duplicate_sample_id",
                (0, 8): "duplicate_sample_id", (0, 299): "duplicate_sample_id", (1, 0): "duplicate_url", (1, 150): "duplicate_url"}
    ids = tmp_path / "ids.npy"
    np.save(ids, np.concatenate([first["SAMPLE_ID"], second["SAMPLE_ID"]]))
    for id_list in (None, load_id_list(ids)):
        _, tables = run_select(tmp_path, meta, id_list, SelectConfig(batch_size=100))
        marked = {(part, row): status for part, t in tables.items()
                  for row, status in zip(t["row"].to_pylist(), t["status"].to_pylist()) if status != "kept"}
        assert marked == expected, id_list


def test_select_bounds_polars_allocator_retention_unless_the_user_set_it():
    """polars keeps freed pages a second as "muzzy" (still in RSS), which made a streaming
    select's RSS grow with the part; select turns that off before polars loads (polars appends
    it to its own settings), and leaves a user's own setting alone."""
    import os
    import subprocess
    import sys

    code = "import os, laionface.stages.select; print(os.environ['_RJEM_MALLOC_CONF'])"
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    ours = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert ours.stdout.strip().endswith(",muzzy_decay_ms:0"), (ours.stdout, ours.stderr[-2000:])
    theirs = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**env, "_RJEM_MALLOC_CONF": "dirty_decay_ms:0"})
    assert theirs.stdout.strip().endswith(",dirty_decay_ms:0") and "muzzy_decay_ms:0" not in theirs.stdout, theirs.stdout


def test_progress_follows_input_rows_window_by_window(tmp_path):
    """The CLI's bar counts rows, not parts: select reports each window's input rows as it is
    handled, matched or not, across every part."""
    meta = tmp_path / "meta"
    meta.mkdir()
    write_part(meta, 0, laion_rows(300), row_group_size=64)
    write_part(meta, 1, laion_rows(100, start=300), row_group_size=64)
    reports: list[int] = []
    ids = load_id_list(_txt_ids(tmp_path, laion_rows(400)["SAMPLE_ID"][::7]))
    out = tmp_path / "run" / "candidates"
    select(plan_parts(str(meta)), ids, SelectConfig(batch_size=100), lambda p: out / f"part-{p:05d}.parquet", progress=reports.append)
    assert reports == [128, 128, 44, 100]  # windows of whole row groups of 64, >= 100 rows each


def _txt_ids(tmp_path, ids) -> str:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(str(i) for i in ids))
    return str(path)


def test_read_threads_change_nothing_in_the_output_and_zero_is_refused(tmp_path):
    """Windows decoded one or two at a time give byte-identical candidates; 0 is a config error."""
    from laionface.errors import ConfigError

    rows = laion_rows(2000)
    rows["URL"][1500] = rows["URL"][12]  # a duplicate across windows (both rows in the list)
    meta = tmp_path / "meta"
    meta.mkdir()
    write_part(meta, 0, rows, row_group_size=128)
    ids = load_id_list(_txt_ids(tmp_path, rows["SAMPLE_ID"][::3]))
    outs = []
    for threads in (1, 2, 3):
        out = tmp_path / f"t{threads}" / "part-00000.parquet"
        select(plan_parts(str(meta)), ids, SelectConfig(batch_size=300, threads=threads), lambda p, out=out: out)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    assert "duplicate_url" in pq.read_table(tmp_path / "t2" / "part-00000.parquet")["status"].to_pylist()
    with pytest.raises(ConfigError, match="threads >= 1"):
        select(plan_parts(str(meta)), ids, SelectConfig(threads=0), lambda p: tmp_path / "x.parquet")


def test_compression_setting_changes_the_codec_not_the_rows_or_the_config_hash(tmp_path):
    """Candidates are uncompressed by default (select is CPU-bound); `compression` picks a codec,
    the rows stay the same, the run's config hash too; an unknown codec is one config error."""
    from laionface.errors import ConfigError
    from laionface.pipeline import Pipeline

    meta = tmp_path / "meta"
    meta.mkdir()
    write_part(meta, 0, laion_rows(300))
    tables = {}
    for codec in ("none", "snappy", "zstd"):
        out = tmp_path / codec / "part-00000.parquet"
        select(plan_parts(str(meta)), None, SelectConfig(compression=codec), lambda p, out=out: out)
        meta_data = pq.ParquetFile(out).metadata
        codecs = {meta_data.row_group(0).column(i).compression for i in range(meta_data.num_columns)}
        assert codecs == {"UNCOMPRESSED" if codec == "none" else codec.upper()}, (codec, codecs)
        tables[codec] = pq.read_table(out)
    assert tables["none"].equals(tables["snappy"]) and tables["none"].equals(tables["zstd"])
    assert SelectConfig().compression == "none"
    hashes = {Pipeline().with_settings("select", compression=codec).hash for codec in ("none", "zstd")}
    assert len(hashes) == 1
    with pytest.raises(ConfigError, match="compression 'rar' is not one of none, snappy"):
        select(plan_parts(str(meta)), None, SelectConfig(compression="rar"), lambda p: tmp_path / "x.parquet")


def test_candidates_keep_statistics_only_where_a_reader_can_skip_by_them(tmp_path):
    """Min/max stay on ids, rows and statuses (DuckDB and pyarrow prune row groups with them);
    keys, URLs and captions in input order span everything, so they carry none."""
    meta = tmp_path / "meta"
    meta.mkdir()
    write_part(meta, 0, laion_rows(500))
    results, _ = run_select(tmp_path, meta)
    rg = pq.ParquetFile(tmp_path / "run" / "candidates" / "part-00000.parquet").metadata.row_group(0)
    stats = {rg.column(i).path_in_schema: rg.column(i).is_stats_set for i in range(rg.num_columns)}
    assert stats["SAMPLE_ID"] and stats["row"] and stats["status"]
    assert not (stats["key"] or stats["URL"] or stats["TEXT"])
