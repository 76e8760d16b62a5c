"""Launch plans: what an op's implementation does for one call signature, recorded once, replayed.

An op's implementation (tgpool/ops) checks its arguments, builds a spec, views its tensors, renders
or finds the generated kernel, asks for launch configs, allocates outputs and launches. All of that
follows from the call signature alone:

- the op and its non-tensor arguments;
- each tensor's shape, strides, dtype, device and address modulo 16 (Triton specialises on 16-byte
  alignment; tgpool's vector widths follow it too);
- the settings that change a plan (``runtime.settings()``: TRITON_INTERPRET, TGPOOL_*), the
  deterministic-algorithms flag, ``launch.config_epoch()`` (bumped whenever a tuned config or
  the config provider changes) and ``codegen.loaded_generation()`` (the loaded kernel modules).

``PlanCache.call`` runs the first call of a signature in full while recording it: the allocations
(seen by a dispatch mode), the launches (``runtime.launch_with`` hands them to the recorder), and
where every kernel argument and every returned tensor comes from: an input, an allocation, or a
view of one. An identical later call builds no plan: one key, one lookup, then it allocates
(zero-filling what the run zero-filled before its first launch), launches and returns. A call that
does anything else (a copy, another fill, a sort, a host read, a view whose dtype differs) is not
recorded, and runs in full every time, so a replay can never differ from a run.

The cache is bounded (oldest plans dropped first), and safe under threads: a plan is immutable once
stored, and recording is per thread.
"""

from __future__ import annotations

import threading

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from . import codegen, launch, runtime

aten = torch.ops.aten

#: ATen ops that only allocate: a replay allocates the same (shape, strides, dtype, device)
ALLOCATIONS = {
    aten.empty_strided.default,
    aten.empty.memory_format,
    aten.new_empty.default,
    aten.new_empty_strided.default,
    aten.empty_like.default,
}
#: ATen ops that allocate zeros: a replay allocates, then zero-fills
ZERO_ALLOCATIONS = {aten.zeros.default, aten.zeros_like.default, aten.new_zeros.default}
#: plans kept before the oldest are dropped
MAX_PLANS = 4096


class Memo:
    """A bounded dict, safe under threads: the oldest entries are dropped first."""

    def __init__(self, size: int = MAX_PLANS):
        self.size = size
        self._entries: dict = {}
        self._lock = threading.Lock()
        self.get = self._entries.get

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key, value) -> None:
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.size:
                del self._entries[next(iter(self._entries))]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def args_key(*values):
    """A memo key for torch-style pooling arguments, or None when one is not an int, a float, a
    bool, a string, None or a list / tuple of ints. Types are part of the key where values
    compare equal across types (2 == 2.0 == True), since torch accepts one and refuses another."""
    key = []
    append = key.append
    for v in values:
        kind = type(v)
        if kind is int or v is None:
            append(v)
        elif kind is tuple or kind is list:
            for e in v:
                if type(e) is not int:
                    return None
            append((tuple, *v))
        elif kind is bool or kind is float or kind is str:
            append((kind, v))
        else:
            return None
    return tuple(key)


class _Unplannable(Exception):
    """The call did something a replay would not redo."""


