"""The command line: help with examples, one-line errors with exit code 2 (real subprocesses)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from laionface.cli import build_parser

COMMANDS = ["demo", "select", "download", "detect", "crop", "score", "show", "run", "export-detections",
            "import-detections", "query", "report", "takedown", "dedup", "card", "pretrain", "evaluate"]


def laionface(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "laionface.cli", *args], capture_output=True, text=True, timeout=60)


def test_commands_list_is_the_parsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert sorted(sub.choices) == sorted(COMMANDS)


def test_top_level_help_lists_every_command():
    out = laionface("--help")
    assert out.returncode == 0
    for name in COMMANDS:
        assert name in out.stdout
    assert "example:" in out.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_help_shows_an_example(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([name, "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert "example:" in help_text and f"laionface {name}" in help_text


@pytest.mark.parametrize("name", COMMANDS)
def test_the_command_line_builds_only_the_invoked_command_and_helps_the_same(name, capsys):
    """main() builds just the named command's parser (argparse's per-argument gettext lookups
    made building all of them ~9 ms of every start); its help is the full parser's, word for word."""
    from laionface.cli import main

    only = build_parser(only=name)
    sub = next(a for a in only._actions if a.__class__.__name__ == "_SubParsersAction")
    assert list(sub.choices) == [name]
    with pytest.raises(SystemExit):
        build_parser().parse_args([name, "--help"])
    full = capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0 and capsys.readouterr().out == full


@pytest.mark.parametrize(
    "args, says",
    [
        (["frobnicate"], "invalid choice"),
        (["select", "--meta", "/no/such/meta.parquet", "--out", "/tmp/x"], "does not exist"),
        (["select", "--meta", "x", "--out", "y", "--parts", "zero"], "comma-separated part numbers"),
        (["select", "--out", "y"], "--meta"),
        (["download", "/no/such/run"], "not a run folder"),
        (["select", "--meta", "x", "--out", "y", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_on_stderr_with_exit_2(args, says):
    out = laionface(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_pipeline_key_names_the_valid_ones(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\nstages:\n  detect:\n    min_scor: 0.5\n")
    (tmp_path / "meta").mkdir()
    out = laionface("run", str(bad), "--input", str(tmp_path / "meta"), "--out", str(tmp_path / "run"))
    assert out.returncode == 2
    assert "unknown setting 'min_scor'" in out.stderr and "min_score" in out.stderr


def test_commands_run_one_blas_thread_unless_the_user_chose():
    """numpy's import-time dot product leaves OpenBLAS's worker threads spinning (~0.2 s of CPU
    per command, taken from the select's two cores); the command line asks for one BLAS thread,
    so no worker thread exists, and a user's own OPENBLAS_NUM_THREADS is kept."""
    import os

    code = ("import os, laionface.cli, numpy; "
            "print(os.environ['OPENBLAS_NUM_THREADS'], len(os.listdir('/proc/self/task')))")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    ours = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert ours.stdout.split() == ["1", "1"], (ours.stdout, ours.stderr[-2000:])
    theirs = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, "OPENBLAS_NUM_THREADS": "2"})
    assert theirs.stdout.split()[0] == "2", theirs.stdout


def test_select_imports_with_the_collector_paused_then_frozen_and_running(tmp_path):
    """The collector walking polars/pyarrow/numpy's objects as they import cost 20-30 ms of a
    select; after the imports it must run again (long commands make cycles) with the imported
    objects frozen out of its passes."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = tmp_path / "part-00000.parquet"
    pq.write_table(pa.table({"SAMPLE_ID": [1, 2], "URL": ["http://a/1.jpg", "http://a/2.jpg"], "TEXT": ["a", "b"],
                             "HEIGHT": [10.0, 10.0], "WIDTH": [10.0, 10.0], "LICENSE": ["?", "?"], "NSFW": ["UNLIKELY"] * 2,
                             "similarity": [0.3, 0.3]}), meta)
    code = ("import atexit, gc, sys; from laionface.cli import console; "
            "atexit.register(lambda: print('gc', gc.isenabled(), gc.get_freeze_count() > 50_000)); "
            f"sys.argv = ['laionface', 'select', '--meta', {str(meta)!r}, '--out', {str(tmp_path / 'run')!r}]; console()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "gc True True", proc.stdout
