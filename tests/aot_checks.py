"""Shared checks of the ahead-of-time test modules: compile a module's cases once (for sm_80 and
sm_90a, through ``aot.inspect_many``: the family registry's planners in spawned worker processes
with the interpreter off), then assert, per case and arch, that no kernel spills registers and
that the named kernels issue the required global load and store widths.

A case is ``(name, call, wanted)``: ``call`` is an ``aot.inspect_op`` call without ``arch`` (dtype
defaults to float16), ``wanted`` maps kernel -> (load widths, store widths) that must appear.
"""

from __future__ import annotations

import pytest
import torch

from tgpool import aot


def assert_no_spills(r: aot.KernelReport, where: str = "") -> None:
    """A compiled kernel that uses registers, spills none, and reads and writes global memory."""
    where = f"{where}: " if where else ""
    assert r.registers > 0, f"{where}{r}"
    assert r.spill_bytes == 0, (
        f"{where}{r.kernel} on {r.arch} spills ({r.registers} regs, stack {r.stack}, "
        f"local {r.local})"
    )
    assert r.loads and r.stores, f"{where}{r.kernel}: no global loads or stores found in the PTX"


def _calls(call: dict, directions: tuple[str, ...]) -> list[dict]:
    return [
        {"dtype": torch.float16, "arch": arch, "direction": direction, **call}
        for arch in aot.ARCHS
        for direction in directions
    ]


def reports_fixture(cases: list[tuple], directions: tuple[str, ...] = ("fwd",)):
    """A module-scoped fixture: case name -> arch -> kernel -> report, every case compiled once
    per arch and per direction (a case's own ``direction`` replaces ``directions``)."""

    @pytest.fixture(scope="module")
    def reports():
        calls = [_calls(call, directions) for _, call, _ in cases]
        found = iter(aot.inspect_many([c for cs in calls for c in cs]))
        by_case = {}
        for (name, _, _), cs in zip(cases, calls, strict=True):
            kernels = by_case[name] = {arch: {} for arch in aot.ARCHS}
            for call in cs:
                kernels[call["arch"]].update((r.kernel, r) for r in next(found))
        return by_case

    return reports


def each_case(cases: list[tuple]):
    """Parametrizes a test over ``cases`` (argument ``case``), each named after its case."""
    return pytest.mark.parametrize("case", cases, ids=[c[0] for c in cases])


def assert_case(reports: dict, case: tuple) -> None:
    """On every arch: no compiled kernel spills, and each wanted kernel was launched with at least
    the wanted load and store widths."""
    name, _, wanted = case
    for arch, kernels in reports[name].items():
        assert kernels, f"{name} {arch}: nothing compiled"
        for r in kernels.values():
            assert_no_spills(r, f"{name} {arch}")
        for kernel, (loads, stores) in wanted.items():
            assert kernel in kernels, f"{name} {arch}: {kernel} not launched ({list(kernels)})"
            r = kernels[kernel]
            assert loads <= set(r.loads), f"{name} {arch} {kernel}: loads {r.loads}"
            assert stores <= set(r.stores), f"{name} {arch} {kernel}: stores {r.stores}"
