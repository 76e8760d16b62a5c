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
import importlib.util
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import triton

from ..kernels import window as window_pool
from ..spec import DTYPES
from .plan import op_spec, plan_op, window_label
from .report import KernelReport, global_access_widths  # noqa: F401
from .specialise import rule_specialisation, specialise  # noqa: F401  (aot.<name>)

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


_BLOCKED = re.compile(r"#ttg\.blocked<\{[^}]*\}>")  # TTGIR register layouts


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
