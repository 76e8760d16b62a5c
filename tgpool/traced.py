"""Kernels that torch.compile launches itself: tgpool's ops decomposed into their Triton launches.

In eager mode an op's implementation plans and launches its kernels (tgpool/plans.py). Under
torch.compile, AOTAutograd traces the graph with ``FunctionalTensorMode``; there each tgpool op
(tgpool/ops/boundary.py) runs its implementation on the traced tensors instead of staying an opaque
call, and every launch becomes ``torch.library.wrap_triton(kernel)[grid](...)``: a
``triton_kernel_wrapper`` node in the graph. Inductor then compiles and launches the kernel in its
generated code (and CUDA-graph modes capture it), so a compiled model pays none of tgpool's Python
per call. This is what ``torch.library.triton_op`` does; tgpool registers the same decomposition
on its own ops so that their fake implementations, autograd and eager short path stay as they are.

When an op is decomposed (``decomposes``): on CUDA, with static shapes (a dynamic shape keeps the op
opaque: tgpool plans each shape itself), unless ``TGPOOL_TRACE_KERNELS=0``; torch.export keeps
the op (torch's rule for triton ops: the exported program stays serialisable). On the CPU,
Inductor cannot launch Triton kernels, so CPU tensors are decomposed only with
``TGPOOL_TRACE_KERNELS=1`` and the interpreter on: a backend that runs the graph's nodes
(``aot_eager``) then runs the kernels through the interpreter, which is how this is tested here.

Under the interpreter ``triton.jit`` makes ``InterpretedFunction``s, which ``wrap_triton`` does not
trace. ``traceable`` gives each one a ``JITFunction`` twin over the same source (what tracing and
code generation read) whose ``run`` is the interpreter's; helper functions the kernel calls get
twins too, through a copy of their module's globals.
"""

from __future__ import annotations

import contextlib
import threading
import types

import torch

from . import runtime

_twins: dict = {}
_module_globals: dict[int, dict] = {}
_lock = threading.RLock()


@contextlib.contextmanager
def tracing():
    """Launches in the block become graph nodes (the op's implementation runs on traced tensors)."""
    outer = runtime.traced_launch()
    runtime.set_traced_launch(launch)
    try:
        yield
    finally:
        runtime.set_traced_launch(outer)


def decomposes(args) -> bool:
    """Whether a tgpool op with these (traced) arguments is decomposed into its kernels."""
    setting = runtime.switch("TGPOOL_TRACE_KERNELS")
    if setting is False:
        return False
    forced = setting is True
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors or any(_symbolic(a) for a in args):
        return False
    for t in tensors:
        if t.device.type == "cuda":
            pass
        elif not (t.device.type == "cpu" and forced and runtime.interpreter_enabled()):
            return False
        if not all(type(n) is int for n in (*t.shape, *t.stride(), t.storage_offset())):
            return False  # a dynamic shape: the op stays opaque
    return True


def _symbolic(value) -> bool:
    """A symbolic int or float among an op's non-tensor arguments (lists included)."""
    if isinstance(value, (list, tuple)):
        return any(_symbolic(v) for v in value)
    return isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool))


def launch(kernel, grid, args, meta: dict, num_warps: int, num_stages: int) -> None:
    """One launch, as a traced ``triton_kernel_wrapper`` node.

    tgpool's launchers fill the slot of an absent tensor (indices not asked for, no mask) with a
    tensor the launch already has; the variant never touches it. Functionalisation clones only
    the arguments the kernel's Triton IR writes, so such a slot stays a plain read of the same
    tensor: that analysis must succeed (``_analysis_target``), or torch takes every argument
    as written and a repeated tensor's writes could be lost."""
    twin = traceable(kernel)
    with _analysis_target(twin is not kernel):
        torch.library.wrap_triton(twin)[tuple(grid)](
            *args, **meta, num_warps=num_warps, num_stages=num_stages
        )


class _TargetOnly:
    """A Triton driver that only names a GPU target (see ``_analysis_target``)."""

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", 80, 32)


