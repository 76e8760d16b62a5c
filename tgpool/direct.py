"""Direct launches: a compiled kernel's own launcher, without Triton's per-launch dispatch.

``kernel[grid](*args, **meta, num_warps=w, num_stages=s)`` goes through ``JITFunction.run`` on
every launch: bind the arguments, specialise each one, build a cache-key string, look it up, check
the kernel's globals, build launch metadata. That costs 8-20 us of host time per launch, more than
many of tgpool's kernels take on the GPU. At its end ``JITFunction.run`` calls the launcher of the
``CompiledKernel`` it found, and returns that kernel::

    kernel.run(grid_0, grid_1, grid_2, stream, kernel.function, kernel.packed_metadata,
               launch_metadata, launch_enter_hook, launch_exit_hook, *every_bound_argument)

(the same call in Triton 3.6 to 3.9; every parameter in signature order, constexprs included: the
launcher skips the ones compiled in). So the first launch of a specialisation goes through the JIT
and keeps what it returns; a later launch of the same specialisation makes that call itself.

"The same specialisation" is everything Triton's cache key holds, and ``launch`` keys on all of
it, never coarser (tests/test_direct_launch.py checks the key against Triton's own binder):

- per argument, as Triton's ``native_specialize_impl``: a tensor's dtype and whether its address
  is a multiple of 16; an int's value class (== 1, which Triton compiles in and does not pass;
  i32 / i64 / u64) and whether it is a multiple of 16; bools, floats and None by kind; constexprs
  by type and value (``do_not_specialize`` parameters as Triton treats them);
- the keywords (``meta``: constexprs and compile options) by name, type and value, num_warps and
  num_stages;
- the current device (each device holds its own compiled kernel, loaded in its context);
- the process-wide knobs ``JITFunction.run`` adds to its key: ``knobs.runtime.debug``,
  ``knobs.compilation.instrumentation_mode`` and (3.9) ``fpsan_homomorphic_casts``, read at each
  launch.

Anything else takes ``kernel[grid](...)`` every time: the interpreter (an InterpretedFunction),
a wrapper that picks its own config (``triton.autotune``, ``triton.heuristics``), a callable grid,
arguments Triton specialises in ways not keyed here (tuples, tensor descriptors, JIT functions),
a non-constexpr parameter passed by keyword, a kernel with pre-run hooks, a stages-inspection
hook, and a Triton outside the versions whose launcher call was checked (``TRITON_VERSIONS``).

Launch hooks (``knobs.runtime.launch_enter_hook`` / ``launch_exit_hook``, as profilers set them)
are honoured: with a hook set, the launch metadata is built and the hooks passed, as the JIT does.
Each launcher keeps its ``CompiledKernel`` alive: from Triton 3.8 dropping the last reference
unloads its module. The stream is the current stream at each launch, so streams and CUDA graph
capture behave as with the JIT. Not done here, on purpose: the JIT's check that the kernel's
global variables have not changed since it was compiled (tgpool's kernels read none that change).
"""

from __future__ import annotations

import inspect
from collections import Counter

import torch
import triton
from triton.runtime import driver as _driver
from triton.runtime.jit import JITFunction

#: the Triton versions (major, minor) whose launcher call and cache key this module follows
TRITON_VERSIONS = ((3, 6), (3, 9))

#: direct launches so far, by kernel name (the tests' proof that the direct path ran)
launch_counts: Counter = Counter()


def _version(text: str) -> tuple:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


SUPPORTED = TRITON_VERSIONS[0] <= _version(triton.__version__) <= TRITON_VERSIONS[1]
if SUPPORTED:
    from triton import knobs as _knobs

#: kernels seen, by id (each entry holds its kernel, so an id is never reused while stored)
_kernels: dict = {}
#: a specialisation not launched yet (a stored None: one that always takes the JIT)
_MISSING = object()


def launch(kernel, grid, args, meta: dict, num_warps: int, num_stages: int) -> None:
    """``kernel[grid](*args, **meta, num_warps=num_warps, num_stages=num_stages)``, made directly
    with the compiled kernel's launcher when this specialisation was launched here before."""
    launchers = _kernels.get(id(kernel))
    if launchers is None:
        launchers = _kernels[id(kernel)] = _KernelLaunchers(kernel)
    launchers.launch(grid, args, meta, num_warps, num_stages)


def clear() -> None:
    """Forget every launcher: the next launch of each specialisation goes through the JIT."""
    _kernels.clear()


