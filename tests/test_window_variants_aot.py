"""The window-pool variants added for lp pooling and padding="same", compiled ahead of time for
sm_80 and sm_90a (no GPU needed): no register spills, and 128-bit global accesses along the
contiguous axis where it allows them (channels in channels_last; grad_in's rows in NCHW)."""

from __future__ import annotations

import aot_checks

NCHW = (8, 64, 56, 56)  # fp16 rows of 56: 16-byte multiples only through the alignment trick
NHWC = (8, 64, 56, 56)  # C = 64 contiguous

CALLS = [
    # (name, plan_pool_op arguments, kernel -> (load widths, store widths) that must appear)
    (
        "lp2_channels_last_fwd_sums",  # the forward that keeps the window sums for autograd
        {
            "op": "lp_pool2d",
            "input_shape": NHWC,
            "layout": "channels_last",
            "norm_type": 2.0,
            "kernel_size": 3,
            "stride": 2,
            "with_indices": True,
        },
        {"lp_pool2d_fwd_channels_sums": ({128}, {128})},
    ),
    (
        "lp2.5_channels_last_bwd",  # non-integer powers: exp2 / log2
        {
            "op": "lp_pool2d",
            "input_shape": NHWC,
            "layout": "channels_last",
            "norm_type": 2.5,
            "kernel_size": 3,
            "stride": 2,
            "direction": "bwd",
            "with_indices": True,
        },
        {"lp_pool2d_bwd_channels": ({128}, {128})},
    ),
    (
        "lp2_nchw_fwd_and_bwd",
        {
            "op": "lp_pool2d",
            "input_shape": NCHW,
            "norm_type": 2.0,
            "kernel_size": 2,
            "direction": "bwd",
        },
        {"lp_pool2d_fwd_rows_sums": ({128}, set()), "lp_pool2d_bwd_rows": (set(), {128})},
    ),
    (
        "lp_inf_channels_last_bwd",  # max of |x| with argmax, gradient times sign(x)
        {
            "op": "lp_pool2d",
            "input_shape": NHWC,
            "layout": "channels_last",
            "norm_type": float("inf"),
            "kernel_size": 3,
            "stride": 2,
            "direction": "bwd",
        },
        {"lp_pool2d_fwd_channels_idx": ({128}, {128}), "lp_pool2d_bwd_channels": ({128}, {128})},
    ),
    (
        "max_same_channels_last_fwd",  # asymmetric padding: window offsets, masked
        {
            "op": "max_pool2d",
            "input_shape": NHWC,
            "layout": "channels_last",
            "kernel_size": 3,
            "stride": 2,
            "padding": "same",
        },
        {"max_pool2d_fwd_channels": ({128}, {128})},
    ),
    (
        "avg_same_even_kernel_nchw_bwd",  # divisor from the padding before and after
        {
            "op": "avg_pool2d",
            "input_shape": NCHW,
            "kernel_size": 2,
            "stride": 1,
            "padding": "same",
            "direction": "bwd",
        },
        {"avg_pool2d_bwd_rows": (set(), {128})},
    ),
]


reports = aot_checks.reports_fixture(CALLS)


@aot_checks.each_case(CALLS)
def test_no_spills_and_128_bit_accesses(reports, case):
    aot_checks.assert_case(reports, case)
