"""Ahead-of-time inspection: compile a generated kernel for a GPU target without a GPU, and report
its registers, spills, shared memory and the widths of its global loads and stores.

    from tgpool import aot
    reports = aot.inspect_op("max_pool2d", (8, 64, 56, 56), torch.float16, "channels_last",
                             kernel_size=3, stride=2, padding=1, arch="sm_90a")
    print(aot.format_table(reports))

The specialisation is the one Triton's JIT gives a real launch: the kernel arguments come from the
same planner the launcher uses (window_pool.plan_*), run on meta tensors of the problem's shape,
dtype and strides, and each argument goes through Triton's own per-argument specialisation
(native_specialize_impl, as JITFunction's binder calls it): integers equal to 1 become constexpr,
integers and pointers divisible by 16 get ``tt.divisibility = 16`` (meta tensors sit at address 0,
i.e. an aligned allocation), integers are i32 when they fit, else i64.

Resources come from the cubin Triton built (the wheel's cuobjdump, ``--dump-resource-usage``):
registers, stack frame and local memory (where spills go: both 0 means no spill) and static shared
memory, plus the dynamic shared memory Triton requests. Running ``ptxas -v`` again on the PTX is
not the same measurement: Triton passes its own flags (3.9: ``--regAllocOptLevel=2``), and without
them ptxas allocates differently (a kernel at 102 registers, no spill, came back as 96 registers
with 4 bytes of spills). Widths are counted from the PTX (``ld.global.v4.b32`` = 128 bits; ``.nc``,
cache hints and predicates are read through).

A process that imported triton with TRITON_INTERPRET=1 (the test suite) cannot compile: Triton's
own ``tl.zeros`` & co. were created as interpreted functions. inspect_op then compiles in a spawned
worker process with the interpreter off; inspect_many compiles many problems in a pool of them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import importlib.util
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch
import triton

from . import window_pool
from .aot_plan import (  # noqa: F401  (aot.<name> stays the one entry point: cli, tests, planners)
    _LAYOUTS,
    DIRECTIONS,
    meta_tensor,
    op_spec,
    plan_op,
    plan_window_op,
    window_label,
)
from .aot_specialise import rule_specialisation, specialise  # noqa: F401  (aot.<name>)
from .spec import DTYPES

ARCHS = {"sm_80": (80, 32), "sm_90a": (90, 32)}  # name -> (capability, warp size)


def target(arch: str):
    from triton.backends.compiler import GPUTarget

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    return GPUTarget("cuda", *ARCHS[arch])


# --- compiling ------------------------------------------------------------------------------------

_compilable: dict[str, object] = {}


@contextlib.contextmanager
def _interpreter_off():
    """TRITON_INTERPRET off inside the block (the environment, and triton.knobs where it has
    them): ``@triton.jit`` gives an interpreted function while it is on, and a spawned process
    inherits it."""
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        knobs = getattr(triton, "knobs", None)
        runtime_knobs = getattr(knobs, "runtime", None)
        if runtime_knobs is not None and hasattr(runtime_knobs, "scope"):
            with runtime_knobs.scope():
                runtime_knobs.interpret = False
                yield
        else:
            yield
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved


def compilable_kernel(kernel, source: str):
    """``kernel`` itself when it is a JITFunction; else (interpreter mode) the same generated
    file imported again, under its own module name, with the interpreter off."""
    from triton.runtime.jit import JITFunction

    if isinstance(kernel, JITFunction):
        return kernel
    name = kernel.fn.__name__ if hasattr(kernel, "fn") else kernel.__name__
    key = f"{source}:{name}"
    if key not in _compilable:
        path = Path(source)
        module_name = f"tgpool_aot.{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        with _interpreter_off():
            spec.loader.exec_module(module)
        sys.modules.setdefault(module_name, module)
        _compilable[key] = getattr(module, name)
    return _compilable[key]


@dataclasses.dataclass(frozen=True)
class KernelReport:
    """One kernel compiled for one arch: resources from its cubin, access widths from its PTX."""

    arch: str
    op: str  # e.g. "max_pool2d k3 s2 p1 fwd"
    kernel: str
    layout: str
    dtype: str
    shape: tuple  # the op's input shape (N, C, *spatial)
    config: str  # LaunchConfig.describe()
    registers: int
    stack: int  # bytes of stack frame per thread (where ptxas spills registers)
    local: int  # bytes of local memory per thread
    shared: int  # bytes (Triton's dynamic shared memory plus any static)
    loads: dict  # bits -> number of ld.global instructions of that width
    stores: dict  # bits -> number of st.global instructions
    blocked_layouts: tuple  # the TTGIR #ttg.blocked encodings (sizePerThread ...)
    signature: dict
    constexprs: dict
    source: str  # the generated kernel file
    asm: dict = dataclasses.field(repr=False, compare=False)  # "ttgir", "ptx" text, "cubin" bytes

    @property
    def spill_bytes(self) -> int:
        """Per-thread bytes of stack frame and local memory: 0 when nothing spills."""
        return self.stack + self.local

    def load_bits(self, min_width=0) -> int:
        """Bits loaded per thread by the load instructions at least ``min_width`` wide (static:
        each instruction once, loops not unrolled count once)."""
        return sum(w * n for w, n in self.loads.items() if w >= min_width)


_BLOCKED = re.compile(r"#ttg\.blocked<\{[^}]*\}>")  # TTGIR register layouts
_ACCESS = re.compile(r"(?<![\w.])(ld|st)\.global((?:\.[A-Za-z0-9_:]+)*)")


def global_access_widths(ptx: str) -> tuple[Counter, Counter]:
    """(loads, stores): instruction counts by width in bits of the global loads and stores in
    ``ptx``, whatever their predicates, cache qualifiers (``.nc``, ``.L1::evict_last``,
    ``.L2::cache_hint``, ``.L2::128B``) or vector size."""
    found = {"ld": Counter(), "st": Counter()}
    for line in ptx.splitlines():
        code = line.split("//", 1)[0]
        for kind, qualifiers in _ACCESS.findall(code):
            vector, bits = 1, None
            for q in qualifiers.split(".")[1:]:
                if re.fullmatch(r"v\d+", q):
                    vector = int(q[1:])
                elif re.fullmatch(r"[bsuf]\d+", q):
                    bits = int(q[1:])
            if bits is not None:
                found[kind][vector * bits] += 1
    return found["ld"], found["st"]


def _cuobjdump() -> str:
    tool = getattr(getattr(getattr(triton, "knobs", None), "nvidia", None), "cuobjdump", None)
    if getattr(tool, "path", None):
        return tool.path
    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")


def resource_usage(cubin: bytes) -> dict:
    """cuobjdump --dump-resource-usage of one kernel's cubin: REG, STACK, SHARED, LOCAL, ..."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        text = subprocess.run(
            [_cuobjdump(), "--dump-resource-usage", str(path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    line = next((ln for ln in text.splitlines() if "REG:" in ln), "")
    return {k: int(v) for k, v in re.findall(r"([A-Z_]+)(?:\[\d+\])?:(\d+)", line)}


def compile_launch(
    plan: window_pool.KernelLaunch,
    arch: str = "sm_90a",
    *,
    op: str = "",
    layout: str = "",
    shape: tuple = (),
    dtype: str = "",
) -> KernelReport:
    """Compile the kernel of one planned launch for ``arch`` and measure it (in a process that
    ``can_compile_here``; inspect_op and inspect_many see to that)."""
    from triton.compiler import ASTSource

    if not can_compile_here():
        raise RuntimeError(
            "triton.language was imported with TRITON_INTERPRET on, so nothing can "
            "be compiled in this process: use inspect_op or inspect_many"
        )

    try:
        from triton.compiler import make_backend
    except ImportError:
        from triton.compiler.compiler import make_backend
    kernel, source = plan.kernel()
    kernel = compilable_kernel(kernel, source)
    config = plan.config()
    gpu = target(arch)
    backend = make_backend(gpu)
    signature, constexprs, attrs = specialise(kernel, plan.args, plan.meta(config), backend)
    compiled = triton.compile(
        ASTSource(kernel, signature, constexprs, attrs),
        target=gpu,
        options={"num_warps": config.num_warps, "num_stages": config.num_stages},
    )
    usage = resource_usage(compiled.asm["cubin"])
    loads, stores = global_access_widths(compiled.asm["ptx"])
    metadata = compiled.metadata
    name = getattr(metadata, "name", None) or plan.ctx["kernel_name"]
    return KernelReport(
        arch=arch,
        op=op or plan.ctx["kernel_name"],
        kernel=name,
        layout=layout,
        dtype=dtype or str(plan.problem.get("dtype", "")),
        shape=tuple(shape),
        config=config.describe(),
        registers=usage.get("REG", -1),
        stack=usage.get("STACK", 0),
        local=usage.get("LOCAL", 0),
        shared=int(getattr(metadata, "shared", 0) or 0) + usage.get("SHARED", 0),
        loads=dict(sorted(loads.items())),
        stores=dict(sorted(stores.items())),
        blocked_layouts=tuple(_BLOCKED.findall(compiled.asm.get("ttgir", ""))),
        signature=signature,
        constexprs=constexprs,
        source=str(source),
        asm={k: compiled.asm[k] for k in ("ttgir", "ptx", "cubin") if k in compiled.asm},
    )


def can_compile_here() -> bool:
    """False when triton.language was imported with TRITON_INTERPRET on: its own jit functions
    (tl.zeros, ...) are then interpreted ones, which the compiler cannot call."""
    import triton.language.standard as standard

    return not any(type(v).__name__ == "InterpretedFunction" for v in vars(standard).values())


class AOTError(RuntimeError):
    """A compilation that failed in a worker process (its message keeps the original error)."""


def _inspect_in_worker(call: dict):
    try:
        return inspect_op(**call)
    except Exception as e:  # noqa: BLE001  (crosses a process boundary as text)
        return AOTError(f"{call}: {type(e).__name__}: {e}")


@contextlib.contextmanager
def _compiling_processes(processes: int):
    """Fresh Python processes with the interpreter off (spawned: nothing inherited). An executor,
    not a multiprocessing.Pool: a worker that dies raises BrokenProcessPool instead of hanging."""
    context = multiprocessing.get_context("spawn")
    # workers start on demand, so the interpreter stays off (in the environment they copy) for
    # the whole block; this process only waits meanwhile
    with _interpreter_off(), concurrent.futures.ProcessPoolExecutor(processes, context) as pool:
        yield pool


def inspect_many(
    calls: list[dict], processes: int | None = None, *, return_exceptions: bool = False
) -> list:
    """``[inspect_op(**call) for call in calls]``, in ``processes`` worker processes (default:
    one per CPU, at most 4; always workers when this process cannot compile). With
    ``return_exceptions`` a failed call gives its AOTError instead of raising."""
    if not calls:
        return []
    processes = processes or min(len(calls), os.cpu_count() or 1, 4)
    if processes <= 1 and can_compile_here():
        results = [_inspect_in_worker(call) for call in calls]
    else:
        with _compiling_processes(max(processes, 1)) as pool:
            results = list(pool.map(_inspect_in_worker, calls))
    for r in results:
        if isinstance(r, Exception) and not return_exceptions:
            raise r
    return results


def inspect_op(
    op: str,
    input_shape,
    dtype=torch.float16,
    layout="channels_first",
    *,
    arch: str = "sm_90a",
    direction: str = "fwd",
    **pool_args,
) -> list[KernelReport]:
    """Compile, for ``arch``, every kernel ``plan_op`` would launch, and report on each (in a
    worker process when this one runs the interpreter, see ``can_compile_here``)."""
    if not can_compile_here():
        call = dict(
            op=op,
            input_shape=tuple(input_shape),
            dtype=dtype,
            layout=layout,
            arch=arch,
            direction=direction,
            **pool_args,
        )
        return inspect_many([call], processes=1)[0]
    window = {k: v for k, v in pool_args.items() if k != "with_indices"}
    try:
        label = f"{op} {window_label(op_spec(op, **window))} {direction}"
    except (ValueError, TypeError):  # not a window op: no window to label
        label = f"{op} {direction}"
    return [
        compile_launch(
            plan, arch, op=label, layout=layout, shape=tuple(input_shape), dtype=DTYPES[dtype]
        )
        for plan in plan_op(op, input_shape, dtype, layout, direction=direction, **pool_args)
    ]


# --- reporting ------------------------------------------------------------------------------------


def _widths(counts: dict) -> str:
    return " ".join(f"{w}x{n}" for w, n in sorted(counts.items(), reverse=True)) or "-"


def format_table(reports) -> str:
    """A fixed-width text table, one row per compiled kernel; widths read "bits x instructions"."""
    head = (
        "arch",
        "op",
        "kernel",
        "layout",
        "dtype",
        "input",
        "config",
        "regs",
        "spill",
        "smem",
        "loads (bits x n)",
        "stores (bits x n)",
    )
    rows = [head] + [
        (
            r.arch,
            r.op,
            r.kernel,
            r.layout,
            r.dtype,
            "x".join(map(str, r.shape)),
            r.config,
            str(r.registers),
            str(r.spill_bytes),
            str(r.shared),
            _widths(r.loads),
            _widths(r.stores),
        )
        for r in reports
    ]
    size = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(n) for c, n in zip(row, size, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * n for n in size))
    return "\n".join(lines)


def main(argv=None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m tgpool.aot", description=__doc__.split("\n\n")[0])
    p.add_argument("op", help="max_pool2d, avg_pool3d, ...")
    p.add_argument("shape", help="batched input shape, e.g. 8,64,56,56")
    p.add_argument("--dtype", default="float16", choices=sorted(DTYPES.values()))
    p.add_argument("--layout", default="channels_first", choices=sorted(_LAYOUTS))
    p.add_argument("--direction", default="fwd", choices=DIRECTIONS)
    p.add_argument("--arch", nargs="+", default=sorted(ARCHS), choices=sorted(ARCHS))
    p.add_argument("-k", "--kernel-size", type=int, required=True)
    p.add_argument("-s", "--stride", type=int)
    p.add_argument("-p", "--padding", type=int, default=0)
    p.add_argument("--with-indices", action="store_true")
    p.add_argument("--ttgir", action="store_true", help="also print each kernel's TTGIR")
    a = p.parse_args(argv)
    dtype = {v: k for k, v in DTYPES.items()}[a.dtype]
    shape = tuple(int(s) for s in a.shape.split(","))
    extra = {"with_indices": a.with_indices} if a.op.startswith("max") else {}
    reports = [
        r
        for arch in a.arch
        for r in inspect_op(
            a.op,
            shape,
            dtype,
            a.layout,
            arch=arch,
            direction=a.direction,
            kernel_size=a.kernel_size,
            stride=a.stride,
            padding=a.padding,
            **extra,
        )
    ]
    print(format_table(reports))
    for r in reports if a.ttgir else ():
        print(f"\n// {r.arch} {r.kernel} ({r.source})\n{r.asm['ttgir']}")


if __name__ == "__main__":
    main()
