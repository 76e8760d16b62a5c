"""``tgpool bench --overhead``: host time per eager call of every public function family, beside
ATen's same call on the same tensor in the same run.

Three columns per call: ``fwd`` (an input without grad), ``fwd-rg`` (the same forward with an
input that requires grad: the autograd graph is built, no backward) and ``fwd+bwd`` (forward, then
``torch.autograd.grad`` with a fixed grad_output). One thread (``torch.set_num_threads(1)``),
input 2x8x16x16 float32 (1-D and 3-D calls: the same 4096 elements).

- **CPU**: kernels run through the Triton interpreter, which would dominate any timing, so after
  one real warm-up call per case the launch is stubbed (``runtime.launches_stubbed``): what is
  timed is tgpool's own host work around the launch. ATen's call is timed as it is (it computes).
- **CUDA**: real launches, no synchronisation per call (the device is synchronised once per round,
  outside the timed loop): host time per call.

Each case's warm-up call checks tgpool's result (and gradient) against ATen's and that tgpool
launched a kernel; every timed tgpool loop must launch at least one kernel per call. A case that
fails either is reported with its error and not timed. Each side is timed in rounds of N calls (N
chosen per side so a round lasts about ``round_ms``), tgpool and ATen interleaved, and the median
round gives the time per call; ratio = tgpool / ATen, with a geomean per column and overall.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import functional as tgf
from .. import runtime
from .cases import geomean

SHAPE = (2, 8, 16, 16)
COLUMNS = ("fwd", "fwd-rg", "fwd+bwd")
COLUMN_HELP = {
    "fwd": "forward, input without grad",
    "fwd-rg": "forward, the input requires grad (graph built, no backward)",
    "fwd+bwd": "forward + autograd.grad(out, x, fixed grad_output)",
}
#: the issue's target (a benchmark's, not a test's): geomean ratio and worst ratio
TARGET_GEOMEAN, TARGET_WORST = 2.0, 4.0
CPU_MODE = "CPU: launches stubbed (Triton interpreter), host time only"


@dataclasses.dataclass
class Options:
    cases: tuple[str, ...] | None = None  # case names; None: all
    rounds: int = 7
    round_ms: float = 20.0
    device: str | None = None  # None: cuda when available, else cpu

    @classmethod
    def quick(cls, **kw) -> Options:
        return cls(rounds=3, round_ms=1.0, **kw)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str  # short id (CSV, --overhead-case)
    call: str  # tgpool's call as written
    aten: str  # ATen's call as written
    inputs: Callable[[str], list]  # device -> tensors; inputs[0] is the differentiated one
    tgpool: Callable
    torch: Callable
    grad_check: bool = True  # compare gradients with ATen's (False: ties routed differently)


@dataclasses.dataclass
class Row:
    case: str
    call: str
    aten_call: str
    column: str
    shape: str
    tgpool_us: float | None = None
    aten_us: float | None = None
    launches_per_call: float | None = None
    tgpool_calls: int = 0  # per round
    aten_calls: int = 0
    rounds: int = 0
    error: str = ""

    @property
    def ratio(self) -> float | None:
        if self.tgpool_us is None or not self.aten_us:
            return None
        return self.tgpool_us / self.aten_us


def _x(shape=SHAPE):
    return lambda device: [torch.randn(shape, device=device)]


def _ragged(device):  # 4096 values in 4 segments, none empty
    return [torch.randn(128, 32, device=device), torch.tensor([0, 30, 64, 100, 128], device=device)]


def _unpool(device):
    return list(F.max_pool2d(torch.randn(SHAPE, device=device), 2, return_indices=True))


def _fractional(device):
    return [torch.randn(SHAPE, device=device), torch.rand(*SHAPE[:2], 2, device=device)]


def _sppf(x):
    y1 = F.max_pool2d(x, 5, 1, 2)
    y2 = F.max_pool2d(y1, 5, 1, 2)
    return torch.cat([x, y1, y2, F.max_pool2d(y2, 5, 1, 2)], 1)


def _same(name: str, *args, inputs=None, **kwargs) -> Case:
    """tgpool's function and torch.nn.functional's of the same name, with the same arguments."""
    shown = [*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())]
    return Case(
        "_".join([name, *map(str, args)]) + ("_indices" if kwargs else ""),
        f"{name}(x, {', '.join(shown)})",
        "same",
        inputs or _x(),
        lambda t: getattr(tgf, name)(t, *args, **kwargs),
        lambda t: getattr(F, name)(t, *args, **kwargs),
    )


_1D, _3D = _x((2, 8, 256)), _x((2, 8, 4, 8, 8))
_FRACTIONAL = "fractional_max_pool2d(x, 2, output_size=8, _random_samples=s)"
_GEM = "x.clamp(min=eps).pow(p).mean((2, 3)).pow(1/p)"
CASES: list[Case] = [
    _same("max_pool1d", 3, 2, 1, inputs=_1D),
    _same("max_pool2d", 3, 2, 1),
    _same("max_pool2d", 2, return_indices=True),
    _same("max_pool3d", 3, 2, 1, inputs=_3D),
    _same("avg_pool1d", 2, inputs=_1D),
    _same("avg_pool2d", 2),
    _same("avg_pool3d", 2, inputs=_3D),
    _same("lp_pool2d", 2, 2),
    _same("adaptive_avg_pool2d", 1),
    _same("adaptive_avg_pool2d", 4),
    _same("adaptive_max_pool2d", 4),
    Case(
        *("global_avg", 'global_pool(x, "avg")', "adaptive_avg_pool2d(x, 1).flatten(1)", _x()),
        lambda t: tgf.global_pool(t, "avg"),
        lambda t: F.adaptive_avg_pool2d(t, 1).flatten(1),
    ),
    Case(
        *("global_max", 'global_pool(x, "max")', "adaptive_max_pool2d(x, 1).flatten(1)", _x()),
        lambda t: tgf.global_pool(t, "max"),
        lambda t: F.adaptive_max_pool2d(t, 1).flatten(1),
    ),
    Case(
        *("gem", "gem(x, 3.0, 1e-6)", _GEM, _x()),
        lambda t: tgf.gem(t, 3.0, 1e-6),
        lambda t: t.clamp(min=1e-6).pow(3.0).mean((2, 3)).pow(1.0 / 3.0),
    ),
    Case(
        *("ragged_max", 'ragged_pool(v, offsets, "max")', 'segment_reduce(v, "max", offsets)'),
        _ragged,
        lambda v, o: tgf.ragged_pool(v, o, "max"),
        lambda v, o: torch.segment_reduce(v, "max", offsets=o, axis=0),
    ),
    Case(
        *("max_unpool2d", "max_unpool2d(y, idx, 2)", "same", _unpool),
        lambda y, i: tgf.max_unpool2d(y, i, 2),
        lambda y, i: F.max_unpool2d(y, i, 2),
    ),
    Case(
        *("fractional_max_pool2d", _FRACTIONAL, "same", _fractional),
        lambda t, s: tgf.fractional_max_pool2d(t, 2, output_size=8, _random_samples=s),
        lambda t, s: F.fractional_max_pool2d(t, 2, output_size=8, _random_samples=s),
    ),
    # SPPF's chained pools tie on purpose: torch routes a tie's gradient to its first position,
    # tgpool by its own rule (kernels/sppf.py), so only its forward is compared
    Case(
        *("sppf", "sppf(x, 5)", "3 x max_pool2d(5, 1, 2) + cat", _x()),
        lambda t: tgf.sppf(t, 5),
        _sppf,
        grad_check=False,
    ),
]
BY_NAME = {c.name: c for c in CASES}


def _launches() -> int:
    return sum(runtime.launch_counts.values())


def _tensors(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _step(fn, inputs, column, grad):
    """One call as the column times it; returns what is compared (outputs or gradients)."""
    if column != "fwd+bwd":
        return lambda: fn(*inputs)
    return lambda: torch.autograd.grad(_tensors(fn(*inputs))[0], inputs[0], grad)


def _differs(got, want, case: Case, column: str) -> str:
    if column == "fwd+bwd" and not case.grad_check:
        return ""
    for g, w in zip(_tensors(got), _tensors(want)):
        if g.shape != w.shape or g.dtype != w.dtype:
            return (
                f"{column}: tgpool gave {g.dtype} {tuple(g.shape)}, ATen {w.dtype} {tuple(w.shape)}"
            )
        if not torch.allclose(g.detach(), w.detach(), atol=1e-5, rtol=1e-4):
            return f"{column}: tgpool's result differs from ATen's"
    return ""


def _per_call_us(fn, calls: int, sync) -> float:
    """Host time per call over ``calls`` calls (the device synchronised outside the timing)."""
    sync()
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter_ns() - start
    sync()
    return elapsed / calls / 1e3


def _calls_for(fn, round_ms: float, sync) -> int:
    us = min(_per_call_us(fn, 3, sync) for _ in range(2))
    return max(1, min(100_000, int(round_ms * 1e3 / max(us, 1e-3))))


def measure(case: Case, column: str, opts: Options, device: str) -> Row:
    torch.manual_seed(0)
    inputs = case.inputs(device)
    row = Row(case.name, case.call, case.aten, column, "x".join(map(str, inputs[0].shape)))
    inputs = [inputs[0].detach().requires_grad_(column != "fwd"), *inputs[1:]]
    grad = None
    if column == "fwd+bwd":
        grad = torch.randn_like(_tensors(case.torch(*inputs))[0])
    tg = _step(case.tgpool, inputs, column, grad)
    aten = _step(case.torch, inputs, column, grad)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    stub = runtime.launches_stubbed if device == "cpu" else contextlib.nullcontext

    before = _launches()
    got = tg()  # warm-up: generates and compiles the kernels, runs them for real
    if _launches() == before:
        row.error = f"{column}: no tgpool kernel ran (the Triton path was not taken)"
        return row
    row.error = _differs(got, aten(), case, column)
    if row.error:
        return row
    del got
    gc.collect()
    gc_enabled = gc.isenabled()
    gc.disable()  # a collection inside one side's round would be charged to it
    try:
        with stub():
            n_tg, n_aten = (_calls_for(fn, opts.round_ms, sync) for fn in (tg, aten))
            tg_us, aten_us, before = [], [], _launches()  # ATen's calls launch nothing of ours
            sides = ((tg, n_tg, tg_us), (aten, n_aten, aten_us))
            for r in range(opts.rounds):  # interleaved, each side first in every other round
                for fn, n, times in sides if r % 2 == 0 else sides[::-1]:
                    times.append(_per_call_us(fn, n, sync))
            launched = _launches() - before
    finally:
        if gc_enabled:
            gc.enable()
    row.rounds, row.tgpool_calls, row.aten_calls = opts.rounds, n_tg, n_aten
    row.launches_per_call = launched / (opts.rounds * n_tg)
    if launched < opts.rounds * n_tg:
        row.error = f"{column}: {opts.rounds * n_tg} timed tgpool calls, {launched} launches"
        return row
    row.tgpool_us, row.aten_us = statistics.median(tg_us), statistics.median(aten_us)
    return row


def run(opts: Options, progress=print) -> list[Row]:
    """Every case x column (rows with ``error`` set were not timed)."""
    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" and not runtime.interpreter_enabled():
        raise RuntimeError(
            "tgpool bench --overhead on the CPU needs TRITON_INTERPRET=1 set before tgpool's "
            "kernels are created (otherwise CPU tensors take torch's own pooling)"
        )
    names = opts.cases or [c.name for c in CASES]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for name in names:
            for column in COLUMNS:
                progress(f"{name} {column}")
                case = BY_NAME[name]
                try:
                    rows.append(measure(case, column, opts, device))
                except Exception as e:  # reported beside the others, not timed
                    error = f"{column}: {type(e).__name__}: {e}".splitlines()[0]
                    rows.append(Row(case.name, case.call, case.aten, column, "", error=error))
    finally:
        torch.set_num_threads(threads)
    return rows


def summary(rows: list[Row]) -> dict:
    """Geomean ratio per column and overall ("all"), and the worst timed row ("worst")."""
    timed = [r for r in rows if r.ratio is not None]
    out = {c: geomean(r.ratio for r in timed if r.column == c) for c in COLUMNS}
    out["all"] = geomean(r.ratio for r in timed)
    out["worst"] = max(timed, key=lambda r: r.ratio, default=None)
    out["meets_target"] = bool(
        timed and out["all"] <= TARGET_GEOMEAN and out["worst"].ratio <= TARGET_WORST
    )
    return out


def environment(device: str) -> dict:
    import triton

    import tgpool

    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "mode": CPU_MODE
        if device == "cpu"
        else f"GPU {torch.cuda.get_device_name()}: real launches, host time per call",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "tgpool": tgpool.__version__,
    }


# --- output: a fixed-width (markdown) table, CSV rows -------------------------------------------

CSV_COLUMNS = (
    *("timestamp", "device", "mode", "torch", "triton", "tgpool", "threads", "case", "call"),
    *("aten_call", "shape", "column", "tgpool_us", "aten_us", "ratio", "launches_per_call"),
    *("tgpool_calls", "aten_calls", "rounds", "error"),
)


def _num(v, fmt=".1f") -> str:
    return "" if v is None or v != v else format(v, fmt)


def table(rows: list[Row], env: dict, opts: Options) -> str:
    """The printed table: one line per call, tgpool / ATen / ratio per column, then geomeans."""
    head = ["call"] + [f"{c} {k}" for c in COLUMNS for k in ("tgpool", "ATen", "x")]
    by = {(r.case, r.column): r for r in rows}
    calls = {r.case: r for r in rows}  # in order
    body = []
    for name, first in calls.items():
        cells = [first.call]
        for c in COLUMNS:
            r = by.get((name, c))
            if r is None or r.error:
                cells += ["ERROR" if r else "-", "", ""]
            else:
                cells += [_num(r.tgpool_us), _num(r.aten_us), _num(r.ratio, ".2f")]
        body.append(cells)
    s = summary(rows)
    body.append(["geomean"] + [x for c in COLUMNS for x in ("", "", _num(s[c], ".2f"))])
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def fmt(cells):
        out = [v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(out) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    worst = s["worst"]
    peers = [f"{r.call}: {r.aten_call}" for r in calls.values() if r.aten_call != "same"]
    lines = [
        f"tgpool bench --overhead: {env['mode']}",
        f"host us per call; input {'x'.join(map(str, SHAPE))} float32 (1-D 2x8x256, 3-D "
        f"2x8x4x8x8, ragged 128x32), 1 thread, median of {opts.rounds} rounds of "
        f"~{opts.round_ms:g} ms per side; torch {env['torch']}, triton {env['triton']}, tgpool "
        f"{env['tgpool']}; {env['timestamp']}",
        *(f"  {c}: {COLUMN_HELP[c]}" for c in COLUMNS),
        "  x: tgpool / ATen; ATen: torch.nn.functional's same call, except " + "; ".join(peers),
        "",
        fmt(head),
        rule,
        *map(fmt, body),
        "",
        f"geomean x over all {sum(r.ratio is not None for r in rows)} timed rows: "
        f"{_num(s['all'], '.2f')}"
        + (f"; worst {worst.ratio:.2f} ({worst.call}, {worst.column})" if worst else ""),
        f"target (geomean <= {TARGET_GEOMEAN:g}x, no call above {TARGET_WORST:g}x): "
        + ("met" if s["meets_target"] else "not met"),
    ]
    errors = [f"ERROR {r.call} [{r.case}] {r.error}" for r in rows if r.error]
    return "\n".join(lines + ([""] + errors if errors else []))


def csv_records(rows: list[Row], env: dict) -> list[dict]:
    base = {k: env[k] for k in ("timestamp", "device", "mode", "torch", "triton", "tgpool")}
    base["threads"] = 1
    out = []
    for r in rows:
        rec = {**base, **{k: v for k, v in vars(r).items() if k in CSV_COLUMNS}}
        for k in ("tgpool_us", "aten_us", "launches_per_call"):
            rec[k] = _num(rec[k], ".3f")
        rec["ratio"] = _num(r.ratio, ".4f")
        out.append(rec)
    s = summary(rows)
    for c in (*COLUMNS, "all"):
        out.append({**base, "case": "GEOMEAN", "column": c, "ratio": _num(s[c], ".4f")})
    return out
