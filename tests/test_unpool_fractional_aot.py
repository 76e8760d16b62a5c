"""max_unpool and fractional max-pool kernels compiled ahead of time for sm_80 and sm_90a (no GPU
needed): no register spills, and 128-bit global accesses where the contiguous axis allows them
(unpooling reads values and indices along it and stores at the indices; fractional pooling
gathers its windows and writes outputs, indices and input gradients along it).

The ops' planners (unpool.plan_unpool_op, fractional_pool.plan_fractional_op) run in worker
processes with the interpreter off, as aot.inspect_many does for registered families."""

from __future__ import annotations

import importlib

import pytest
import torch

from tgpool import aot

CALLS = [
    # (name, planner, call, kernel -> (load widths, store widths) that must appear)
    (
        "unpool2d_nchw_56",  # SegNet decoder shape: values and indices read 128 bits at a time
        "tgpool.unpool:plan_unpool_op",
        {"op": "max_unpool2d", "input_shape": (8, 64, 56, 56)},
        {"max_unpool2d_fwd_rows": ({128}, set()), "max_unpool2d_bwd_rows": ({128}, {128})},
    ),
    (
        "unpool2d_channels_last",
        "tgpool.unpool:plan_unpool_op",
        {"op": "max_unpool2d", "input_shape": (8, 64, 56, 56), "layout": "channels_last"},
        {"max_unpool2d_fwd_channels": ({128}, set()), "max_unpool2d_bwd_channels": ({128}, set())},
    ),
    (
        "unpool3d_ncdhw",
        "tgpool.unpool:plan_unpool_op",
        {"op": "max_unpool3d", "input_shape": (2, 32, 8, 16, 16)},
        {"max_unpool3d_fwd_rows": ({128}, set()), "max_unpool3d_bwd_rows": ({128}, {128})},
    ),
    (
        "fractional2d_56_to_32",
        "tgpool.fractional_pool:plan_fractional_op",
        {"op": "fractional_max_pool2d", "input_shape": (8, 64, 56, 56), "output_size": 32},
        {"fractional_max_pool2d_fwd": (set(), {128}), "fractional_max_pool2d_bwd": (set(), {128})},
    ),
    (
        "fractional3d_k2",
        "tgpool.fractional_pool:plan_fractional_op",
        {"op": "fractional_max_pool3d", "input_shape": (2, 16, 16, 16, 16), "output_size": 8},
        {"fractional_max_pool3d_fwd": (set(), {128}), "fractional_max_pool3d_bwd": (set(), {128})},
    ),
]
DIRECTIONS = ("fwd", "bwd")


def compile_planned(job: tuple) -> list:
    """Plan with ``planner`` on meta tensors and compile every launch for ``arch`` (a worker)."""
    planner, call, arch, direction = job
    module, _, name = planner.partition(":")
    plan = getattr(importlib.import_module(module), name)
    launches = plan(**call, dtype=torch.float16, direction=direction)
    return [aot.compile_launch(p, arch, op=call["op"], dtype="float16") for p in launches]


@pytest.fixture(scope="module")
def reports():
    jobs = [
        (planner, call, arch, direction)
        for _, planner, call, _ in CALLS
        for arch in aot.ARCHS
        for direction in DIRECTIONS
    ]
    with aot._compiling_processes(2) as pool:
        return list(pool.map(compile_planned, jobs))  # a Pool or an executor: both map


@pytest.mark.parametrize("index", range(len(CALLS)), ids=[c[0] for c in CALLS])
def test_no_spills_and_128_bit_accesses(reports, index):
    name, _, _, wanted = CALLS[index]
    per_call = len(aot.ARCHS) * len(DIRECTIONS)
    compiled = [r for rs in reports[index * per_call : (index + 1) * per_call] for r in rs]
    for arch in aot.ARCHS:
        kernels = {r.kernel: r for r in compiled if r.arch == arch}
        for r in kernels.values():
            assert r.spill_bytes == 0, f"{name} {arch}: {r.kernel} spills"
        for kernel, (loads, stores) in wanted.items():
            assert kernel in kernels, f"{name} {arch}: {kernel} not launched ({list(kernels)})"
            r = kernels[kernel]
            assert loads <= set(r.loads), f"{name} {arch} {kernel}: loads {r.loads}"
            assert stores <= set(r.stores), f"{name} {arch} {kernel}: stores {r.stores}"
