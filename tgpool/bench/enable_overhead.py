"""Host cost of ``tgpool.enable()``: routed pooling calls, and what other ops pay.

Part of ``tgpool bench --overhead``. Each ATen call of the main table (torch's own pooling call,
written as model code writes it) is timed with tgpool disabled (ATen's kernels) and enabled (the
same call routed to tgpool), interleaved in one run, forward / forward with grad / forward +
backward; on a CPU-only machine the launch is stubbed, as in the main table. Then calls that are
not pooling: reductions go through the swapped ``Tensor`` method and back to ATen; other ops are
not touched, and their rows show it.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics

import torch

from ..integrations import enable as enabling
from . import overhead
from .cases import geomean

#: calls that are not pooling: (call as printed, kind, input shape, fn)
OTHER_CALLS = [
    ("x.mean(-1) of (64, 64)", "reduction, not pooling", (64, 64), lambda x: x.mean(-1)),
    ("x.sum(0) of (64, 64)", "reduction, not pooling", (64, 64), lambda x: x.sum(0)),
    ("loss.sum()", "reduction, not pooling", (64, 64), lambda x: x.sum()),
    ("x + x", "untouched", (64, 64), lambda x: x + x),
    ("torch.relu(x)", "untouched", (64, 64), torch.relu),
]
#: the main table's cases whose ATen call is not pooling that enable routes
NOT_ROUTED = {"ragged_max"}  # segment_reduce


@dataclasses.dataclass
class EnableRow:
    call: str
    kind: str  # the main table's column (routed calls), or what an other call is
    aten_us: float
    enabled_us: float

    @property
    def ratio(self) -> float:
        return self.enabled_us / self.aten_us


def run(opts: overhead.Options, stub, device: str) -> list[EnableRow]:
    """Every routed call and every other call, disabled and enabled."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = []
    names = opts.cases or [c.name for c in overhead.CASES]
    for case in (overhead.BY_NAME[n] for n in names if n not in NOT_ROUTED):
        for column in overhead.COLUMNS:
            torch.manual_seed(0)
            inputs = case.inputs(device)
            inputs = [inputs[0].detach().requires_grad_(column != "fwd"), *inputs[1:]]
            grad = None
            if column == "fwd+bwd":
                grad = torch.randn_like(overhead._tensors(case.torch(*inputs))[0])
            step = overhead._step(case.torch, inputs, column, grad)
            call = case.call if case.aten == "same" else case.aten  # torch's call, written out
            rows.append(EnableRow(call, column, *_time(step, opts, stub, sync)))
    for call, kind, shape, fn in OTHER_CALLS:
        x = torch.randn(*shape, device=device)
        rows.append(EnableRow(call, kind, *_time(lambda x=x, fn=fn: fn(x), opts, stub, sync)))
    return rows


def _time(step, opts, stub, sync) -> tuple[float, float]:
    """Median us per call of ``step`` disabled and enabled, rounds interleaved."""
    with enabling.enabled():
        step()  # warm-up: generates the kernels, plans the call
    gc.collect()
    times = {False: [], True: []}
    with stub():
        calls = {
            on: _side(on, lambda: overhead._calls_for(step, opts.round_ms, sync)) for on in times
        }
        for r in range(opts.rounds):
            for on in (False, True) if r % 2 == 0 else (True, False):
                n = calls[on]
                times[on].append(_side(on, lambda n=n: overhead._per_call_us(step, n, sync)))
    return statistics.median(times[False]), statistics.median(times[True])


def _side(enabled: bool, measure):
    if not enabled:
        return measure()
    with enabling.enabled():
        return measure()


def table(rows: list[EnableRow]) -> str:
    lines = [
        "tgpool.enable(): host us per call, torch's same call with tgpool disabled (ATen) and "
        "enabled",
        "",
        "| call | column / kind | ATen | enabled | x | enabled - ATen (us) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        delta = r.enabled_us - r.aten_us
        lines.append(
            f"| {r.call} | {r.kind} | {r.aten_us:.1f} | {r.enabled_us:.1f} | {r.ratio:.2f} | "
            f"{delta:+.1f} |"
        )
    routed = [r for r in rows if r.kind in overhead.COLUMNS]
    lines.append("")
    for column in overhead.COLUMNS:
        ratios = [r.ratio for r in routed if r.kind == column]
        lines.append(f"routed {column}: geomean {geomean(ratios):.2f}x ATen's")
    worst = max(routed, key=lambda r: r.ratio)
    lines.append(
        f"routed calls: geomean {geomean(r.ratio for r in routed):.2f}x ATen's over "
        f"{len(routed)} rows; worst {worst.ratio:.2f}x ({worst.call}, {worst.kind})"
    )
    return "\n".join(lines)
