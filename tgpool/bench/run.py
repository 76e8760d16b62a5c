"""``tgpool bench``'s measurements: every case against its peers in one run.

Peers: ATen eager (the case's torch call), ``torch.compile`` of that call (default mode and
max-autotune), and tgpool with the tuner's cached configs (``tuned``: the launch provider as
installed) and with the heuristic's (``heuristic``: the provider removed for the call).

On CUDA each call is timed with ``triton.testing.do_bench`` (median and 20/80 quantiles, L2
flushed before each run). ``tiny=True`` runs minuscule shapes on the CPU through the Triton
interpreter: wall-clock medians of a few runs, every row labelled "interpreter: not a timing",
torch.compile with backend="aot_eager" (inductor's C++ compile would dominate) and no
max-autotune. Either way each case first checks that tgpool's kernels ran and that its result
(and gradient) equals the peer's, and that tgpool's backward is bitwise repeatable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time

import torch

from .. import launch, runtime
from . import cases as bench_cases

NOT_A_TIMING = "interpreter: not a timing"
TORCH_PEERS = ("aten", "compile", "compile-max-autotune")
TGPOOL_PEERS = ("tgpool-tuned", "tgpool-heuristic")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
DIRECTIONS = ("fwd", "fwd+bwd")


@dataclasses.dataclass
class Options:
    tiny: bool = False
    cases: tuple[str, ...] = tuple(c.name for c in bench_cases.CASES)
    dtypes: tuple[str, ...] = ("float16", "bfloat16", "float32")
    layouts: tuple[str, ...] = bench_cases.LAYOUTS
    directions: tuple[str, ...] = DIRECTIONS
    max_autotune: bool = True
    runs: int = 1  # tiny mode: wall-clock runs per measurement (the interpreter is slow)


@dataclasses.dataclass
class Row:
    case: str
    shape: str
    dtype: str
    layout: str
    direction: str
    peer: str
    backend: str = ""
    median_ms: float | None = None
    p20_ms: float | None = None
    p80_ms: float | None = None
    min_bytes: int = 0
    gbps: float | None = None
    pct_of_copy: float | None = None
    speedups: dict = dataclasses.field(default_factory=dict)  # peer -> its time / this time
    matches_peer: str = ""
    deterministic: str = ""
    us_per_call: float | None = None
    note: str = ""


def make_timer(tiny: bool, runs: int = 1):
    """fn -> (median, p20, p80) in ms."""
    if not tiny:
        from triton.testing import do_bench

        def cuda_time(fn):
            fn()
            torch.cuda.synchronize()
            return tuple(float(v) for v in do_bench(fn, quantiles=[0.5, 0.2, 0.8]))

        return cuda_time

    def wall_time(fn):
        times = []  # no warm-up: _check ran every call once already
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        q = statistics.quantiles(times, n=5, method="inclusive") if len(times) > 1 else times * 4
        return statistics.median(times), q[0], q[3]

    return wall_time


@contextlib.contextmanager
def heuristic_configs():
    """tgpool's launches use the heuristic: the tuner's provider is removed meanwhile."""
    saved = launch.get_provider()
    launch.set_provider(None)
    try:
        yield
    finally:
        launch.set_provider(saved)


def copy_gbps(device: str, timer, tiny: bool) -> float:
    """Device-to-device copy bandwidth (read + write), the ceiling a pooling kernel can reach."""
    n = (1 << 16) if tiny else (1 << 28)  # 256 MiB of bytes on a GPU
    src = torch.empty(n, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))[0]
    return 2 * n / (ms * 1e6)


def _step(fn, inputs, backward: bool, grad):
    if not backward:
        return lambda: fn(*inputs)
    return lambda: torch.autograd.grad(fn(*inputs), inputs[0], grad)


def _compiled(fn, mode: str | None, tiny: bool):
    """torch.compile of ``fn``. A case's torch call is one code object compiled for every dtype,
    layout and direction, so the recompile limits are raised (past them Dynamo would silently
    run eager). On a GPU Dynamo is also reset, so each compile starts clean; not in --tiny, which
    the test suite runs in-process next to compiles it must not disturb."""
    config = torch._dynamo.config
    for limit in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(config, limit):
            setattr(config, limit, max(getattr(config, limit), 4096))
    if tiny:
        return torch.compile(fn, backend="aot_eager")
    torch._dynamo.reset()
    return torch.compile(fn, mode=mode)


def _check(case, built, backward, grad, dtype) -> tuple[str, str]:
    """(matches_peer, deterministic) for tgpool against the eager peer; raises nothing."""
    ins = built.inputs
    before = sum(runtime.launch_counts.values())
    got = _step(built.tgpool, ins, backward, grad)()
    if sum(runtime.launch_counts.values()) == before:
        return "no tgpool kernel ran", ""
    want = _step(built.torch, ins, backward, grad)()
    got, want = (got, want) if backward else ((got,), (want,))
    atol, rtol = bench_cases.tolerance(dtype)
    ok = True
    for g, w in zip(got, want):
        if backward and case.ties_differ and dtype != torch.float32:
            continue  # ties route gradients differently (bench_cases.Case.ties_differ)
        exact = case.exact and not backward
        ok &= torch.equal(g, w) if exact else torch.allclose(g, w, atol=atol, rtol=rtol)
    det = ""
    if backward:
        again = _step(built.tgpool, ins, backward, grad)()
        det = "yes" if all(torch.equal(a, b) for a, b in zip(got, again)) else "no"
    return ("yes" if ok else "NO"), det


def run_case(case, dtype_name, layout, direction, opts, device, timer, copy) -> list[Row]:
    dtype = DTYPES[dtype_name]
    shape = case.tiny_shape if opts.tiny else case.shape
    backward = direction == "fwd+bwd"
    torch.manual_seed(0)
    built = case.build(shape, device, dtype, layout)
    if backward:
        built.inputs[0].requires_grad_(True)
    out = built.torch(*built.inputs)
    grad = torch.randn_like(out) if backward else None
    nbytes = bench_cases.min_bytes(built, out, backward)
    base = dict(
        case=case.name,
        shape="x".join(map(str, shape)),
        dtype=dtype_name,
        layout=layout,
        direction=direction,
        min_bytes=nbytes,
    )
    matches, det = _check(case, built, backward, grad, dtype)
    rows = []
    peers = [("aten", "eager", built.torch), ("compile", None, None)]
    if opts.max_autotune and not opts.tiny:
        peers.append(("compile-max-autotune", "max-autotune", None))
    for peer, mode, fn in peers:
        backend = "eager" if peer == "aten" else ("aot_eager" if opts.tiny else "inductor")
        if fn is None:
            fn = _compiled(built.torch, mode, opts.tiny)
        rows.append(Row(peer=peer, backend=backend, **base))
        rows[-1].median_ms, rows[-1].p20_ms, rows[-1].p80_ms = timer(
            _step(fn, built.inputs, backward, grad)
        )
    for peer in TGPOOL_PEERS:
        ctx = heuristic_configs() if peer == "tgpool-heuristic" else contextlib.nullcontext()
        with ctx:
            t = timer(_step(built.tgpool, built.inputs, backward, grad))
        rows.append(
            Row(peer=peer, backend="triton", matches_peer=matches, deterministic=det, **base)
        )
        rows[-1].median_ms, rows[-1].p20_ms, rows[-1].p80_ms = t
    for r in rows:
        r.gbps = nbytes / (r.median_ms * 1e6)
        r.pct_of_copy = 100 * r.gbps / copy
        if opts.tiny:
            r.note = NOT_A_TIMING
    torch_rows = [r for r in rows if r.peer in TORCH_PEERS]
    for r in rows:
        if r.peer in TGPOOL_PEERS:
            r.speedups = {p.peer: p.median_ms / r.median_ms for p in torch_rows}
            r.speedups["best"] = min(p.median_ms for p in torch_rows) / r.median_ms
    return rows


def overhead_rows(device: str, tiny: bool) -> list[Row]:
    """Per-call cost of a tiny max_pool2d (1x1x4x4): tgpool's custom op against ATen's, in µs of
    wall clock per call over many calls (the device synchronised once at the end)."""
    import torch.nn.functional as F

    import tgpool

    x = torch.randn(1, 1, 4, 4, device=device)
    calls = 5 if tiny else 2000
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = []
    for peer, fn in (("aten", F.max_pool2d), ("tgpool-tuned", tgpool.max_pool2d)):
        fn(x, 2)
        sync()
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(calls):
                fn(x, 2)
            sync()
            best = min(best, (time.perf_counter() - start) / calls * 1e6)
        rows.append(
            Row(
                case="overhead_max_pool2d_1x1x4x4",
                shape="1x1x4x4",
                dtype="float32",
                layout="contiguous",
                direction="fwd",
                peer=peer,
                backend="eager" if peer == "aten" else "triton",
                us_per_call=best,
                note=NOT_A_TIMING if tiny else "best of 3 rounds",
            )
        )
    return rows


def run(opts: Options, progress=print) -> tuple[list[Row], float]:
    """All rows of one run, and the copy bandwidth (GB/s) they are compared with."""
    device = "cpu" if opts.tiny else "cuda"
    timer = make_timer(opts.tiny, opts.runs)
    copy = copy_gbps(device, timer, opts.tiny)
    rows: list[Row] = []
    for name in opts.cases:
        case = bench_cases.BY_NAME[name]
        for dtype in opts.dtypes:
            for layout in opts.layouts:
                for direction in opts.directions:
                    progress(f"{name} {dtype} {layout} {direction}")
                    rows += run_case(case, dtype, layout, direction, opts, device, timer, copy)
    rows += overhead_rows(device, opts.tiny)
    return rows, copy