def _jit(kernel, grid, args, meta, num_warps, num_stages):
    return kernel[grid](*args, **meta, num_warps=num_warps, num_stages=num_stages)


def _plain_jit_function(kernel) -> bool:
    """Whether ``kernel`` is a JITFunction whose ``run`` is Triton's own (so it returns the
    CompiledKernel it launched); wrappers and the interpreter's functions are not."""
    return isinstance(kernel, JITFunction) and type(kernel).run is JITFunction.run


class _KernelLaunchers:
    """One kernel's launchers, by specialisation key (None: this specialisation cannot be
    launched directly, keep the JIT), and its key functions by argument count."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.direct = SUPPORTED and _plain_jit_function(kernel)
        self.name = kernel.fn.__name__ if hasattr(kernel, "fn") else getattr(kernel, "__name__", "")
        self.key_functions: dict = {}
        self.launchers: dict = {}

    def launch(self, grid, args, meta, num_warps, num_stages) -> None:
        kernel = self.kernel
        key = self.key(grid, args, meta, num_warps, num_stages) if self.direct else None
        if key is None:
            _jit(kernel, grid, args, meta, num_warps, num_stages)
            return
        device, key = key
        try:
            launcher = self.launchers.get(key, _MISSING)
        except TypeError:  # an unhashable constexpr value (a list): keep the JIT
            launcher = None
        if launcher is None:
            _jit(kernel, grid, args, meta, num_warps, num_stages)
        elif launcher is not _MISSING:
            launcher(grid, args, _driver.active.get_current_stream(device))
            launch_counts[self.name] += 1
        else:
            compiled = _jit(kernel, grid, args, meta, num_warps, num_stages)
            compiled = _compiled_kernel(compiled)
            if compiled is not None:  # None: a jit_cache_hook vetoed compiling; try again later
                self.launchers[key] = _make_launcher(compiled, kernel, len(args), meta)

    def key(self, grid, args, meta, num_warps, num_stages):
        """(device, key) of this launch's specialisation, or None when it must take the JIT."""
        if callable(grid) or self.kernel.pre_run_hooks:
            return None
        key_function = self.key_functions.get(len(args))
        if key_function is None:
            key_function = self.key_functions[len(args)] = specialisation_key(
                self.kernel, len(args)
            )
        arguments = key_function(args)
        knobs = _knob_values()
        if arguments is None or knobs is None:
            return None
        device = _driver.active.get_current_device()
        options = (num_warps, num_stages, *meta.items(), *map(type, meta.values()))
        return device, (arguments, options, device, knobs)


def _knob_values():
    """The process-wide knobs ``JITFunction.run`` puts in its cache key, or None while a
    stages-inspection hook is set (its hash comes from a call at each launch: keep the JIT)."""
    runtime, compilation = _knobs.runtime, _knobs.compilation
    if getattr(runtime, "add_stages_inspection_hook", None) is not None:
        return None
    return (
        runtime.debug,
        compilation.instrumentation_mode,
        getattr(compilation, "fpsan_homomorphic_casts", None),
    )


# --- specialisation keys --------------------------------------------------------------------------


class _Unkeyed(Exception):
    """An argument this module does not key (Triton specialises it otherwise): keep the JIT."""


def _argument_code(x, specialise: bool, align: bool):
    """One non-constexpr argument's part of the key, as fine as ``native_specialize_impl``: the
    general case behind the generated key function's fast paths (i32 ints, plain tensors)."""
    kind = type(x)
    if kind is bool:
        return "u1"
    if kind is int:
        if specialise and x == 1:
            return 1  # Triton compiles it in as a constexpr
        if -(2**31) <= x < 2**31:
            code = "i32"
        elif -(2**63) <= x < 2**63:
            code = "i64"
        elif 0 <= x < 2**64:
            code = "u64"
        else:
            raise _Unkeyed  # Triton raises: let the JIT say so
        return code + ("D" if specialise and align and x % 16 == 0 else "")
    if kind is float:
        return "fp"
    if x is None:
        return "none"
    if isinstance(x, torch.Tensor):  # subclasses: nn.Parameter, ...
        return (x.dtype, (x.data_ptr() % 16 == 0) if specialise and align else None)
    raise _Unkeyed