def _language_objects() -> list:
    """The triton.language objects the interpreter patches while it runs a kernel."""
    import triton.language as tl

    names = ("tensor", "math", "condition", "dtype")
    return [tl, tl.core, tl.core.tensor_descriptor_base, *(getattr(tl, n) for n in names)]


#: triton.language as imported, before any kernel ran: the interpreter patches it while a kernel
#: runs, and a helper function called from a kernel leaves its patches behind (Triton 3.6-3.9)
_PRISTINE = (
    [(o, dict(vars(o))) for o in _language_objects()] if runtime.interpreter_enabled() else []
)
_MISSING = object()


@contextlib.contextmanager
def _pristine_language():
    """triton.language as imported, inside the block, with its own jit functions (tl.zeros,
    tl.cdiv ...: interpreted too) replaced by twins; whatever was there, after it."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    changed = []
    for obj, original in _PRISTINE:
        current = dict(vars(obj))
        for name in set(current) | set(original):
            before, now = original.get(name, _MISSING), current.get(name, _MISSING)
            if before is not now:
                changed.append((obj, name, now))
                if before is _MISSING:
                    delattr(obj, name)
                else:
                    setattr(obj, name, before)
    for module in (tl, tl.standard, tl.math, tl.core):
        for name, value in list(vars(module).items()):
            if isinstance(value, InterpretedFunction):
                changed.append((module, name, value))
                setattr(module, name, traceable(value))
    try:
        yield
    finally:
        for obj, name, now in reversed(changed):
            if now is _MISSING:
                if name in vars(obj):
                    delattr(obj, name)
            else:
                setattr(obj, name, now)


@contextlib.contextmanager
def _analysis_target(interpreted: bool):
    """Functionalisation reads which arguments a kernel writes from its Triton IR, built for the
    active driver's target; under the interpreter there is no driver, and torch would take every
    argument as written (inputs included, which breaks autograd's partitioning). So while an
    interpreted kernel's launch is traced, a driver that names sm_80 is active: the IR is built
    (nothing is compiled to a binary or run) and the analysis is the one a GPU gets."""
    if not interpreted:
        yield
        return
    from triton.runtime import driver

    with _lock, _pristine_language():
        previous = driver._active
        driver.set_active(_TargetOnly())
        try:
            yield
        finally:
            driver._active = previous


def traceable(kernel):
    """``kernel`` itself when it is a JITFunction; an interpreted kernel's JITFunction twin."""
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(kernel, InterpretedFunction):
        return kernel
    twin = _twins.get(kernel)
    if twin is None:
        with _lock:
            twin = _twins.get(kernel) or _make_twin(kernel)
    return twin


def _make_twin(kernel):
    from triton.runtime.jit import JITFunction

    class InterpretedTwin(JITFunction):
        """A JITFunction whose launches run the interpreted kernel (and are counted)."""

        def run(self, *args, grid, warmup, **kwargs):
            runtime.launch_counts[self.fn.__name__] += 1
            return self.interpreted.run(*args, grid=grid, warmup=warmup, **kwargs)

    fn = kernel.fn
    twin = InterpretedTwin.__new__(InterpretedTwin)
    _twins[kernel] = twin  # before the globals: kernels of one module may call each other
    source_fn = types.FunctionType(
        fn.__code__, _twin_globals(fn.__globals__), fn.__name__, fn.__defaults__, fn.__closure__
    )
    source_fn.__module__, source_fn.__qualname__ = fn.__module__, fn.__qualname__
    source_fn.__annotations__ = dict(fn.__annotations__)  # tl.constexpr parameters
    source_fn.__kwdefaults__ = fn.__kwdefaults__
    JITFunction.__init__(twin, source_fn)
    twin.interpreted = kernel
    return twin


def _twin_globals(module_globals: dict) -> dict:
    """A copy of a kernel module's globals with every interpreted kernel replaced by its twin."""
    from triton.runtime.interpreter import InterpretedFunction

    copied = _module_globals.get(id(module_globals))
    if copied is None:
        copied = _module_globals[id(module_globals)] = dict(module_globals)
        for name, value in module_globals.items():
            if isinstance(value, InterpretedFunction):
                copied[name] = traceable(value)
    return copied
