"""max_unpool and fractional max-pool kernels compiled ahead of time for sm_80 and sm_90a (no GPU
needed): no register spills, and 128-bit global accesses where the contiguous axis allows them
(unpooling reads values and indices along it and stores at the indices; fractional pooling
gathers its windows and writes outputs, indices and input gradients along it).

aot.inspect_many compiles them through the family registry's planners (unpool.plan_unpool_op,
fractional_pool.plan_fractional_op) in worker processes with the interpreter off."""

from __future__ import annotations

import aot_checks

CALLS = [
    # (name, call, kernel -> (load widths, store widths) that must appear)
    (
        "unpool2d_nchw_56",  # SegNet decoder shape: values and indices read 128 bits at a time
        {"op": "max_unpool2d", "input_shape": (8, 64, 56, 56)},
        {"max_unpool2d_fwd_rows": ({128}, set()), "max_unpool2d_bwd_rows": ({128}, {128})},
    ),
    (
        "unpool2d_channels_last",
        {"op": "max_unpool2d", "input_shape": (8, 64, 56, 56), "layout": "channels_last"},
        {"max_unpool2d_fwd_channels": ({128}, set()), "max_unpool2d_bwd_channels": ({128}, set())},
    ),
    (
        "unpool3d_ncdhw",
        {"op": "max_unpool3d", "input_shape": (2, 32, 8, 16, 16)},
        {"max_unpool3d_fwd_rows": ({128}, set()), "max_unpool3d_bwd_rows": ({128}, {128})},
    ),
    (
        "fractional2d_56_to_32",
        {"op": "fractional_max_pool2d", "input_shape": (8, 64, 56, 56), "output_size": 32},
        {"fractional_max_pool2d_fwd": (set(), {128}), "fractional_max_pool2d_bwd": (set(), {128})},
    ),
    (
        "fractional3d_k2",
        {"op": "fractional_max_pool3d", "input_shape": (2, 16, 16, 16, 16), "output_size": 8},
        {"fractional_max_pool3d_fwd": (set(), {128}), "fractional_max_pool3d_bwd": (set(), {128})},
    ),
]


reports = aot_checks.reports_fixture(CALLS, ("fwd", "bwd"))


@aot_checks.each_case(CALLS)
def test_no_spills_and_128_bit_accesses(reports, case):
    aot_checks.assert_case(reports, case)
