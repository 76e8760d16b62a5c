"""What ``tgpool tune`` tunes: the launches of a workload, recorded as they are planned.

A workload is a shapes file (a JSON list of pooling calls) or a model (``module:factory`` and an
input shape, one forward and backward). Either runs through tgpool's public functions, and the
launch provider (launch.current_plan) records every KernelLaunch planned on the way, so any kernel
family planned as a KernelLaunch is recorded without this module knowing it.

``record`` runs the workload on the GPU: the recorded launches hold real tensors (inputs, saved
indices) that the tuner launches again. ``record_planned`` runs it on meta tensors for
``--dry-run``, anywhere: tgpool's ops are sent to their real implementations (which plan on meta
tensors exactly as on real ones) with every kernel launch skipped.

Shapes file: ``[{"op": "max_pool2d", "input_shape": [8, 64, 112, 112], "kernel_size": 3,
"stride": 2, "padding": 1, "dtype": "float16", "layout": "channels_last", "backward": true}, ...]``;
``op`` is any function of ``tgpool`` (or ``tgpool.functional``), the keys other than op,
input_shape, dtype, layout and backward are its keyword arguments; dtype defaults to ``--dtype``,
layout to "contiguous", backward to true.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .. import launch, runtime

LAYOUTS = ("contiguous", "channels_last")
CALL_KEYS = ("op", "input_shape", "dtype", "layout", "backward")


class WorkloadError(ValueError):
    """A shapes file, model spec or input shape that cannot be used (a usage error)."""


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise WorkloadError(f"unknown dtype {name!r}")
    return dtype


def _function(op: str) -> Callable:
    import tgpool

    fn = getattr(tgpool, op, None) or getattr(tgpool.functional, op, None)
    if not callable(fn) or op.startswith("_"):
        raise WorkloadError(f"unknown op {op!r}: not a function of tgpool")
    return fn


def load_calls(path: str | Path) -> list[dict]:
    """The calls of a shapes file, checked (WorkloadError says what is wrong)."""
    try:
        calls = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise WorkloadError(f"cannot read shapes file {path}: {e}") from None
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise WorkloadError(f"{path}: expected a JSON list of objects (one per pooling call)")
    for i, call in enumerate(calls):
        if "op" not in call or "input_shape" not in call:
            raise WorkloadError(f'{path}: call {i} needs "op" and "input_shape"')
        _function(call["op"])
        if call.get("layout", "contiguous") not in LAYOUTS:
            raise WorkloadError(f"{path}: call {i}: layout must be one of {LAYOUTS}")
        if "dtype" in call:
            _dtype(call["dtype"])
    return calls


def describe_call(call: dict) -> str:
    """E.g. "max_pool2d 8x64x112x112 kernel_size=3 stride=2"."""
    args = " ".join(f"{k}={v}" for k, v in call.items() if k not in CALL_KEYS)
    shape = "x".join(map(str, call["input_shape"]))
    return f"{call['op']} {shape} {args}".strip()


def _input(shape, dtype, device, channels_last: bool, grad: bool) -> torch.Tensor:
    x = torch.randn(tuple(shape), dtype=dtype, device=device)
    if channels_last and x.dim() in (4, 5):
        x = x.contiguous(
            memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        )
    return x.requires_grad_(grad)


def _backward(out) -> None:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    loss = [o.float().sum() for o in outs if isinstance(o, torch.Tensor) and o.requires_grad]
    if loss:
        torch.stack(loss).sum().backward()


def calls_workload(calls: list[dict], dtype: str) -> Callable[[str], None]:
    """A function of the device that runs every call (forward, and backward where asked)."""

    def run(device: str) -> None:
        for call in calls:
            kwargs = {k: v for k, v in call.items() if k not in CALL_KEYS}
            grad = bool(call.get("backward", True))
            x = _input(
                call["input_shape"],
                _dtype(call.get("dtype", dtype)),
                device,
                call.get("layout") == "channels_last",
                grad,
            )
            out = _function(call["op"])(x, **kwargs)
            if grad:
                _backward(out)

    return run


def model_workload(spec: str, input_shape, dtype: str, channels_last: bool):
    """A function of the device that runs one forward and backward of ``module:factory()``."""
    module_name, _, factory_name = spec.partition(":")
    if not module_name or not factory_name:
        raise WorkloadError(f"--model expects module:factory, got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:  # as `python -c` would find it
        sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as e:
        raise WorkloadError(f"cannot load model factory {spec!r}: {e}") from None
    torch_dtype = _dtype(dtype)

    def run(device: str) -> None:
        with torch.device(device):
            model = factory()
        model = model.to(device=device, dtype=torch_dtype)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        _backward(model(_input(input_shape, torch_dtype, device, channels_last, True)))

    return run


@contextlib.contextmanager
def recording():
    """Collect every KernelLaunch planned inside the block; configs are chosen as usual."""
    plans: list = []
    previous = launch.get_provider()

    def provider(family, variant, problem):
        plan = launch.current_plan()
        if plan is not None:
            plans.append(plan)
        return previous(family, variant, problem) if previous is not None else None

    launch.set_provider(provider)
    try:
        yield plans
    finally:
        launch.set_provider(previous)


def record(workload: Callable[[str], None], device: str = "cuda") -> list:
    """The launches ``workload`` plans on ``device``, in order (it runs for real)."""
    with recording() as plans:
        workload(device)
    return plans


class _PlanOnMeta(TorchDispatchMode):
    """Sends ``tgpool::`` ops on meta tensors to their real implementations (which plan their
    launches on meta tensors) instead of their fake ones."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "namespace", None) == "tgpool":
            from torch._library.custom_ops import OPDEFS

            opdef = OPDEFS.get(func._schema.name)
            if opdef is not None:
                return opdef._init_fn(*args, **kwargs)
        return func(*args, **kwargs)


def record_planned(workload: Callable[[str], None]) -> list:
    """The launches ``workload`` would plan, found on meta tensors, launching nothing."""
    real_uses_triton, real_launch = runtime.uses_triton, runtime.launch_with
    runtime.uses_triton = lambda x: x.device.type == "meta" or real_uses_triton(x)
    runtime.launch_with = lambda *args: None  # runtime.launch and plan replays both call it
    try:
        with recording() as plans, _PlanOnMeta():
            workload("meta")
    finally:
        runtime.uses_triton, runtime.launch_with = real_uses_triton, real_launch
    return plans
