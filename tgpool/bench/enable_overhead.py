"""Host cost of ``tgpool.enable()``: routed pooling calls, and what other ops pay.

Part of ``tgpool bench --overhead``. The same call is timed with tgpool disabled (ATen's kernels)
and enabled (the call routed to tgpool, or passed back to ATen), interleaved in one run. Pooling
calls are routed: their time is tgpool's host path plus the routing (on a CPU-only machine the
launch is stubbed, as in the main table). Reductions that are not pooling go through the routing
check and back to ATen; other ops are not touched, and their rows show it.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics

import torch
import torch.nn.functional as F

from ..integrations import enable as enabling
from .cases import geomean
from .overhead import Options, _calls_for, _per_call_us

#: (call as printed, kind, input shape, fn)
CALLS = [
    ("F.max_pool2d(x, 3, 2, 1)", "routed", (2, 8, 16, 16), lambda x: F.max_pool2d(x, 3, 2, 1)),
    ("F.avg_pool2d(x, 2)", "routed", (2, 8, 16, 16), lambda x: F.avg_pool2d(x, 2)),
    (
        "F.adaptive_avg_pool2d(x, 1)",
        "routed",
        (2, 8, 16, 16),
        lambda x: F.adaptive_avg_pool2d(x, 1),
    ),
    ("x.mean((2, 3))", "routed", (2, 8, 16, 16), lambda x: x.mean((2, 3))),
    ("x.mean(dim=1) tokens", "routed", (2, 16, 8), lambda x: x.mean(dim=1)),
    ("x.mean(-1) of (64, 64)", "not pooling", (64, 64), lambda x: x.mean(-1)),
    ("x.sum(0) of (64, 64)", "not pooling", (64, 64), lambda x: x.sum(0)),
    ("x + x", "untouched", (64, 64), lambda x: x + x),
    ("torch.relu(x)", "untouched", (64, 64), torch.relu),
]


@dataclasses.dataclass
class EnableRow:
    call: str
    kind: str
    aten_us: float
    enabled_us: float

    @property
    def ratio(self) -> float:
        return self.enabled_us / self.aten_us


def run(opts: Options, stub) -> list[EnableRow]:
    """Each call timed disabled and enabled; ``stub``: the launch stub of the main table."""
    rows = []
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for call, kind, shape, fn in CALLS:
        x = torch.randn(*shape, device=device)
        with enabling.enabled():
            fn(x)  # warm-up: generates the kernels and plans the call
        times = {False: [], True: []}
        gc.collect()
        with stub():
            counts = {on: _count(fn, x, on, opts, sync) for on in (False, True)}
            for r in range(opts.rounds):
                for on in (False, True) if r % 2 == 0 else (True, False):
                    times[on].append(_timed(fn, x, on, counts[on], sync))
        rows.append(EnableRow(call, kind, *(statistics.median(times[on]) for on in (False, True))))
    return rows


def _count(fn, x, on, opts, sync) -> int:
    if not on:
        return _calls_for(lambda: fn(x), opts.round_ms, sync)
    with enabling.enabled():
        return _calls_for(lambda: fn(x), opts.round_ms, sync)


def _timed(fn, x, on, calls, sync) -> float:
    if not on:
        return _per_call_us(lambda: fn(x), calls, sync)
    with enabling.enabled():
        return _per_call_us(lambda: fn(x), calls, sync)


def table(rows: list[EnableRow]) -> str:
    lines = [
        "tgpool.enable(): host us per call, the same call disabled (ATen) and enabled",
        "",
        "| call | kind | ATen | enabled | x | enabled - ATen (us) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        delta = r.enabled_us - r.aten_us
        lines.append(
            f"| {r.call} | {r.kind} | {r.aten_us:.1f} | {r.enabled_us:.1f} | {r.ratio:.2f} | "
            f"{delta:+.1f} |"
        )
    routed = [r.ratio for r in rows if r.kind == "routed"]
    lines.append("")
    lines.append(f"routed calls: geomean {geomean(routed):.2f}x ATen's")
    return "\n".join(lines)
