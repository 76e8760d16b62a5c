"""``tgpool bench``: the tiny harness runs in-process through the interpreter and writes its CSV
(every column, every row labelled as not a timing), markdown and PNG; a case whose torch peer
computes something else fails it; --help, bad arguments and a missing GPU exit as cli/commands.py
says."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util

import pytest
import torch

from tgpool.bench import cases as bench_cases
from tgpool.bench import report as bench_report
from tgpool.bench import run as bench_run
from tgpool.cli import commands as cli
from tgpool.cli.bench import NO_GPU

TINY = ["bench", "--tiny", "--layout", "contiguous"]


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tiny_run_writes_labelled_csv_markdown_and_plot(capsys, tmp_path):
    cases = ["vgg_maxpool_2x2", "textcnn_masked_max", "gem_head"]
    argv = [*TINY, "--out", str(tmp_path), *(a for c in cases for a in ("--case", c))]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    with open(tmp_path / "tgpool-bench-tiny.csv") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == bench_report.COLUMNS
        rows = list(reader)
    assert {r["timing"] for r in rows} == {bench_run.NOT_A_TIMING}
    assert all(r["gpu"] and r["torch"] and r["triton"] and r["tgpool"] for r in rows)
    timed = [r for r in rows if r["case"] in cases]
    # 3 cases x 2 directions x (aten, compile, tuned, heuristic); no max-autotune in --tiny
    assert len(timed) == 3 * 2 * 4
    assert {r["peer"] for r in timed} == {"aten", "compile", "tgpool-tuned", "tgpool-heuristic"}
    ours = [r for r in timed if r["peer"].startswith("tgpool")]
    assert {r["matches_peer"] for r in ours} == {"yes"}
    assert {r["deterministic"] for r in ours if r["direction"] == "fwd+bwd"} == {"yes"}
    assert all(float(r["speedup_vs_aten"]) > 0 and float(r["min_bytes"]) > 0 for r in ours)
    assert {r["peer"] for r in rows if r["case"] == "GEOMEAN"} == set(bench_run.TGPOOL_PEERS)
    overhead = [r for r in rows if r["case"].startswith("overhead")]
    assert {r["peer"] for r in overhead} == {"aten", "tgpool-tuned"}
    assert all(float(r["us_per_call"]) > 0 for r in overhead)
    md = (tmp_path / "tgpool-bench-tiny.md").read_text()
    assert "NOT A TIMING" in md and "geomean (tgpool-tuned)" in md and md.strip() in out
    assert "per-call overhead" in md
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "tgpool-bench-tiny.png").stat().st_size > 0
    # a second run appends to the same CSV
    assert run(capsys, *argv)[0] == 0
    with open(tmp_path / "tgpool-bench-tiny.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * len(rows)


def test_a_case_whose_peer_differs_fails(capsys, tmp_path, monkeypatch):
    case = bench_cases.BY_NAME["vgg_maxpool_2x2"]

    def wrong(shape, device, dtype, layout):
        built = case.build(shape, device, dtype, layout)
        reference = built.torch
        built.torch = lambda t: reference(t) + 1  # not what tgpool computes
        return built

    monkeypatch.setitem(bench_cases.BY_NAME, case.name, dataclasses.replace(case, build=wrong))
    code, _, err = run(
        capsys, *TINY, "--direction", "fwd", "--case", case.name, "--out", str(tmp_path)
    )
    assert code == 1
    assert "matches peer: NO" in err


def test_help_and_usage_errors(capsys, tmp_path):
    code, out, _ = run(capsys, "bench", "--help")
    assert code == 0 and "--tiny" in out and "--out" in out
    assert run(capsys, "bench", "--tiny", "--case", "no_such_case")[0] == 2
    assert run(capsys, "bench", "--tiny", "--dtype", "int8")[0] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_without_gpu_and_without_tiny_exits_2(capsys, tmp_path):
    code, out, err = run(capsys, "bench", "--out", str(tmp_path))
    assert code == 2 and out == ""
    assert err.strip() == NO_GPU and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