def specialisation_key(kernel, n_args: int):
    """A function ``key(args)`` for ``n_args`` positional arguments of ``kernel``: equal keys only
    where Triton specialises the arguments identically (never coarser), None for arguments it
    does not key. Generated from the signature, one expression per argument, like Triton's own
    binder: a few tenths of a microsecond per argument."""
    params = kernel.params
    if n_args > len(params):
        return lambda args: None
    names = [f"x{p.num}" for p in params[:n_args]]
    lines = [f"{', '.join(names)}, = args"] if names else []
    parts = []
    for p, x in zip(params, names):
        if p.is_constexpr:
            parts.append(f"({x}.__class__, {x})")
            continue
        specialise = not p.do_not_specialize
        align = specialise and not p.do_not_specialize_on_alignment
        if align:
            small = f"(1 if {x} == 1 else 2 | (not {x} & 15))"
            tensor = f"({x}.dtype, not {x}.data_ptr() & 15)"
        else:
            small = f"(1 if {x} == 1 else 2)" if specialise else "2"
            tensor = f"({x}.dtype, None)"
        # ints in the i32 range first (most of tgpool's arguments), then plain tensors
        lines.append(
            f"k{p.num} = {small} if {x}.__class__ is int and -2147483648 <= {x} <= 2147483647 "
            f"else {tensor} if {x}.__class__ is Tensor else code({x}, {specialise}, {align})"
        )
        parts.append(f"k{p.num}")
    body = "\n        ".join(lines or ["pass"])
    source = (
        "def key(args):\n"
        "    try:\n"
        f"        {body}\n"
        "    except Unkeyed:\n"
        "        return None\n"
        f"    return ({', '.join(parts)}{',' if parts else ''})\n"
    )
    namespace = {"Tensor": torch.Tensor, "code": _argument_code, "Unkeyed": _Unkeyed}
    exec(source, namespace)  # noqa: S102 - built from the kernel's signature alone
    key = namespace["key"]
    key.source = source
    return key


# --- launchers ------------------------------------------------------------------------------------


def _compiled_kernel(returned):
    """The CompiledKernel ``kernel[grid](...)`` returned, or None where there is none to launch
    (the interpreter and a vetoing jit_cache_hook return None)."""
    if returned is not None and not hasattr(returned, "packed_metadata"):
        result = getattr(returned, "result", None)  # 3.6's asynchronous compile: a future
        returned = result() if callable(result) else None
    needed = ("run", "function", "packed_metadata", "launch_metadata", "src")
    if returned is None or not all(hasattr(returned, name) for name in needed):
        return None
    return returned


def _hooked(hook) -> bool:
    """Whether a launch hook would do anything (an empty HookChain does not)."""
    return hook is not None and bool(getattr(hook, "calls", True))


def _constexpr_tail(kernel, n_args: int, meta: dict):
    """The values of the parameters after the positional ones: each a constexpr from ``meta`` or
    its default. None when a non-constexpr one would be frozen (it could change between launches
    without changing the key) or one is missing."""
    tail = []
    for p in kernel.params[n_args:]:
        if not p.is_constexpr:
            return None
        if p.name in meta:
            tail.append(meta[p.name])
        elif p.default is not inspect.Parameter.empty:
            tail.append(p.default)
        else:
            return None
    return tuple(tail)


def _make_launcher(compiled, kernel, n_args: int, meta: dict):
    """``launch(grid, args, stream)`` that calls ``compiled``'s launcher as ``JITFunction.run``
    does, for arguments of the specialisation ``compiled`` was made for; None where the compiled
    kernel does not follow that contract (the caller keeps the JIT for this key)."""
    signature = getattr(compiled.src, "signature", None)
    if not isinstance(signature, dict) or len(signature) != len(kernel.params):
        return None  # every parameter, constexprs too, has had an entry since Triton 3.3
    if getattr(compiled.src, "fn", kernel) is not kernel:
        return None
    tail = _constexpr_tail(kernel, n_args, meta)
    if tail is None:
        return None
    run = compiled.run  # a property: loads the module on the current device if not yet loaded
    function, packed = compiled.function, compiled.packed_metadata
    metadata_of = compiled.launch_metadata
    hooks = _knobs.runtime

    def launcher(grid, args, stream) -> None:
        n = len(grid)
        enter, leave = hooks.launch_enter_hook, hooks.launch_exit_hook
        if _hooked(enter) or _hooked(leave):
            metadata = metadata_of(grid, stream, *args, *tail)
        else:
            metadata = enter = leave = None  # what the C launcher does for empty hook chains
        run(
            grid[0],
            grid[1] if n > 1 else 1,
            grid[2] if n > 2 else 1,
            stream,
            function,
            packed,
            metadata,
            enter,
            leave,
            *args,
            *tail,
        )

    launcher.compiled = compiled  # keeps the module loaded (Triton 3.8+ unloads on __del__)
    return launcher
