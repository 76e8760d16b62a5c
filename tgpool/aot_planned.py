"""Ahead-of-time inspection of launches from any planner, before its family is registered.

``aot.inspect_many`` finds an op's planner in ``families.FAMILIES``; this compiles the launches of
an explicitly named planner ("module:function", aot.plan_window_op's signature) the same way (in
spawned processes with the interpreter off, through ``aot.compile_launch``), so a new family can be
checked for spills and access widths on its own.
"""

from __future__ import annotations

import importlib

from . import aot


def _compile(call: dict):
    call = dict(call)
    planner, arch = call.pop("planner"), call.pop("arch")
    op, shape = call.pop("op"), tuple(call.pop("input_shape"))
    dtype, layout = call.pop("dtype"), call.pop("layout", "channels_first")
    module, _, name = planner.partition(":")
    try:
        plans = getattr(importlib.import_module(module), name)(op, shape, dtype, layout, **call)
        return [
            aot.compile_launch(p, arch, op=op, layout=layout, shape=shape)
            for p in plans
            if p is not None
        ]
    except Exception as e:  # noqa: BLE001  (crosses a process boundary as text)
        return aot.AOTError(f"{planner} {op} {shape}: {type(e).__name__}: {e}")


def inspect_planned(calls: list[dict], processes: int = 2) -> list[list[aot.KernelReport]]:
    """For each call (planner, op, input_shape, dtype, layout, arch, planner keywords): the
    reports of its compiled launches. Raises the first failure."""
    with aot._compiling_processes(max(1, min(processes, len(calls)))) as pool:
        results = list(pool.map(_compile, calls))
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results
