"""The ``tgpool`` command line: --help everywhere, exit codes (0 success, 1 a failed check, 2 usage
errors and a missing GPU, with a one-line reason), tune --dry-run, cache, list and inspect."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tgpool.aot import families
from tgpool.cli import commands as cli
from tgpool.launch import LaunchConfig
from tgpool.tuning import cache as tune_cache

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["demo"],
    ["codegen"],
    ["inspect"],
    ["list"],
    ["tune"],
    ["cache"],
    ["cache", "show"],
    ["cache", "export"],
    ["cache", "import"],
    ["cache", "clear"],
]
CALLS = [
    {"op": "max_pool2d", "input_shape": [2, 8, 16, 16], "kernel_size": 3, "stride": 2},
    {"op": "avg_pool2d", "input_shape": [2, 8, 16, 16], "kernel_size": 2, "backward": False},
    {"op": "max_pool2d", "input_shape": [2, 8, 15, 15], "kernel_size": 3, "stride": 2},
]


def run(capsys, *argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``tgpool argv`` in this process."""
    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TGPOOL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def shapes(tmp_path):
    path = tmp_path / "shapes.json"
    path.write_text(json.dumps(CALLS))
    return path


def test_console_script_help():
    done = subprocess.run(
        [sys.executable, "-m", "tgpool", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0
    for command in ("demo", "codegen", "inspect", "list", "tune", "cache"):
        assert command in done.stdout


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_every_subcommand_has_help(capsys, argv):
    code, out, _ = run(capsys, *argv, "--help")
    assert code == 0 and out.startswith("usage: tgpool " + " ".join(argv))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["tune"],  # neither a shapes file nor --model
        ["tune", "shapes.json", "--model", "m:f"],
        ["tune", "s.json", "--repeats", "0"],
        ["cache"],
        ["inspect", "--arch", "sm_70"],
        ["codegen", "max_pool2d"],  # no --kernel-size
    ],
    ids=lambda a: " ".join(a) or "nothing",
)
def test_usage_errors_exit_2(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2 and "error" in err


def test_inspect_without_a_kernel_size_exits_2(capsys):
    code, out, err = run(capsys, "inspect", "max_pool2d")
    assert code == 2 and out == ""
    assert err.strip() == "tgpool inspect: max_pool2d needs --kernel-size"


def test_inspect_rejects_a_bad_window_before_compiling(capsys):
    code, _, err = run(capsys, "inspect", "avg_pool2d", "--kernel-size", "2", "--dilation", "2")
    assert code == 2 and "dilation" in err
    code, _, err = run(capsys, "inspect", "max_pool2d", "--kernel-size", "3", "--padding", "2")
    assert code == 2 and "pad" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_tune_without_a_gpu_exits_2_with_one_line(capsys, shapes, cache_dir):
    code, out, err = run(capsys, "tune", str(shapes))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "no CUDA GPU" in err and "--dry-run" in err


def test_tune_dry_run_lists_each_key_once(capsys, shapes, cache_dir):
    code, out, _ = run(capsys, "tune", str(shapes), "--dry-run")
    assert code == 0
    lines = out.splitlines()
    # max k3 s2 forward and backward at two sizes in one bucket, avg k2 forward: three keys
    assert lines[0].startswith("would tune 3 launch configs")
    rows = lines[3:]
    assert len(rows) == 3
    assert sum("window_pool_fwd max k3x3 s2x2" in r for r in rows) == 1
    assert sum("window_pool_bwd max k3x3 s2x2" in r for r in rows) == 1
    assert sum("window_pool_fwd avg k2x2" in r for r in rows) == 1
    fwd = next(r for r in rows if "window_pool_fwd max" in r)
    assert re.search(r"\]\s+2\s+\d+x\d+ w\d+ s\d+ \(heuristic\)$", fwd)  # 2 launches, untuned


def test_tune_dry_run_of_a_model(capsys, cache_dir, tmp_path, monkeypatch):
    (tmp_path / "dry_model.py").write_text(
        "import torch, tgpool\n"
        "def small():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), tgpool.nn.MaxPool2d(2),\n"
        "                               tgpool.nn.AvgPool2d(2))\n"
    )
    monkeypatch.chdir(tmp_path)
    argv = ["tune", "--model", "dry_model:small", "--input-shape", "2,3,18,18", "--dry-run"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and out.startswith("would tune 4 launch configs")
    for family, variant in [("fwd", "max k2x2"), ("bwd", "max k2x2"), ("fwd", "avg k2x2")]:
        assert f"window_pool_{family} {variant}" in out
    code, _, err = run(capsys, "tune", "--model", "dry_model:missing", "--input-shape", "1,3,8,8")
    assert code == 2 and "missing" in err


@pytest.mark.parametrize(
    "content,reason",
    [
        ("{not json", "cannot read"),
        ('{"op": "max_pool2d"}', "JSON list"),
        ('[{"op": "max_pool2d"}]', "input_shape"),
        ('[{"op": "no_such_pool", "input_shape": [1, 1, 4, 4]}]', "unknown op"),
        ('[{"op": "max_pool2d", "input_shape": [1, 1, 4, 4], "layout": "nhwc"}]', "layout"),
    ],
)
def test_bad_shapes_files_exit_2(capsys, tmp_path, content, reason):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, _, err = run(capsys, "tune", str(path), "--dry-run")
    assert code == 2 and reason in err and len(err.strip().splitlines()) == 1


def _entries(n: int) -> dict:
    found = {}
    for i in range(n):
        key = tune_cache.TuneKey(
            "Test GPU",
            "9.0",
            "3.9.0",
            "window_pool_fwd",
            "0" * 16,
            f"v{i}",
            "float16",
            "",
            (64, 64),
        )
        config = LaunchConfig(8, 64, 2)
        found[key.text] = tune_cache.make_entry(key, config, config, {config: 1.0})
    return found


def test_cache_show_export_import_clear(capsys, cache_dir, tmp_path):
    tune_cache.merge_into(cache_dir / "autotune.json", _entries(3))
    code, out, _ = run(capsys, "cache", "show")
    assert code == 0 and "(3 entries)" in out and out.count("8x64 w2 s1") == 3
    exported = tmp_path / "test-gpu.json"
    code, out, _ = run(capsys, "cache", "export", str(exported), "--gpu", "Test GPU")
    assert code == 0 and len(tune_cache.parse(exported.read_text(), exported)) == 3
    code, out, _ = run(capsys, "cache", "clear")
    assert code == 0 and "cleared 3 entries" in out
    assert tune_cache.read_entries(cache_dir / "autotune.json") == {}
    code, out, _ = run(capsys, "cache", "import", str(exported))
    assert code == 0 and "imported 3 of 3" in out
    assert len(tune_cache.read_entries(cache_dir / "autotune.json")) == 3


def test_cache_import_of_a_bad_file_exits_2(capsys, cache_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "tgpool-autotune", "format": 7, "entries": {}}')
    code, _, err = run(capsys, "cache", "import", str(bad))
    assert code == 2 and "format 7" in err
    code, _, err = run(capsys, "cache", "import", str(tmp_path / "missing.json"))
    assert code == 2


def test_list_names_every_family_and_op(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for name, family in families.FAMILIES.items():
        assert name in out and family.description in out
    for op in families.ops():
        assert f"  {op}\n" in out


def test_every_family_example_plans_its_family():
    from tgpool import aot

    for name, family in families.FAMILIES.items():
        example = dict(family.example)
        plans = aot.plan_op(example.pop("op"), example.pop("input_shape"), **example)
        assert name in [p.family for p in plans], name


def test_inspect_fails_on_spills_only_when_asked(capsys, monkeypatch):
    from tgpool import aot

    report = dict(registers=64, stack=0, local=16, shared=0, loads={128: 1}, stores={128: 1})

    def fake_inspect_many(calls, **kwargs):
        return [[_report(c, **report)] for c in calls]

    monkeypatch.setattr(aot, "inspect_many", fake_inspect_many)
    code, out, err = run(capsys, "inspect", "--arch", "sm_80")
    assert code == 0 and "spills 16 bytes" in err
    code, _, _ = run(capsys, "inspect", "--arch", "sm_80", "--fail-on-spill")
    assert code == 1


def _report(call, **fields):
    from tgpool import aot

    return aot.KernelReport(
        arch=call["arch"], op=call["op"], kernel="k", layout=call["layout"], dtype="float16",
        shape=tuple(call["input_shape"]), config="8x64 w4 s1", blocked_layouts=(), signature={},
        constexprs={}, source="", asm={}, **fields,
    )  # fmt: skip


@pytest.mark.slow
def test_inspect_compiles_every_family_without_spills(capsys):
    code, out, err = run(capsys, "inspect", "--arch", "sm_80", "--fail-on-spill")
    assert code == 0, err
    head, _, *rows = out.splitlines()
    # one row per launch of each family's example (split rows, separable passes: several)
    from tgpool import aot

    launches = 0
    for family in families.FAMILIES.values():
        example = dict(family.example)
        launches += len(aot.plan_op(example.pop("op"), example.pop("input_shape"), **example))
    assert len(rows) == launches

    for kernel in (
        "max_pool2d_fwd_rows",
        "avg_pool2d_bwd_rows",
        "index_gather2d",
        "global_avg_fwd_flat",
        "global_max_combine_rows",
        "global_avgmax_bwd_channels_ragged",
        "max_pool2d_large_w_rows",
        "sppf_fwd",
    ):
        assert sum(kernel in r for r in rows) >= 1, kernel
    spill = head.index("spill")
    assert [r[spill : spill + 5].strip() for r in rows] == ["0"] * len(rows)


@pytest.fixture
def cpu_as_gpu(monkeypatch):
    """``tgpool tune`` as on a GPU machine, but recording on CPU tensors (the interpreter) and
    timing with a deterministic benchmark: the fastest config is the simplest non-heuristic."""
    from tgpool import launch
    from tgpool.tuning import tuner
    from tgpool.tuning import workload as tune_workload

    real_record = tune_workload.record

    def bench(plan, config):
        heuristic = launch.heuristic(plan.family, plan.variant, plan.problem)
        others = [c for c in tuner.candidates_of(plan) if c != heuristic]
        return 0.5 if config == others[0] else 1.0

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tune_workload, "record", lambda w, device="cuda": real_record(w, "cpu"))
    monkeypatch.setattr(tuner, "cuda_bench", bench)


def test_tune_prints_its_table_and_exports_the_shipped_format(
    capsys, cpu_as_gpu, cache_dir, tmp_path
):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(CALLS[:1]))
    exported = tmp_path / "export.json"
    code, out, err = run(capsys, "tune", str(path), "--repeats", "1", "--export", str(exported))
    assert code == 0, err
    rows = [r for r in out.splitlines() if r.startswith("window_pool_")]
    assert len(rows) == 2 and all(re.search(r"2\.00x\s+tuned$", r) for r in rows)
    assert "[" in err and "2/2" in err  # the progress bar
    entries = tune_cache.parse(exported.read_text(), exported)
    assert {e["family"] for e in entries.values()} == {"window_pool_fwd", "window_pool_bwd"}
    code, out, _ = run(capsys, "tune", str(path), "--repeats", "1", "--quiet")
    rows = [r for r in out.splitlines() if r.startswith("window_pool_")]
    assert code == 0 and all(r.endswith("user") for r in rows)  # cached: not measured again


def test_cache_clear_on_an_unwritable_folder_exits_2_and_keeps_the_file(
    capsys, cache_dir, monkeypatch
):
    path = cache_dir / "autotune.json"
    tune_cache.merge_into(path, _entries(2))
    before = path.read_bytes()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(cache_dir))

    monkeypatch.setattr("os.replace", refuse)  # a read-only folder, also when tests run as root
    code, out, err = run(capsys, "cache", "clear")
    assert code == 2 and err.startswith("tgpool cache clear:") and "Permission denied" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert path.read_bytes() == before
