"""Where kernels run, and a record of every launch.

CUDA tensors run the generated Triton kernels. CPU tensors run them through the Triton interpreter
when ``TRITON_INTERPRET=1`` is set (before the first kernel is generated: Triton fixes the mode
when a kernel is created); otherwise CPU tensors use torch's own pooling.

Every launch increments ``launch_counts[kernel name]``; inside ``recording()`` each launch is also
kept as a ``LaunchRecord`` with its variant, config, grid and wall time (the device synchronised),
which is what ``tgpool demo`` prints and what tests use to prove the Triton path ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections import Counter

import torch

launch_counts: Counter = Counter()
_records: list | None = None


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def uses_triton(x: torch.Tensor) -> bool:
    """Whether tgpool runs its generated kernels for a tensor on ``x``'s device."""
    if x.device.type == "cuda":
        return True
    return x.device.type == "cpu" and interpreter_enabled()


@dataclasses.dataclass
class LaunchRecord:
    kernel: str
    variant: str
    source: str
    config: str
    grid: tuple
    seconds: float


@contextlib.contextmanager
def recording():
    """Collect a LaunchRecord for every launch in the block (timed: synchronises the device)."""
    global _records
    outer, _records = _records, []
    try:
        yield _records
    finally:
        collected, _records = _records, outer
        if outer is not None:
            outer.extend(collected)


def launch(
    kernel, grid, args, *, meta: dict, num_warps: int, num_stages: int, variant, source, config
) -> None:
    """Launch a generated kernel and account for it."""
    name = kernel.fn.__name__ if hasattr(kernel, "fn") else kernel.__name__
    launch_counts[name] += 1
    if _records is None:
        kernel[grid](*args, **meta, num_warps=num_warps, num_stages=num_stages)
        return
    device = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else lambda: None
    sync()
    start = time.perf_counter()
    kernel[grid](*args, **meta, num_warps=num_warps, num_stages=num_stages)
    sync()
    _records.append(
        LaunchRecord(
            name,
            str(variant),
            str(source),
            config.describe(),
            tuple(grid),
            time.perf_counter() - start,
        )
    )
