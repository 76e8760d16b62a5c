"""``tgpool.enable()``: every pooling computation of an unmodified model runs on tgpool's kernels.

``patch`` swaps pooling modules; ``enable`` reaches what module swapping cannot: functional calls
(``F.max_pool2d`` inside a block, ``F.adaptive_avg_pool2d`` heads), subclasses whose forward calls
``F.*``, and global pooling written as a reduction (``x.mean((2, 3))``, ``x.mean(dim=1)`` over
tokens). Two layers, one report:

- entry_points.py swaps ``torch.nn.functional``'s pooling functions and the reductions
  ``Tensor.mean / sum / amax / max`` (and ``torch.*``'s) for wrappers that call tgpool directly:
  the short way, taken by most model code;
- every other path reaches ATen's pooling operators, over which a Python kernel is registered at
  the autograd dispatch key of CUDA (and of the CPU while ``TRITON_INTERPRET=1``: how it is tested
  here): ``torch.max_pool2d``, C++ composites such as max_pool1d reaching
  max_pool2d_with_indices, functions bound before enable().

A routed call runs the tgpool function whose outputs carry tgpool's autograd (deterministic
gathers); a call tgpool cannot serve runs ATen's own kernel, as if tgpool were not enabled
(``strict=True`` raises instead, except for what is ATen's by design: traced calls and tensors on
a device tgpool does not run on), and the report says which and why.

What stays ATen's, by design:

- under ``torch.compile`` and ``torch.export`` tracing, the graph keeps ATen's ops: Inductor lowers
  and fuses pooling itself, the fast choice inside a compiled graph (tgpool's own functions and
  ``tgpool.patch`` put tgpool's kernels there instead). A backend that runs the graph's ATen ops
  eagerly (``aot_eager``) has them routed like any call;
- inside ``torch.inference_mode`` (which skips autograd keys), the calls that do not pass the
  swapped Python functions;
- a call made from inside a routed call (tgpool's own use of torch ops).

A reduction that is not global pooling (``x.mean(-1)`` of a 2-D tensor, ``loss.sum()``) pays one
Python call to the original method; no other operator is touched (``tgpool bench --overhead``
prints both).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import threading
import warnings

import torch

from .. import runtime
from . import entry_points
from .routes import BY_DESIGN, ROUTES

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
    """What enable() holds while on, and what both routing layers share."""

    def __init__(self):
        self.depth = 0  # nested enable() / enabled() blocks
        self.library = None
        self.swapped: list = []  # entry_points.swap's originals
        self.reports: list[EnableReport] = []  # every open report counts each call
        self.strict: list[bool] = []
        self.thread = _thread  # .inside: a routed call is running on this thread

    @staticmethod
    def inside() -> bool:
        """A routed call is running on this thread (its own torch calls stay ATen's)."""
        return getattr(_thread, "inside", False)

    def routed(self, op: str) -> None:
        for report in self.reports:
            report.routed[op] += 1

    def fell_through(self, op: str, reason: str) -> None:
        for report in self.reports:
            report.fell_through.setdefault(op, collections.Counter())[reason] += 1
        if any(self.strict) and not reason.startswith(BY_DESIGN):
            raise NotImplementedError(
                f"tgpool.enabled(strict=True): {op} is not served by tgpool here ({reason})"
            )

    @staticmethod
    def run(fn, *args, **kwargs):
        _thread.inside = True
        try:
            return fn(*args, **kwargs)
        finally:
            _thread.inside = False


_STATE = _State()


def is_enabled() -> bool:
    return _STATE.depth > 0


def enable(*, strict: bool = False) -> EnableReport:
    """Route pooling to tgpool's kernels until ``disable()``; returns the report it fills."""
    with _lock:
        if _STATE.library is None:
            _STATE.library = _register()
            _STATE.swapped = entry_points.swap(_STATE)
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
            entry_points.restore(_STATE.swapped)
            _STATE.swapped = []
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
        if _STATE.inside():  # tgpool's own torch calls
            return original.call_boxed(keyset, *args, **kwargs)
        call = route(*args, **kwargs)
        if isinstance(call, str):
            _STATE.fell_through(op, call)
            return original.call_boxed(keyset, *args, **kwargs)
        _STATE.routed(op)
        return _STATE.run(call)

    kernel.__name__ = f"tgpool_{op}"
    return kernel
