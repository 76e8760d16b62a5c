"""Harness of the tests that run tgpool in several processes (test_ddp.py, test_tune_distributed.py,
test_cache_faults.py).

- ``spawn_ranks(worker, root)``: two torch.distributed ranks on CPU (torch.multiprocessing spawn),
  each calling ``worker(rank, root, port)``; skips the test where gloo is not available.
  ``gloo_group(rank, port)``: a rank's process group, destroyed on the way out.
- ``python_child(code, *argv)``: ``python -c code`` in the repository root, with tests/ on its
  import path, its stdout and stderr captured as text.
- ``FakePlan``, ``GPU``, ``PROBLEM``: what the tuner reads of a kernel launch, without tensors,
  for the processes that tune (importable by the children, which cannot import a test's locals).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tgpool.tuning import tuner

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

# --- torch.distributed ranks ----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(worker, root: Path, nprocs: int = 2) -> None:
    """Runs ``worker(rank, str(root), port)`` in ``nprocs`` spawned processes and waits for all
    (a failing rank fails the test); skips where torch.distributed has no gloo backend."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(worker, args=(str(root), free_port()), nprocs=nprocs, join=True)


def run_ranks(worker, root: Path, nprocs: int = 2) -> list:
    """``spawn_ranks``, then what each rank saved to ``root / f"rank{r}.pt"`` (torch.save)."""
    spawn_ranks(worker, root, nprocs)
    return [torch.load(root / f"rank{r}.pt") for r in range(nprocs)]


@contextlib.contextmanager
def gloo_group(rank: int, port: int, world_size: int = 2):
    """In a spawned rank: joins the gloo process group on ``port`` (the rendezvous on the
    loopback interface), and leaves it at the end of the block."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


# --- plain python children ------------------------------------------------------------------------


def python_child(code: str, *argv: str) -> subprocess.Popen:
    """``python -c code *argv`` started in the repository root; it can import tests/ modules."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- what the tuning processes tune ---------------------------------------------------------------

GPU = tuner.DeviceInfo("Test GPU", "9.0")
PROBLEM = {"outer": 4096, "inner": 64, "dtype": "float16"}


@dataclasses.dataclass
class FakePlan:
    """What the tuner reads of a KernelLaunch (no tensors: nothing is launched)."""

    variant: str
    family: str = "window_pool_fwd"
    problem: dict = dataclasses.field(default_factory=lambda: dict(PROBLEM))
    args: tuple = ()
    ctx: dict = dataclasses.field(default_factory=dict)
