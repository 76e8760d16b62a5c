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
import threading
import time
from collections import Counter

import torch

launch_counts: Counter = Counter()
_records: list | None = None
_stubbed = 0
_thread = threading.local()

#: the environment variables that change what tgpool plans and launches (a launch plan's key
#: holds their values: tgpool/plans.py)
SETTINGS = (
    "TRITON_INTERPRET",
    "TGPOOL_AUTOTUNE",
    "TGPOOL_CACHE_DIR",
    "TGPOOL_DIRECT_LAUNCH",
    "TGPOOL_TRACE_KERNELS",
    "XDG_CACHE_HOME",
)
_TRUE = ("1", "true", "on", "yes")
_FALSE = ("0", "false", "off", "no")
# os.environ keeps its encoded variables in a dict: reading it directly costs tens of
# nanoseconds where os.environ.get costs about a microsecond (it encodes the key every time)
_env = getattr(os.environ, "_data", None)
_encode = getattr(os.environ, "encodekey", None)
if not isinstance(_env, dict) or _encode is None:
    _env = None
_KEYS = tuple(_encode(k) for k in SETTINGS) if _env is not None else ()


def settings() -> tuple:
    """The values of ``SETTINGS`` now (raw, None when unset), in that order."""
    if _env is not None:
        return tuple(map(_env.get, _KEYS))
    return tuple(os.environ.get(k) for k in SETTINGS)


def setting(name: str):
    """The environment variable ``name`` now (None when unset)."""
    if _env is not None and not torch.compiler.is_compiling():
        value = _env.get(_encode(name))
        return None if value is None else os.fsdecode(value)
    return os.environ.get(name)


def flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to 1 / true / on / yes."""
    return switch(name) is True


def switch(name: str) -> bool | None:
    """The environment variable ``name`` as a switch: True (1 / true / on / yes), False
    (0 / false / off / no), or None (unset, or anything else: the default applies)."""
    value = setting(name)
    if value is None:
        return None
    value = value.lower()
    return True if value in _TRUE else False if value in _FALSE else None


_INTERPRET = _encode("TRITON_INTERPRET") if _env is not None else None
_TRUE_BYTES = tuple(v.encode() for v in _TRUE)


def interpreter_enabled() -> bool:
    """Whether TRITON_INTERPRET is on (read on every call: tests and tools switch it)."""
    if _env is not None and not torch.compiler.is_compiling():  # Dynamo traces os.environ
        value = _env.get(_INTERPRET)
        return value is not None and value.lower() in _TRUE_BYTES
    return flag("TRITON_INTERPRET")


def uses_triton(x: torch.Tensor) -> bool:
    """Whether tgpool runs its generated kernels for a tensor on ``x``'s device."""
    if x.is_cuda:
        return True
    return x.is_cpu and interpreter_enabled()


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


@contextlib.contextmanager
def launches_stubbed():
    """Inside the block, launches are counted, recorded and planned as usual, but no kernel runs:
    what is left is tgpool's own host work per call (``tgpool bench --overhead``)."""
    global _stubbed
    _stubbed += 1
    try:
        yield
    finally:
        _stubbed -= 1


def plan_recording():
    """The launch-plan recording in progress on this thread (tgpool/plans.py), or None."""
    return getattr(_thread, "plan_recording", None)


def set_plan_recording(recording) -> None:
    _thread.plan_recording = recording


def traced_launch():
    """What takes this thread's launches while an op is traced into its kernels, or None."""
    return getattr(_thread, "traced_launch", None)


def set_traced_launch(traced) -> None:
    """While torch.compile traces an op into its kernels (tgpool/traced.py), ``traced`` takes
    every launch on this thread instead (None: launches run)."""
    _thread.traced_launch = traced


def launch(
    kernel, grid, args, *, meta: dict, num_warps: int, num_stages: int, variant, source, config
) -> None:
    """Launch a generated kernel and account for it."""
    options = dict(
        meta=meta,
        num_warps=num_warps,
        num_stages=num_stages,
        variant=variant,
        source=source,
        config=config,
    )
    launch_with(kernel, grid, args, options)


def launch_with(kernel, grid, args, options: dict) -> None:
    """``launch`` with its keyword arguments as one dict (what a launch plan keeps and replays)."""
    traced = getattr(_thread, "traced_launch", None)
    if traced is not None:
        traced(kernel, grid, args, options["meta"], options["num_warps"], options["num_stages"])
        return
    recording = getattr(_thread, "plan_recording", None)
    if recording is not None:
        recording.record_launch(kernel, grid, args, options)
        recording.paused += 1
        try:
            _launch(kernel, grid, args, options)
        finally:
            recording.paused -= 1
        return
    _launch(kernel, grid, args, options)


_names: dict[int, str] = {}  # id(kernel) -> its name (generated kernels are never unloaded)
_direct = None  # tgpool.direct, imported at the first direct launch


def _kernel_name(kernel) -> str:
    name = _names.get(id(kernel))
    if name is None:
        name = _names[id(kernel)] = kernel.fn.__name__ if hasattr(kernel, "fn") else kernel.__name__
    return name


def _launch(kernel, grid, args, options: dict) -> None:
    global _direct
    name = _kernel_name(kernel)
    launch_counts[name] += 1
    if _stubbed:
        if _records is not None:
            _records.append(_record(name, grid, options, 0.0))
        return
    meta, num_warps, num_stages = options["meta"], options["num_warps"], options["num_stages"]
    # a compiled specialisation is launched directly, without Triton's per-launch dispatch
    # (tgpool/direct.py); the interpreter and TGPOOL_DIRECT_LAUNCH=0 keep kernel[grid](...)
    direct = None
    if not interpreter_enabled() and switch("TGPOOL_DIRECT_LAUNCH") is not False:
        if _direct is None:
            from . import direct as _direct
        direct = _direct
    if _records is None:
        _fire(direct, kernel, grid, args, meta, num_warps, num_stages)
        return
    device = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else lambda: None
    sync()
    start = time.perf_counter()
    _fire(direct, kernel, grid, args, meta, num_warps, num_stages)
    sync()
    _records.append(_record(name, grid, options, time.perf_counter() - start))


def _fire(direct, kernel, grid, args, meta, num_warps, num_stages) -> None:
    """The launch itself: through the compiled kernel's launcher, or Triton's ``kernel[grid]``."""
    if direct is None:
        kernel[grid](*args, **meta, num_warps=num_warps, num_stages=num_stages)
    else:
        direct.launch(kernel, grid, args, meta, num_warps, num_stages)


def _record(name: str, grid, options: dict, seconds: float) -> LaunchRecord:
    variant, source, config = options["variant"], options["source"], options["config"]
    return LaunchRecord(name, str(variant), str(source), config.describe(), tuple(grid), seconds)
