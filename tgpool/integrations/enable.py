"""``tgpool.enable()``: every pooling computation of an unmodified model runs on tgpool's kernels.

``patch`` swaps pooling modules; ``enable`` reaches what module swapping cannot: functional calls
(``F.max_pool2d`` inside a block, ``F.adaptive_avg_pool2d`` heads), subclasses whose forward calls
``F.*``, and global pooling written as a reduction (``x.mean((2, 3))``, ``x.mean(dim=1)`` over
tokens). It registers a Python kernel over each ATen operator in ``routes.ROUTES`` at the autograd
dispatch key of CUDA (and of the CPU while ``TRITON_INTERPRET=1``: how it is tested here). The
kernel runs the tgpool function the route names, whose outputs carry tgpool's autograd
(deterministic gathers); a call tgpool cannot serve runs ATen's own kernel for that key, as if
tgpool were not enabled (``strict=True`` raises instead), and the report says which and why.

What stays ATen's, by design:

- under ``torch.compile`` and ``torch.export`` the traced tensors are fake, and the graph keeps
  ATen's ops: Inductor lowers and fuses pooling itself, the fast choice inside a compiled graph
  (tgpool's own functions and ``tgpool.patch`` put tgpool's kernels there instead). A backend that
  runs the graph's ATen ops eagerly (``aot_eager``) has them routed like any call;
- ``torch.inference_mode`` skips autograd keys, so calls inside it are ATen's;
- a call made from inside a routed call (tgpool's own use of torch ops).

A reduction that is not global pooling (``x.mean(-1)`` over a 2-D tensor, ``x.sum()``) pays the
Python kernel's check and falls through: about 3-4 us more per call on this project's CPU
(``tgpool bench --overhead`` prints it); no other operator is touched.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import threading
import warnings

import torch

from .. import runtime
from .routes import ROUTES

_thread = threading.local()
_lock = threading.RLock()


@dataclasses.dataclass
class EnableReport:
    """What ``enable`` routed (calls per ATen op) and what fell through to ATen, with why."""

    routed: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    fell_through: dict = dataclasses.field(default_factory=dict)  # op -> Counter(reason)

    def ops(self) -> list[str]:
        return sorted(set(self.routed) | set(self.fell_through))

    def fell_through_count(self, op: str | None = None) -> int:
        reasons = [self.fell_through.get(op, {})] if op else self.fell_through.values()
        return sum(sum(c.values()) for c in reasons)

    def table(self) -> str:
        lines = [f"{'ATen op':28s} {'routed':>7s} {'ATen':>6s}  why ATen kept a call"]
        for op in self.ops():
            reasons = self.fell_through.get(op, collections.Counter())
            why = "; ".join(f"{r} ({n})" for r, n in reasons.most_common())
            lines.append(f"{op:28s} {self.routed[op]:7d} {sum(reasons.values()):6d}  {why}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


class _State:
    def __init__(self):
        self.depth = 0  # nested enable() / enabled() blocks
        self.library = None
        self.reports: list[EnableReport] = []  # every open report counts each call
        self.strict: list[bool] = []


_STATE = _State()


def is_enabled() -> bool:
    return _STATE.depth > 0


def enable(*, strict: bool = False) -> EnableReport:
    """Route pooling to tgpool's kernels until ``disable()``; returns the report it fills."""
    with _lock:
        if _STATE.library is None:
            _STATE.library = _register()
        _STATE.depth += 1
        report = EnableReport()
        _STATE.reports.append(report)
        _STATE.strict.append(strict)
        return report


def disable() -> None:
    """Undo the last ``enable()``; the last one restores ATen's kernels (no-op when disabled)."""
    with _lock:
        if _STATE.depth == 0:
            return
        _STATE.depth -= 1
        _STATE.reports.pop()
        _STATE.strict.pop()
        if _STATE.depth == 0:
            _STATE.library._destroy()
            _STATE.library = None


@contextlib.contextmanager
def enabled(*, strict: bool = False):
    """``with tgpool.enabled() as report:`` routes pooling inside the block."""
    report = enable(strict=strict)
    try:
        yield report
    finally:
        disable()


def _keys() -> list[str]:
    keys = ["AutogradCUDA"]
    if runtime.interpreter_enabled():
        keys.append("AutogradCPU")
    return keys


def _register():
    library = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        # "Overriding a previously registered kernel": that is the point
        warnings.simplefilter("ignore", UserWarning)
        for key in _keys():
            keyset = torch._C.DispatchKeySet(key)
            for name, route in ROUTES.items():
                original = torch.library.get_kernel(f"aten::{name}", key)
                library.impl(name, _kernel(name, route, original, keyset), key)
    return library


def _kernel(name: str, route, original, keyset):
    op = name.split(".")[0]

    def kernel(*args, **kwargs):
        if getattr(_thread, "inside", False):  # tgpool's own torch calls
            return original.call_boxed(keyset, *args, **kwargs)
        call = route(*args, **kwargs)
        if isinstance(call, str):
            _fell_through(op, call)
            return original.call_boxed(keyset, *args, **kwargs)
        for report in _STATE.reports:
            report.routed[op] += 1
        _thread.inside = True
        try:
            return call()
        finally:
            _thread.inside = False

    kernel.__name__ = f"tgpool_{op}"
    return kernel


def _fell_through(op: str, reason: str) -> None:
    if reason == "not global pooling":  # a reduction, not pooling: not counted
        return
    for report in _STATE.reports:
        report.fell_through.setdefault(op, collections.Counter())[reason] += 1
    traced = reason.startswith("traced")
    if any(_STATE.strict) and not traced:
        raise NotImplementedError(
            f"tgpool.enabled(strict=True): aten::{op} is not served by tgpool here ({reason})"
        )