class _Recording(TorchDispatchMode):
    """Sees every ATen op of an implementation's run: allocations are kept, views pass, anything
    else marks the call as not replayable. Paused inside launches (the interpreter reads and
    writes tensors there) and while the config provider runs (tuning measures with real ops)."""

    def __init__(self):
        super().__init__()
        self.allocations: list[torch.Tensor] = []
        self.zeroed: set[int] = set()  # positions in allocations zero-filled before any launch
        self.launches: list[tuple] = []
        self.paused = 0
        self.replayable = True
        self.volatile_at_start = launch.volatile_count()

    def record_launch(self, kernel, grid, args, kwargs) -> None:
        """runtime.launch_with hands every launch here (then pauses this recording while it runs);
        launches made while the config provider runs (tuning) are not the call's own."""
        if not self.paused and launch.current_plan() is None:
            self.launches.append((kernel, grid, args, kwargs))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.paused or launch.current_plan() is not None:
            return out
        if func in ALLOCATIONS:
            self.allocations.append(out)
        elif func in ZERO_ALLOCATIONS:
            self.zeroed.add(len(self.allocations))
            self.allocations.append(out)
        elif func is aten.zero_.default:
            self._zero(args[0])
        elif not func.is_view:
            self.replayable = False
        return out

    def _zero(self, t: torch.Tensor) -> None:
        """``t.zero_()`` replays as a zero-filled allocation when ``t`` is a whole allocation and
        no launch came before it (a launch may have written into it)."""
        storage = t.untyped_storage().data_ptr()
        for i, a in enumerate(self.allocations):
            same = a is t or (
                storage != 0
                and a.untyped_storage().data_ptr() == storage
                and a.numel() == t.numel()
            )
            if same and not self.launches:
                self.zeroed.add(i)
                return
        self.replayable = False


class Plan:
    """One recorded call: allocations, launches (arguments as slots), results (as slots)."""

    __slots__ = ("allocations", "launches", "results", "single", "inputs", "_steps", "_result")

    def __init__(self, allocations, launches, results, single):
        self.allocations = allocations  # [(shape, stride, dtype, device, zero-filled)]
        self.launches = launches  # [(kernel, grid, template, tensor_slots, launch options)]
        self.results = results  # [slot]
        self.single = single  # the implementation returned one tensor, not a tuple
        self.inputs = ()  # positions of the call's tensor arguments
        # each launch's argument list as one generated expression over the sources: a replay
        # runs no Python loop over a kernel's 20-40 arguments
        self._steps = [
            (kernel, grid, _assembler(template, slots), options)
            for kernel, grid, template, slots, options in launches
        ]
        assemble = _assembler([None] * len(results), list(enumerate(results)))
        self._result = (lambda s: assemble(s)[0]) if single else (lambda s: tuple(assemble(s)))

    def run(self, sources: list):
        """The call again, on ``sources`` (the call's tensor arguments; extended in place)."""
        for shape, stride, dtype, device, zeroed in self.allocations:
            allocated = torch.empty_strided(shape, stride, dtype=dtype, device=device)
            sources.append(allocated.zero_() if zeroed else allocated)
        launch = runtime.launch_with
        for kernel, grid, assemble, options in self._steps:
            launch(kernel, grid, assemble(sources), options)
        return self._result(sources)


def _assembler(template, slots):
    """``f(sources)``: ``template`` (a launch's arguments) with each slot's tensor filled in, as
    one list display compiled once: ``[s[0], t[1], s[3], r(v[0], s), ...]``."""
    items = [f"t[{i}]" for i in range(len(template))]
    views = []
    for position, slot in slots:
        if type(slot) is int:
            items[position] = f"s[{slot}]"
        else:
            items[position] = f"r(v[{len(views)}], s)"
            views.append(slot)
    scope = {"t": tuple(template), "v": tuple(views), "r": _resolve}
    return eval(f"lambda s: [{', '.join(items)}]", scope)  # noqa: S307 - built from ints only


def _resolve(slot, sources):
    if type(slot) is int:
        return sources[slot]
    index, shape, stride, offset = slot
    base = sources[index]
    return base.as_strided(shape, stride, base.storage_offset() + offset)


def _slot(t: torch.Tensor, sources: list[torch.Tensor], exact: bool):
    """Where ``t`` comes from: a source's index, or (index, shape, stride, element offset) for a
    view of it. ``exact``: the view must be rebuilt (a result) rather than only point at the same
    address with the same dtype (a kernel argument: Triton reads the address and the dtype)."""
    for i, s in enumerate(sources):
        if t is s:
            return i
    storage = t.untyped_storage().data_ptr()
    for i, s in enumerate(sources):
        if s.untyped_storage().data_ptr() != storage or s.dtype != t.dtype or storage == 0:
            continue
        if t.data_ptr() == s.data_ptr() and not exact:
            return i
        same = t.shape == s.shape and t.stride() == s.stride()
        if t.data_ptr() == s.data_ptr() and same:
            return i
        return (i, tuple(t.shape), tuple(t.stride()), t.storage_offset() - s.storage_offset())
    raise _Unplannable(f"a tensor of no known origin ({tuple(t.shape)}, {t.dtype})")


