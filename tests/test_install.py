"""A non-editable install works: the wheel carries the templates and the autotune cache, and an
installed tgpool, in a fresh virtual environment and away from the checkout, finds them and runs a
generated kernel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jinja2
import pytest
import torch
import triton

ROOT = Path(__file__).resolve().parents[1]

# Not copied into the build tree: environments, caches, VCS data, earlier build outputs.
_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".tgpool-cache",
    ".whl",
)

# Runs inside the fresh environment, from a temporary working directory.
_CHECK = r"""
import json, sys
from pathlib import Path

import torch
import torch.nn.functional as F

import tgpool
from tgpool import codegen, resources, runtime

x = torch.randn(2, 3, 9, 8)
y = tgpool.max_pool2d(x, 3, stride=2, padding=1)
z = tgpool.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False)
print(json.dumps({
    "prefix": sys.prefix,
    "tgpool": tgpool.__file__,
    "templates": str(resources.templates_dir()),
    "template_names": sorted(p.name for p in resources.templates_dir().iterdir()),
    "autotune_cache": str(resources.autotune_cache_dir()),
    "autotune_names": sorted(p.name for p in resources.autotune_cache_dir().iterdir()),
    "kernel_files": sorted(p.name for p in codegen.kernel_dir().iterdir()),
    "launches": dict(runtime.launch_counts),
    "max_ok": torch.equal(y, F.max_pool2d(x, 3, stride=2, padding=1)),
    "avg_ok": torch.allclose(z, F.avg_pool2d(x, 2, ceil_mode=True, count_include_pad=False)),
}))
"""


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the checkout, so the build's own folders (build/, *.egg-info) never
    land in the working tree."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_IGNORE)
    out = tmp_path / "wheelhouse"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "-w",
            out,
            src,
        ]
    )
    (wheel,) = out.glob("tgpool-*.whl")
    return wheel


def _install(wheel: Path, venv: Path) -> Path:
    """Install ``wheel`` into ``venv`` with this interpreter's pip; returns its site-packages."""
    python = venv / "bin" / "python"
    purelib = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            wheel,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 and "--python" in proc.stderr:  # a pip older than 22.3
        purelib.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(purelib)
    else:
        assert proc.returncode == 0, proc.stderr
    return purelib


def test_wheel_in_fresh_venv(tmp_path):
    try:
        import setuptools  # noqa: F401  (the build backend, used without isolation)
    except ImportError:
        pytest.fail("setuptools is needed to build the wheel: pip install -e '.[dev]'")

    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {n for n in names if n.startswith("tgpool/_templates/") and n.endswith(".jinja")}
    expected = {f"tgpool/_templates/{p.name}" for p in (ROOT / "templates").glob("*.jinja")}
    assert expected and templates == expected, sorted(names)
    assert "tgpool/_autotune_cache/README.md" in names, sorted(names)
    assert not any(n.startswith(("templates/", "autotune_cache/", "tests/")) for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    purelib = _install(wheel, venv)
    assert (purelib / "tgpool" / "_templates" / "window_pool_fwd.py.jinja").is_file()

    # torch, triton and jinja2 come from this environment, after the fresh one's own
    # site-packages. A plain path line in a .pth: the outer site-packages' own .pth files (the
    # editable tgpool finder among them) are not run.
    deps = []
    for mod in (torch, triton, jinja2):
        d = str(Path(mod.__file__).resolve().parents[1])
        if d not in deps:
            deps.append(d)
    (purelib / "zz_outer_site_packages.pth").write_text("".join(f"{d}\n" for d in deps))

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(TRITON_INTERPRET="1", TGPOOL_CACHE_DIR=str(tmp_path / "cache"), PYTHONNOUSERSITE="1")
    proc = _run([venv / "bin" / "python", "-c", _CHECK], cwd=cwd, env=env)
    got = json.loads(proc.stdout.strip().splitlines()[-1])

    prefix = Path(got["prefix"]).resolve()
    assert prefix == venv.resolve()
    for key in ("tgpool", "templates", "autotune_cache"):
        path = Path(got[key]).resolve()
        assert path.is_relative_to(prefix), f"{key} came from {path}, not the fresh venv"
        assert not path.is_relative_to(ROOT), f"{key} came from the checkout: {path}"
    assert "window_pool_fwd.py.jinja" in got["template_names"]
    assert set(got["template_names"]) >= {p.rsplit("/", 1)[1] for p in expected}
    assert "README.md" in got["autotune_names"]
    assert got["launches"].get("max_pool2d_fwd_rows", 0) >= 1, got["launches"]
    assert got["launches"].get("avg_pool2d_fwd_rows", 0) >= 1, got["launches"]
    assert any(f.startswith("window_pool_fwd_") for f in got["kernel_files"])
    assert got["max_ok"] and got["avg_ok"]
