"""``tgpool bench --overhead`` (tgpool/bench/overhead.py): its cases cover every public function
family; a quick run times every column of a few cases with tgpool's kernels launched (through the
interpreter, launches stubbed after the warm-up); a case whose tgpool call launches nothing, stops
launching once timed, or raises is reported as an error and not timed; the command writes its CSV
and markdown and exits as cli/commands.py says. No timing is asserted: the targets are a
benchmark's.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tgpool
from tgpool.bench import overhead
from tgpool.cli.commands import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {
    *(f"{kind}_pool{n}d" for kind in ("max", "avg") for n in (1, 2, 3)),
    *("lp_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "global_pool", "gem"),
    *("ragged_pool", "max_unpool2d", "fractional_max_pool2d", "sppf"),
}
QUICK = ("max_pool2d_2_indices", "global_avg", "max_unpool2d")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = cli_main(list(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cases_cover_every_public_function_family():
    calls = [c.call for c in overhead.CASES]
    families = {call.split("(")[0] for call in calls}
    assert families == FAMILIES
    assert all(callable(getattr(tgpool, f)) for f in families)
    assert {'global_pool(x, "avg")', 'global_pool(x, "max")'} <= set(calls)
    assert {"adaptive_avg_pool2d(x, 1)", "adaptive_avg_pool2d(x, 4)"} <= set(calls)
    assert len(overhead.BY_NAME) == len(overhead.CASES)  # names are unique


def test_quick_run_times_every_column_with_tgpool_kernels_launched():
    opts = overhead.Options.quick(cases=QUICK, device="cpu")
    rows = overhead.run(opts, progress=lambda s: None)
    assert [(r.case, r.column) for r in rows] == [(c, k) for c in QUICK for k in overhead.COLUMNS]
    for r in rows:
        assert r.error == "", r.error
        assert r.tgpool_us > 0 and r.aten_us > 0 and r.ratio > 0
        assert r.launches_per_call >= 1 and r.tgpool_calls >= 1 and r.rounds == opts.rounds
    by = {(r.case, r.column): r for r in rows}
    for case in QUICK:  # the backward launches kernels of its own
        assert by[case, "fwd+bwd"].launches_per_call > by[case, "fwd"].launches_per_call
    summary = overhead.summary(rows)
    assert all(math.isfinite(summary[k]) and summary[k] > 0 for k in (*overhead.COLUMNS, "all"))
    assert summary["worst"] in rows
    env = overhead.environment("cpu")
    table = overhead.table(rows, env, opts)
    assert table.startswith(f"tgpool bench --overhead: {overhead.CPU_MODE}")
    assert all(overhead.BY_NAME[c].call in table for c in QUICK) and "ERROR" not in table
    records = overhead.csv_records(rows, env)
    assert len(records) == len(rows) + len(overhead.COLUMNS) + 1  # + geomeans
    assert all(set(rec) <= set(overhead.CSV_COLUMNS) for rec in records)


def _replaced(monkeypatch, name: str, **fields) -> overhead.Case:
    case = dataclasses.replace(overhead.BY_NAME[name], **fields)
    monkeypatch.setitem(overhead.BY_NAME, name, case)
    return case


def test_a_case_whose_tgpool_call_launches_nothing_is_an_error(capsys, monkeypatch, tmp_path):
    case = _replaced(monkeypatch, "avg_pool2d_2", tgpool=overhead.BY_NAME["avg_pool2d_2"].torch)
    rows = overhead.run(overhead.Options.quick(cases=(case.name,)), progress=lambda s: None)
    assert len(rows) == len(overhead.COLUMNS)
    for r in rows:
        assert "no tgpool kernel ran" in r.error and r.tgpool_us is None and r.ratio is None
    assert overhead.summary(rows)["worst"] is None
    code, out, err = run_cli(
        capsys,
        "bench",
        "--overhead",
        "--quick",
        "--overhead-case",
        case.name,
        "--out",
        str(tmp_path),
    )
    assert code == 1
    assert "no tgpool kernel ran" in err and "ERROR" in out


def test_timed_calls_that_stop_launching_are_an_error(monkeypatch):
    real = overhead.BY_NAME["max_pool2d_3_2_1"]
    calls = []

    def first_call_only(t):  # tgpool's kernel for the warm-up, ATen's call once timed
        calls.append(1)
        return (real.tgpool if len(calls) == 1 else real.torch)(t)

    case = _replaced(monkeypatch, real.name, tgpool=first_call_only)
    row = overhead.measure(case, "fwd", overhead.Options.quick(), "cpu")
    assert "timed tgpool calls" in row.error and row.tgpool_us is None


def test_a_case_that_raises_is_reported_and_the_run_goes_on(monkeypatch):
    def boom(t):
        raise RuntimeError("boom\nsecond line")

    _replaced(monkeypatch, "avg_pool1d_2", tgpool=boom)
    opts = overhead.Options.quick(cases=("avg_pool1d_2", "global_max"))
    rows = overhead.run(opts, progress=lambda s: None)
    assert [r.error for r in rows[:3]] == [f"{c}: RuntimeError: boom" for c in overhead.COLUMNS]
    assert all(r.error == "" and r.ratio > 0 for r in rows[3:])


def test_the_cpu_mode_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        overhead.run(overhead.Options.quick(device="cpu"))


def test_command_writes_csv_and_markdown(tmp_path):
    """As a user runs it, in a fresh process: without CUDA it re-runs with TRITON_INTERPRET=1."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TGPOOL_CACHE_DIR"] = str(tmp_path / "cache")
    cases = ("max_pool2d_3_2_1", "global_avg")
    argv = ["bench", "--overhead", "--quick", "--out", str(tmp_path / "out")]
    argv += [a for c in cases for a in ("--overhead-case", c)]
    done = subprocess.run(
        [sys.executable, "-m", "tgpool", *argv], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert done.returncode == 0, done.stderr
    stem = "tgpool-overhead" if torch.cuda.is_available() else "tgpool-overhead-cpu"
    with open(tmp_path / "out" / f"{stem}.csv") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == overhead.CSV_COLUMNS
        records = list(reader)
    timed = [r for r in records if r["case"] != "GEOMEAN"]
    assert [(r["case"], r["column"]) for r in timed] == [
        (c, k) for c in cases for k in overhead.COLUMNS
    ]
    assert all(float(r[k]) > 0 for r in timed for k in ("tgpool_us", "aten_us", "ratio"))
    assert {r["column"] for r in records if r["case"] == "GEOMEAN"} == {*overhead.COLUMNS, "all"}
    md = (tmp_path / "out" / f"{stem}.md").read_text()
    assert md.strip() in done.stdout
    if not torch.cuda.is_available():
        assert overhead.CPU_MODE in md


@pytest.mark.parametrize(
    "argv",
    [
        ["--quick"],
        ["--overhead-rounds", "3"],
        ["--overhead", "--tiny"],
        ["--overhead", "--case", "vgg_maxpool_2x2"],
        ["--overhead", "--overhead-rounds", "0"],
        ["--overhead", "--overhead-case", "no_such_case"],
    ],
    ids=" ".join,
)
def test_usage_errors_exit_2(capsys, tmp_path, argv):
    code, out, err = run_cli(capsys, "bench", *argv, "--out", str(tmp_path / "out"))
    assert code == 2 and out == "" and err
    assert not (tmp_path / "out").exists()