def _build(recording: _Recording, tensors: list, result) -> Plan:
    used = list(recording.allocations)
    sources = list(tensors) + used
    storages = [s.untyped_storage().data_ptr() for s in sources if s.numel()]
    if len(set(storages)) != len(storages):  # aliasing inputs: the origin would be ambiguous
        raise _Unplannable("inputs share memory")
    launches = []
    for kernel, grid, args, kwargs in recording.launches:
        template, slots = list(args), []
        for position, a in enumerate(args):
            if isinstance(a, torch.Tensor):
                slots.append((position, _slot(a, sources, exact=False)))
                template[position] = None
            elif not isinstance(a, (int, float, bool, type(None))):
                raise _Unplannable(f"kernel argument of type {type(a).__name__}")
        launches.append((kernel, tuple(grid), tuple(template), tuple(slots), kwargs))
    single = isinstance(result, torch.Tensor)
    outputs = (result,) if single else tuple(result)
    if not all(isinstance(t, torch.Tensor) for t in outputs):
        raise _Unplannable("a result that is not a tensor")
    results = [_slot(t, sources, exact=True) for t in outputs]
    if any((r if type(r) is int else r[0]) < len(tensors) for r in results):
        raise _Unplannable("a result aliases an input")
    allocations = [
        (tuple(a.shape), tuple(a.stride()), a.dtype, a.device, i in recording.zeroed)
        for i, a in enumerate(used)
    ]
    return Plan(allocations, launches, results, single)


class PlanCache:
    """Plans by call signature for one family of implementations; ``builds`` counts recordings."""

    def __init__(self, max_plans: int = MAX_PLANS):
        self._plans = Memo(max_plans)
        self.builds = 0
        self.unplannable = 0

    def __len__(self) -> int:
        return len(self._plans)

    def clear(self) -> None:
        self._plans.clear()

    def call(self, name: str, impl, args: tuple):
        """``impl(*args)``, replayed from the plan of this call signature when there is one."""
        key = signature(name, args)
        plan = self._plans.get(key) if key is not None else None
        if plan is not None:
            return plan.run([args[i] for i in plan.inputs])
        if key is None or runtime.plan_recording() is not None:
            return impl(*args)
        return self._record(key, impl, args)

    def _record(self, key, impl, args):
        recording = _Recording()
        runtime.set_plan_recording(recording)
        try:
            with recording:
                result = impl(*args)
        finally:
            runtime.set_plan_recording(None)
        self.builds += 1
        if not recording.replayable or launch.volatile_count() != recording.volatile_at_start:
            self.unplannable += 1
            return result
        try:
            positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
            plan = _build(recording, [args[i] for i in positions], result)
            plan.inputs = positions
        except _Unplannable:
            self.unplannable += 1
            return result
        self._plans.put(key, plan)
        return result


_deterministic = torch._C._get_deterministic_algorithms
_Tensor = torch.Tensor
_Parameter = torch.nn.Parameter
_SCALARS = (int, float, bool, str, type(None))


def signature(name: str, args: tuple):
    """The plan key of a call, or None when an argument cannot be keyed (then no plan)."""
    epoch, generation = launch.config_epoch(), codegen.loaded_generation()
    key = [name, epoch, generation, _deterministic(), runtime.settings()]
    append = key.append
    for a in args:
        kind = type(a)
        if kind is _Tensor or kind is _Parameter:
            # get_device(): -1 on the CPU, the index on CUDA (the only devices plans run on)
            append((a.shape, a.stride(), a.dtype, a.get_device(), a.data_ptr() & 15))
        elif kind is list:
            append(tuple(a))
        elif kind in _SCALARS:
            append(a)
        else:
            return None  # tensor subclasses included: no plan
    return tuple(key)
